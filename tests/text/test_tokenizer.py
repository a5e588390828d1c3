"""Tokenizers: spec test vectors, round trips, streaming decode, bad ids, the C trie vs Python.

The World tokenizer's C trie (csrc/tokenizer/world_trie.c) is tested whether or not the
package's compiled core is built: if ``rwkv_ggml._core`` lacks it, the ``c_world`` fixture
compiles the same C file with cffi into a temporary folder (skipping only if no C compiler
works). The pure-Python trie is the reference both are compared against, and it is itself
checked against a brute-force "longest vocabulary entry that is a prefix" search.
"""

from __future__ import annotations

import ast
import hashlib
import random
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rwkv_ggml import tokenizer as tokmod
from rwkv_ggml.errors import ModelFormatError, ModelIOError
from rwkv_ggml.tokenizer import (
    ByteTokenizer,
    NeoXTokenizer,
    Tokenizer,
    WorldTokenizer,
    parse_world_literal,
    parse_world_vocab,
)
from rwkv_ggml.tokenizer import _trie as trie_mod

REPO_ROOT = Path(__file__).resolve().parents[2]

MIXED = "I'll 'd test блабла 以下は、]) -> <|endoftext|><|padding|> int"

WORLD_VECTORS = [
    (MIXED, [74, 5229, 274, 101, 32223, 5092, 27980, 2795, 27980, 33, 10399, 10258, 10139, 10079, 1682,
             3463, 295, 125, 25258, 7588, 2318, 125, 790, 125, 49520, 125, 63, 21888]),
    ("Hello world", [33155, 40213]),
    ("\n\n", [261]),
    ('"in', [35, 1950]),
]  # fmt: skip

NEOX_VECTORS = [
    ("Hello world", [12092, 1533]),
    ("\n\n", [535]),
    ("Hello world\n\nThis is a test.", [12092, 1533, 187, 187, 1552, 310, 247, 1071, 15]),
    (" leading space", [4283, 2317]),
    ("   indented", [50275, 527, 8006]),
    ("naïve café", [2072, 30180, 36241]),
    ("The quick brown fox", [510, 3158, 8516, 30013]),
    ('"in', [3, 249]),
    (MIXED, [42, 1833, 686, 69, 1071, 9514, 3415, 21029, 36593, 209, 16877, 20720, 6418, 4746, 3291, 5204,
             209, 0, 1, 540]),
]  # fmt: skip

ROUND_TRIP_TEXTS = [
    "",
    "plain ASCII text, with punctuation!?\n\ttabs and  double  spaces",
    "中文文本和日本語のテキスト、한국어 텍스트",
    "emoji 🙂🎉👍🏽 👨‍👩‍👧 🇯🇵 ❤️",
    "combining: e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0354\u035a",
    "mixed 以下は🙂 and e\u0301 " * 5,
    "\x00\x01\x7f control and \u2028 separators \ufeff",
    " " * 300 + "x" + "\n" * 7,
]


# ------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def world() -> WorldTokenizer:
    return Tokenizer.for_vocab_size(65536)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def py_world() -> WorldTokenizer:
    return WorldTokenizer(backend="python")


@pytest.fixture(scope="module")
def neox() -> NeoXTokenizer:
    return Tokenizer.for_vocab_size(50277)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def byte_tok() -> ByteTokenizer:
    return Tokenizer.for_vocab_size(256)  # type: ignore[return-value]


