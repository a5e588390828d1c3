"""The streaming decoder (rwkv_ggml/tokenizer/streaming.py): token ids in, never half a character out.

For every tokenizer, every way of cutting a token sequence into feeds gives the same text as one
``decode``, valid UTF-8 is never held back longer than needed, and invalid bytes come out as U+FFFD
exactly where ``bytes.decode(errors="replace")`` puts them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from rwkv_ggml.tokenizer import ByteTokenizer, NeoXTokenizer, Tokenizer, WorldTokenizer


@pytest.fixture(scope="module")
def world() -> WorldTokenizer:
    return Tokenizer.for_vocab_size(65536)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def neox() -> NeoXTokenizer:
    return Tokenizer.for_vocab_size(50277)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def byte_tok() -> ByteTokenizer:
    return Tokenizer.for_vocab_size(256)  # type: ignore[return-value]


STREAM_TEXT = "a以下は🙂é\u0301👨‍👩‍👧 ok"


def _splits(n: int) -> Iterator[list[int]]:
    """Every way to cut range(n) into 1-3 consecutive chunks (as cut positions)."""
    for i in range(n + 1):
        for j in range(i, n + 1):
            yield [i, j]


@pytest.mark.parametrize("fixture", ["byte_tok", "world", "neox"])
def test_incremental_decoder_every_split(request: pytest.FixtureRequest, fixture: str) -> None:
    tok = request.getfixturevalue(fixture)
    # Byte-level ids so that token boundaries fall inside characters for every tokenizer.
    if fixture == "byte_tok":
        ids = tok.encode(STREAM_TEXT)
    elif fixture == "world":
        ids = [b + 1 for b in STREAM_TEXT.encode("utf-8")]
    else:
        ids = [tok.encode_bytes(bytes([b]))[0] for b in STREAM_TEXT.encode("utf-8")]
    full = tok.decode(ids)
    assert full == STREAM_TEXT
    for i, j in _splits(len(ids)):
        decoder = tok.incremental_decoder()
        parts = [decoder.feed(ids[:i]), decoder.feed(ids[i:j]), decoder.feed(ids[j:]), decoder.flush()]
        assert "".join(parts) == full
        assert all("\ufffd" not in p for p in parts)
    decoder = tok.incremental_decoder()
    parts = [decoder.feed(i) for i in ids]
    assert "".join(parts) + decoder.flush() == full
    assert all("\ufffd" not in p for p in parts)


def test_incremental_decoder_world_real_tokens(world: WorldTokenizer) -> None:
    text = "以下は🙂 emoji 👍🏽 and 中文 " * 3
    ids = world.encode(text)
    decoder = world.incremental_decoder()
    assert "".join(decoder.feed(i) for i in ids) + decoder.flush() == text


def test_incremental_decoder_holds_and_replaces(byte_tok: ByteTokenizer) -> None:
    decoder = byte_tok.incremental_decoder()
    assert decoder.feed([0xE4, 0xB8]) == ""  # an unfinished 3-byte character is held
    assert decoder.pending == b"\xe4\xb8"
    assert decoder.feed(0xAD) == "中"
    assert decoder.pending == b""
    assert decoder.feed([0xFF]) == "\ufffd"  # can never become valid: out at once
    assert decoder.feed([0x80]) == "\ufffd"  # lone continuation byte
    assert decoder.feed([0xE4]) == ""
    assert decoder.feed([0x41]) == "\ufffdA"  # the held lead byte turned out to be invalid
    assert decoder.feed([0xED, 0xA0]) == "\ufffd\ufffd"  # a surrogate can never be valid
    assert decoder.feed([0xF0, 0x9F]) == ""
    assert decoder.flush() == "\ufffd"  # end of stream: the unfinished sequence, replaced
    assert decoder.feed([0x41]) == "A"  # usable again after flush
    decoder.feed([0xE4])
    decoder.reset()
    assert decoder.flush() == ""
    with pytest.raises(ValueError, match="token id 300"):
        decoder.feed([300])


@pytest.mark.parametrize("fixture", ["byte_tok", "world", "neox"])
def test_incremental_decoder_invalid_stream_matches_decode(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    tok = request.getfixturevalue(fixture)
    r = random.Random(12)
    pool = [0x41, 0x80, 0xBF, 0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xF0, 0x9F, 0x99, 0x82, 0xED, 0xA0, 0x20]
    for _ in range(200):
        data = bytes(r.choice(pool) for _ in range(r.randrange(1, 12)))
        ids = tok.encode_bytes(data)
        decoder = tok.incremental_decoder()
        assert "".join(decoder.feed(i) for i in ids) + decoder.flush() == tok.decode(ids)
