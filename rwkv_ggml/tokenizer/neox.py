"""The GPT-NeoX-20B byte-level BPE tokenizer (RWKV-4 Pile and Raven), through ``tokenizers``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError, ModelIOError
from .base import NEOX_VOCAB_FILE, IdsLike, Tokenizer, _as_bytes, _as_text, _join_table


def _gpt2_byte_alphabet() -> dict[str, int]:
    """GPT-2 byte-level alphabet, char -> byte.

    Byte-level BPE stores every byte as a printable character: the printable Latin-1 bytes
    ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves and the other 68 bytes are mapped, in
    increasing order, to U+0100, U+0101, ... .
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    char_of = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in char_of:
            char_of[b] = chr(0x100 + extra)
            extra += 1
    return {c: b for b, c in char_of.items()}


# Where a text may be cut without changing its 20B tokens (see NeoXTokenizer.encode).
_NEOX_SAFE_CUT = re.compile(r"(?=\n[^\s<])")


class NeoXTokenizer(Tokenizer):
    """GPT-NeoX-20B byte-level BPE (RWKV-4 Pile and Raven), through the ``tokenizers`` library.

    Notes that follow from the vocabulary file (tokenizers.md §1):

    * input text is NFC-normalised, so ``decode(encode(s)) == unicodedata.normalize("NFC", s)``;
    * the literal text ``<|endoftext|>`` in the input becomes token 0;
    * the special tokens 0 (``<|endoftext|>``) and 1 (``<|padding|>``) decode to nothing, as the
      library's default ``decode`` does.

    Decoding uses our own id -> bytes table built from the same file, so that ``decode_bytes``
    and the streaming decoder see the real bytes (the library only returns text and would put
    U+FFFD into a token that ends mid-character).
    """

    name = "20b"
    eos_token_id = 0
    #: Texts longer than twice this many characters are encoded in chunks of about this size.
    CHUNK_CHARS = 1 << 14

    def __init__(self, path: str | Path | None = None) -> None:
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError as exc:  # pragma: no cover - tokenizers is a declared dependency
            raise ImportError(
                "the GPT-NeoX-20B tokenizer needs the 'tokenizers' package: pip install tokenizers"
            ) from exc
        self.path = Path(path) if path is not None else NEOX_VOCAB_FILE
        try:
            raw = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelIOError(f"cannot read tokenizer file '{self.path}': {exc.strerror or exc}") from exc
        try:
            spec = json.loads(raw)
            self._hf = HFTokenizer.from_str(raw)
            self._table, self._special = self._build_table(spec)
        except ModelFormatError:
            raise
        except Exception as exc:  # json raises ValueError, the library a bare Exception
            raise ModelFormatError(f"'{self.path}' is not a usable tokenizers JSON file: {exc}") from exc
        self.n_vocab = len(self._table)
        # The byte-level token of each single byte, used to encode invalid UTF-8 (see
        # encode_bytes). The 13 bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..0xFF) have
        # no token in this vocabulary: None.
        vocab: dict[str, int] = spec["model"]["vocab"]
        self._byte_id: list[int | None] = [None] * 256
        for char, byte in _gpt2_byte_alphabet().items():
            self._byte_id[byte] = vocab.get(char)

    def _build_table(self, spec: dict[str, Any]) -> tuple[list[bytes], frozenset[int]]:
        alphabet = _gpt2_byte_alphabet()
        vocab: dict[str, int] = spec["model"]["vocab"]
        added = {int(t["id"]): t for t in spec.get("added_tokens", [])}
        n = max([*vocab.values(), *added.keys()]) + 1
        table: list[bytes | None] = [None] * n
        for token, i in vocab.items():
            try:
                table[i] = bytes(alphabet[c] for c in token)
            except KeyError as exc:
                raise ModelFormatError(
                    f"'{self.path}': vocabulary entry {token!r} (id {i}) is not byte-level encoded"
                ) from exc
        special = frozenset(i for i, t in added.items() if t.get("special"))
        for i, t in added.items():
            # Added tokens hold literal text (not byte-level characters); special ones decode to
            # nothing, like the library's decode(skip_special_tokens=True).
            table[i] = b"" if i in special else str(t["content"]).encode("utf-8")
        missing = [i for i, b in enumerate(table) if b is None]
        if missing:
            raise ModelFormatError(f"'{self.path}': ids {missing[:5]} have no vocabulary entry")
        return [b for b in table if b is not None], special

    def encode(self, text: str) -> list[int]:
        """Token ids of text. Long texts are cut at safe points and encoded in parallel.

        The library is ~2x faster on many short strings than on one long one, and
        ``encode_batch`` spreads them over the cores. A cut is made only right before a "\n"
        that is followed by a character that is neither whitespace nor "<": there the GPT-2
        pre-tokeniser always ends a piece, the "\n" (an NFC starter) cannot combine with what
        precedes it, and no added token ("<|endoftext|>", space runs) can straddle the cut. So
        the result is identical to encoding the whole text at once (tests/text/test_tokenizer.py
        checks this on a mixed corpus).
        """
        text = _as_text(text)
        if len(text) <= 2 * self.CHUNK_CHARS:
            return self._hf.encode(text, add_special_tokens=False).ids
        chunks: list[str] = []
        start = 0
        while True:
            cut = _NEOX_SAFE_CUT.search(text, start + self.CHUNK_CHARS)
            if cut is None:
                break
            chunks.append(text[start : cut.start()])
            start = cut.start()
        chunks.append(text[start:])
        encodings = self._hf.encode_batch(chunks, add_special_tokens=False)
        return [i for encoding in encodings for i in encoding.ids]

    def encode_bytes(self, data: bytes) -> list[int]:
        """Encode bytes. Valid UTF-8 goes through the BPE as text.

        Byte-level BPE can represent any byte, but the library only takes text, so invalid
        bytes are cut out: the valid runs between them are encoded as text and each invalid
        byte becomes its single-byte token. ``decode_bytes`` then gives the input back (up to
        NFC normalisation of the valid runs). The bytes 0xC0, 0xC1 and 0xF5..0xFF have no token
        in the 20B vocabulary (they never occur in UTF-8): they raise ValueError.
        """
        raw = _as_bytes(data)
        try:
            return self.encode(raw.decode("utf-8"))
        except UnicodeDecodeError:
            pass
        ids: list[int] = []
        pos = 0
        while pos < len(raw):
            try:
                ids += self.encode(raw[pos:].decode("utf-8"))
                break
            except UnicodeDecodeError as exc:
                if exc.start:
                    ids += self.encode(raw[pos : pos + exc.start].decode("utf-8"))
                bad_start = pos + exc.start
                bad_end = pos + exc.end
                for at in range(bad_start, bad_end):
                    token_id = self._byte_id[raw[at]]
                    if token_id is None:
                        raise ValueError(
                            f"byte 0x{raw[at]:02x} at position {at} cannot be encoded: the GPT-NeoX-20B "
                            "vocabulary has no token for bytes that never occur in UTF-8"
                        ) from None
                    ids.append(token_id)
                pos = bad_end
        return ids

    def decode_bytes(self, ids: IdsLike) -> bytes:
        return _join_table(self._table, ids, self.n_vocab)