def _build_trie_module(tmp: Path) -> tuple[Any, Any]:
    """Compile csrc/tokenizer/world_trie.c alone with cffi, as the package build would."""
    cffi = pytest.importorskip("cffi")
    header = (REPO_ROOT / "csrc" / "include" / "rwkv_tokenizer.h").read_text()
    ffibuilder = cffi.FFI()
    ffibuilder.cdef("\n".join(line for line in header.splitlines() if not line.lstrip().startswith("#")))
    ffibuilder.set_source(
        "_rwkv_tok_test_core",
        '#include "rwkv_tokenizer.h"',
        sources=[str(REPO_ROOT / "csrc" / "tokenizer" / "world_trie.c")],
        include_dirs=[str(REPO_ROOT / "csrc" / "include")],
        extra_compile_args=["-O2", "-std=c11"],
    )
    try:
        so_path = ffibuilder.compile(tmpdir=str(tmp), verbose=False)
    except Exception as exc:  # no compiler, no Python headers, ...
        pytest.skip(f"cannot compile the C trie for testing: {exc}")
    import importlib.util

    spec = importlib.util.spec_from_file_location("_rwkv_tok_test_core", so_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ffi, module.lib


@pytest.fixture(scope="module")
def c_core(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    core = trie_mod.compiled_core()
    if core is not None:
        return core
    return _build_trie_module(tmp_path_factory.mktemp("trie"))


@pytest.fixture(scope="module")
def c_world(c_core: tuple[Any, Any]) -> WorldTokenizer:
    tok = WorldTokenizer(backend="python")
    # Swap in the C trie over the same table: exactly what backend="c" builds.
    tok._trie = trie_mod.CTrie(c_core[0], c_core[1], tok._table)
    tok.backend = "c"
    return tok


def _mixed_corpus(n_chars: int, seed: int) -> str:
    r = random.Random(seed)
    pieces = [
        "The quick brown fox jumps over the lazy dog. ", "def f(x):\n    return x ** 2\n",
        "以下は日本語です。", "中文句子，", "한국어 ", "🙂", "👨‍👩‍👧", "e\u0301", "\n\n", "\t", " " * 17,
        "<|endoftext|>", "'s", "123", "Привет, мир! ", "\u3000", "\r\n",
    ]  # fmt: skip
    out: list[str] = []
    size = 0
    while size < n_chars:
        piece = r.choice(pieces) if r.random() < 0.8 else chr(r.randrange(0x20, 0x2FFF))
        out.append(piece)
        size += len(piece)
    return "".join(out)


# ------------------------------------------------------------------------------------------
# Package data


@pytest.mark.parametrize(
    ("name", "sha256"),
    [
        ("20B_tokenizer.json", "56ac4821e129d2c520fdaba60abd920fa852ada51b45c0dd52bbb6bd8c985ade"),
        ("rwkv_vocab_v20230424.txt", "8324476023347dec2964625ccb2075c864d250a9c6d9a74f36daba628de8c008"),
    ],
)
def test_shipped_vocab_files_are_the_published_ones(name: str, sha256: str) -> None:
    data = (tokmod.DATA_DIR / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256


# ------------------------------------------------------------------------------------------
# World: parsing


def test_world_literal_parser_matches_python_literals_on_every_line() -> None:
    text = tokmod.WORLD_VOCAB_FILE.read_text(encoding="utf-8")
    table = parse_world_vocab()
    n_lines = 0
    for line in text.splitlines():
        first, last = line.index(" "), line.rindex(" ")
        value = ast.literal_eval(line[first + 1 : last])  # only here, as the independent oracle
        expected = value.encode("utf-8") if isinstance(value, str) else value
        assert table[int(line[:first])] == expected, line
        n_lines += 1
    assert n_lines == 65529
    assert table[0] == b"" and all(t == b"" for t in table[65530:])
    assert len(table) == 65536


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("'abc'", b"abc"),
        ('"it\'s"', b"it's"),
        ("'\\x80'", b"\xc2\x80"),  # str literal: U+0080, two UTF-8 bytes
        ("b'\\x80'", b"\x80"),  # bytes literal: the byte itself
        ("'\\u3000'", "\u3000".encode()),
        ("'\\U0001F642'", "🙂".encode()),
        ("'\\n\\t\\r\\\\\\''", b"\n\t\r\\'"),
        ("'\\0\\a\\b\\f\\v\\\"'", b'\x00\x07\x08\x0c\x0b"'),
        ("'a b'", b"a b"),
    ],
)
def test_world_literal_parser(literal: str, expected: bytes) -> None:
    assert parse_world_literal(literal) == expected


@pytest.mark.parametrize(
    "literal",
    ["abc", "'abc", "'abc\"", "'\\q'", "'\\x8'", "'\\xZZ'", "b'\\u1234'", "'\\'", "__import__('os')", "b'é'",
     "'\\ud800'"],
)  # fmt: skip
def test_world_literal_parser_rejects(literal: str) -> None:
    with pytest.raises(ValueError):
        parse_world_literal(literal)


def test_world_vocab_lf_and_crlf_copies_parse_the_same(tmp_path: Path) -> None:
    lf = tmp_path / "vocab_lf.txt"
    lf.write_bytes(tokmod.WORLD_VOCAB_FILE.read_bytes().replace(b"\r\n", b"\n"))
    assert hashlib.sha256(lf.read_bytes()).hexdigest() == (
        "e6dee3d4e31b4d5c40ac99508ac6c701ceef4bed681bf2167ce9a908552bca89"
    )  # the rwkv.cpp copy named in the spec
    assert parse_world_vocab(lf) == parse_world_vocab()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1 'a' 2\n", "line 1: literal has 1 bytes, the line says 2"),
        ("1 'a' 1\n1 'b' 1\n", "line 2: id 1 appears twice"),
        ("1 'a' 1\n2 'a' 1\n", "line 2: token 2 has the same bytes as token 1"),
        ("1 'a' 1\n2 '\\q' 1\n", "line 2: unsupported escape"),
        ("1 __import__('os') 1\n", "line 1: not a quoted literal"),
        ("70000 'a' 1\n", "line 1: id 70000 is outside"),
        ("x 'a' 1\n", "line 1:"),
        ("1 'a'\n", "line 1: expected"),
        ("1 '' 0\n", "line 1: token 1 is empty"),
    ],
)
def test_world_vocab_errors_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad_vocab.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ModelFormatError, match=message) as info:
        parse_world_vocab(path)
    assert str(path) in str(info.value)


def test_world_vocab_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError, match="nope.txt"):
        WorldTokenizer(tmp_path / "nope.txt")


# ------------------------------------------------------------------------------------------
# World: encoding


@pytest.mark.parametrize("backend", ["auto", "python", "c"])
@pytest.mark.parametrize(("text", "ids"), WORLD_VECTORS)
def test_world_vectors(request: pytest.FixtureRequest, backend: str, text: str, ids: list[int]) -> None:
    tok = request.getfixturevalue({"auto": "world", "python": "py_world", "c": "c_world"}[backend])
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text
    assert tok.encode_bytes(text.encode("utf-8")) == ids


@pytest.mark.parametrize("fixture", ["py_world", "c_world"])
def test_world_every_single_byte(request: pytest.FixtureRequest, fixture: str) -> None:
    tok = request.getfixturevalue(fixture)
    for b in range(256):
        assert tok.encode_bytes(bytes([b])) == [b + 1]
        assert tok.decode_bytes([b + 1]) == bytes([b])


def test_world_special_text_is_ordinary(world: WorldTokenizer) -> None:
    ids = world.encode("<|endoftext|>")
    assert 0 not in ids
    assert world.decode(ids) == "<|endoftext|>"
    assert world.eos_token_id == 0 and world.n_vocab == 65536 and world.name == "world"


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_world_round_trip(world: WorldTokenizer, text: str) -> None:
    ids = world.encode(text)
    assert world.decode(ids) == text
    assert all(isinstance(i, int) and 1 <= i < 65530 for i in ids)


def test_world_invalid_utf8_round_trip(world: WorldTokenizer) -> None:
    r = random.Random(3)
    for n in (1, 2, 3, 7, 100, 5000):
        data = bytes(r.randrange(256) for _ in range(n))
        ids = world.encode_bytes(data)
        assert world.decode_bytes(ids) == data
        assert world.decode(ids) == data.decode("utf-8", errors="replace")
    assert world.decode(world.encode_bytes(b"ok\xff\xe4\xb8")) == "ok\ufffd\ufffd"


def test_world_decode_special_and_unknown_ids(world: WorldTokenizer) -> None:
    hello = world.encode("Hello")
    assert world.decode([0, *hello, 0]) == "Hello"
    assert world.decode(list(range(65530, 65536))) == ""
    assert world.decode_bytes([0]) == b""
    assert world.token_bytes(11) == b"\n"


@pytest.mark.parametrize("bad", [-1, 65536, 10**9])
def test_world_bad_ids_raise(world: WorldTokenizer, bad: int) -> None:
    with pytest.raises(ValueError, match=f"token id {bad} .*position 1"):
        world.decode([33, bad])


def test_decode_id_types(world: WorldTokenizer) -> None:
    ids = world.encode("Hello world")
    assert world.decode(np.array(ids, dtype=np.int32)) == "Hello world"
    assert world.decode(tuple(ids)) == "Hello world"
    assert world.decode(ids[0]) == world.decode([ids[0]])
    assert world.decode(np.int64(ids[0])) == world.decode([ids[0]])
    with pytest.raises(TypeError, match="integers"):
        world.decode([33, 1.5])
    with pytest.raises(TypeError, match="integers"):
        world.decode(np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        world.decode("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        world.encode(b"abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        world.encode_bytes("abc")  # type: ignore[arg-type]


def _brute_force_greedy(data: bytes, vocab: dict[bytes, int]) -> list[int]:
    """Spec 2.4 stated without a trie: the longest vocabulary entry that prefixes the rest."""
    ids = []
    pos = 0
    while pos < len(data):
        for length in range(min(128, len(data) - pos), 0, -1):
            token = vocab.get(data[pos : pos + length])
            if token is not None:
                ids.append(token)
                pos += length
                break
        else:
            raise AssertionError("every byte is a token")
    return ids


def _vocab_concat(table: list[bytes], n: int, seed: int) -> bytes:
    """Random vocabulary entries glued together: overlaps make greedy choices interesting."""
    r = random.Random(seed)
    return b"".join(table[r.randrange(1, 65530)] for _ in range(n))


def test_python_trie_matches_brute_force(py_world: WorldTokenizer) -> None:
    vocab = {data: i for i, data in enumerate(py_world._table) if data}
    samples = [
        _vocab_concat(py_world._table, 300, 1),
        _mixed_corpus(3000, 2).encode("utf-8"),
        bytes(random.Random(4).randrange(256) for _ in range(2000)),
        b" " * 400 + b"\n" * 3 + b"=" * 70,
    ]
    for data in samples:
        assert py_world.encode_bytes(data) == _brute_force_greedy(data, vocab)


def test_c_trie_matches_python_trie(py_world: WorldTokenizer, c_world: WorldTokenizer) -> None:
    r = random.Random(5)
    samples = [
        _mixed_corpus(150_000, 6).encode("utf-8"),
        _vocab_concat(py_world._table, 20_000, 7),
        bytes(r.randrange(256) for _ in range(50_000)),
        "".join(chr(r.randrange(0x20, 0x30000)) for _ in range(20_000)).encode("utf-8", "surrogatepass"),
        b"".join(b" " * r.randrange(1, 300) + r.choice([b"\n", b"a", b"\t"]) for _ in range(500)),
        b"",
    ]
    for data in samples:
        assert c_world.encode_bytes(data) == py_world.encode_bytes(data)


def test_c_trie_chunked_output_equals_one_call(
    monkeypatch: pytest.MonkeyPatch, c_world: WorldTokenizer, py_world: WorldTokenizer
) -> None:
    data = _mixed_corpus(20_000, 8).encode("utf-8")
    expected = py_world.encode_bytes(data)
    for chunk in (1, 7, 1000):
        monkeypatch.setattr(trie_mod.CTrie, "CHUNK", chunk)
        assert c_world.encode_bytes(data) == expected


def test_c_trie_status_codes(c_core: tuple[Any, Any]) -> None:
    ffi, lib = c_core
    out = ffi.new("rwkv_tok_trie **")
    bad = ffi.new("size_t *")

    def new(tokens: list[bytes], ids: list[int]) -> int:
        blob = b"".join(tokens)
        offsets = np.cumsum([0, *map(len, tokens)]).astype(np.uint32)
        id_array = np.asarray(ids, dtype=np.int32)
        return int(
            lib.rwkv_tok_trie_new(
                ffi.from_buffer("uint8_t[]", blob), len(blob), ffi.from_buffer("uint32_t[]", offsets),
                ffi.from_buffer("int32_t[]", id_array), len(tokens), out, bad,
            )
        )  # fmt: skip

    assert new([b"a", b"ab", b"a"], [1, 2, 3]) == lib.RWKV_TOK_E_DUPLICATE and bad[0] == 2
    assert out[0] == ffi.NULL
    assert new([b"a", b"", b"b"], [1, 2, 3]) == lib.RWKV_TOK_E_ARG and bad[0] == 1
    assert new([b"a", b"b"], [1, -2]) == lib.RWKV_TOK_E_ARG and bad[0] == 1
    assert lib.rwkv_tok_trie_new(ffi.NULL, 0, ffi.NULL, ffi.NULL, 0, ffi.NULL, bad) == lib.RWKV_TOK_E_ARG

    assert new([b"a", b"abc", b"b", b"c"], [1, 2, 3, 4]) == lib.RWKV_TOK_OK
    trie = ffi.gc(out[0], lib.rwkv_tok_trie_free)
    n_nodes = ffi.new("size_t *")
    held = ffi.new("size_t *")
    assert lib.rwkv_tok_trie_stats(trie, n_nodes, held) == lib.RWKV_TOK_OK
    assert n_nodes[0] == 6  # root, a, ab, abc, b, c

    text = b"abcabx"
    buf = ffi.new("int32_t[]", 16)
    n_ids = ffi.new("size_t *")
    n_used = ffi.new("size_t *")
    status = lib.rwkv_tok_trie_encode(trie, text, len(text), buf, 16, n_ids, n_used)
    assert status == lib.RWKV_TOK_E_NOMATCH
    assert list(ffi.unpack(buf, n_ids[0])) == [2, 1, 3] and n_used[0] == 5  # "abc" "a" "b", then 'x'
    status = lib.rwkv_tok_trie_encode(trie, b"abcab", 5, buf, 2, n_ids, n_used)
    assert status == lib.RWKV_TOK_OK and n_ids[0] == 2 and n_used[0] == 4  # stopped by cap
    assert lib.rwkv_tok_trie_encode(ffi.NULL, b"a", 1, buf, 16, n_ids, n_used) == lib.RWKV_TOK_E_ARG
    lib.rwkv_tok_trie_free(ffi.NULL)  # a no-op


@pytest.mark.parametrize("backend", ["python", "c"])
def test_world_custom_vocab_without_every_byte(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "small_vocab.txt"
    path.write_text("1 'a' 1\n2 'ab' 2\n3 'b' 1\n", encoding="utf-8")
    tok = WorldTokenizer(path, n_vocab=4, backend="python")
    if backend == "c":
        ffi, lib = request.getfixturevalue("c_core")
        tok._trie = trie_mod.CTrie(ffi, lib, tok._table)
    assert tok.encode("abab") == [2, 2]
    with pytest.raises(ValueError, match="byte 0x63 at position 3"):
        tok.encode("abac")


# ------------------------------------------------------------------------------------------
# GPT-NeoX-20B


@pytest.mark.parametrize(("text", "ids"), NEOX_VECTORS)
def test_neox_vectors(neox: NeoXTokenizer, text: str, ids: list[int]) -> None:
    assert neox.encode(text) == ids
    # Special tokens decode to nothing, as the library's default decode does.
    assert neox.decode(ids) == text.replace("<|endoftext|>", "").replace("<|padding|>", "")
    assert neox.decode(ids) == neox._hf.decode(ids)


def test_neox_properties(neox: NeoXTokenizer) -> None:
    assert neox.n_vocab == 50277 and neox.eos_token_id == 0 and neox.name == "20b"
    assert neox.decode_bytes([0, 1]) == b""
    assert neox.decode_bytes([50254]) == b" " * 24 and neox.decode_bytes([50276]) == b"  "


def test_neox_decode_matches_library_on_random_ids(neox: NeoXTokenizer) -> None:
    r = random.Random(9)
    ids = [r.randrange(50277) for _ in range(20_000)]
    assert neox.decode(ids) == neox._hf.decode(ids)
    for _ in range(500):
        short = [r.randrange(50277) for _ in range(r.randrange(1, 5))]
        assert neox.decode(short) == neox._hf.decode(short)


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_neox_round_trip(neox: NeoXTokenizer, text: str) -> None:
    # The 20B tokenizer NFC-normalises its input (tokenizers.md §1.1), so the round trip gives NFC text.
    assert neox.decode(neox.encode(text)) == unicodedata.normalize("NFC", text)


def test_neox_invalid_utf8(neox: NeoXTokenizer) -> None:
    data = b"abc\x80\xe4\xb8 def\xe4\xb8\xad\xed\xa0\x80"
    ids = neox.encode_bytes(data)
    assert neox.decode_bytes(ids) == data
    assert neox.decode(ids) == data.decode("utf-8", errors="replace")
    for b in range(256):
        if b in (0xC0, 0xC1) or b >= 0xF5:
            with pytest.raises(ValueError, match=f"byte 0x{b:02x} at position 1"):
                neox.encode_bytes(bytes([0x41, b]))
        else:
            assert neox.decode_bytes(neox.encode_bytes(bytes([b]))) == bytes([b])


def test_neox_long_text_chunking_is_exact(neox: NeoXTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NeoXTokenizer, "CHUNK_CHARS", 64)
    r = random.Random(10)
    alphabet = ["\n", " ", "\t", "\r\n", "a", "é", "e\u0301", "\u0301", "\n\u0301", "  \n\n  ",
                "<|endoftext|>", "<|padding|>", "1", "'s", "\u3000", "\xa0", "<", "\x1c", "\x85", "\u2028",
                "ﬁ", "x\n", "\n'"]  # fmt: skip
    texts = [_mixed_corpus(30_000, 11)] + [
        "".join(r.choice(alphabet) for _ in range(400)) for _ in range(200)
    ]
    for text in texts:
        assert neox.encode(text) == neox._hf.encode(text).ids


@pytest.mark.parametrize("bad", [-1, 50277])
def test_neox_bad_ids_raise(neox: NeoXTokenizer, bad: int) -> None:
    with pytest.raises(ValueError, match=f"token id {bad} "):
        neox.decode([bad])


def test_neox_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="broken.json"):
        NeoXTokenizer(path)
    with pytest.raises(ModelIOError, match="missing.json"):
        NeoXTokenizer(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------
# Bytes


def test_byte_tokenizer(byte_tok: ByteTokenizer) -> None:
    assert byte_tok.n_vocab == 256 and byte_tok.eos_token_id is None and byte_tok.name == "bytes"
    every = bytes(range(256))
    assert byte_tok.encode_bytes(every) == list(range(256))
    assert byte_tok.decode_bytes(list(range(256))) == every
    for text in ROUND_TRIP_TEXTS:
        assert byte_tok.decode(byte_tok.encode(text)) == text
    assert byte_tok.encode("é") == [0xC3, 0xA9]
    assert byte_tok.decode([0xFF, 0x41]) == "\ufffdA"
    with pytest.raises(ValueError, match="token id 256 .*position 1"):
        byte_tok.decode([65, 256])
    with pytest.raises(ValueError, match="token id -1 "):
        byte_tok.decode([-1])
    with pytest.raises(TypeError, match="integers"):
        byte_tok.decode([65, "B"])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------
# Choosing a tokenizer


class _FakeModel:
    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab


def test_for_vocab_size_and_for_model() -> None:
    assert isinstance(Tokenizer.for_vocab_size(50277), NeoXTokenizer)
    assert isinstance(Tokenizer.for_vocab_size(65536), WorldTokenizer)
    assert isinstance(Tokenizer.for_vocab_size(256), ByteTokenizer)
    assert isinstance(Tokenizer.for_model(_FakeModel(65536)), WorldTokenizer)
    assert Tokenizer.for_model(_FakeModel(65536)) is Tokenizer.for_vocab_size(65536)  # shared
    # kind= overrides, also for a vocabulary size we do not know.
    assert isinstance(Tokenizer.for_model(_FakeModel(65536), kind="bytes"), ByteTokenizer)
    assert isinstance(Tokenizer.for_vocab_size(70000, kind="WORLD"), WorldTokenizer)
    assert isinstance(Tokenizer.for_vocab_size(50304, kind="20b"), NeoXTokenizer)


def test_for_vocab_size_errors() -> None:
    with pytest.raises(ValueError, match="1234 tokens.*kind="):
        Tokenizer.for_vocab_size(1234)
    with pytest.raises(ValueError, match="unknown tokenizer kind 'gpt2'"):
        Tokenizer.for_vocab_size(65536, kind="gpt2")
    with pytest.raises(ValueError, match="only 256 vocabulary rows"):
        Tokenizer.for_vocab_size(256, kind="world")
    with pytest.raises(ValueError, match="positive integer"):
        Tokenizer.for_vocab_size(0)
    with pytest.raises(TypeError, match="n_vocab attribute"):
        Tokenizer.for_model(object())
