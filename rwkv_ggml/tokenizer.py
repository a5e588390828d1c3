"""Tokenizers for RWKV models: GPT-NeoX-20B BPE, RWKV World, and raw bytes.

Which one a model needs follows from its vocabulary size (shared/spec/tokenizers.md):

    50277 -> "20b"   GPT-NeoX-20B byte-level BPE (RWKV-4 Pile / Raven)
    65536 -> "world" RWKV World greedy longest match (RWKV-4 World, RWKV-5/6/7)
      256 -> "bytes" token id = byte value (rwkv.cpp's tiny test models, our default model)

``Tokenizer.for_model(model)`` picks it; ``kind=`` overrides. All three share one small
interface (:class:`Tokenizer`): text and bytes in both directions, plus an
:class:`IncrementalDecoder` for streaming generation, because a single token may end in the
middle of a multi-byte UTF-8 character and a streaming front end must not print half of it.

Both vocabulary files ship in ``rwkv_ggml/data`` (origin and licences in data/README.md).
The World vocabulary is parsed without ``eval`` (spec section 2.3). World encoding runs in the
C trie of the compiled core (csrc/tokenizer/world_trie.c) when it is built, and otherwise in a
pure-Python trie that implements the same greedy walk; the Python one is also the reference
the tests compare the C one against.
"""

from __future__ import annotations

import functools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ModelFormatError, ModelIOError

DATA_DIR = Path(__file__).resolve().parent / "data"
NEOX_VOCAB_FILE = DATA_DIR / "20B_tokenizer.json"
WORLD_VOCAB_FILE = DATA_DIR / "rwkv_vocab_v20230424.txt"

#: The model vocabulary sizes we know, and the tokenizer kind each one means.
KNOWN_VOCAB_SIZES: dict[int, str] = {50277: "20b", 65536: "world", 256: "bytes"}
KINDS = ("20b", "world", "bytes")

IdsLike = int | Iterable[int] | np.ndarray


class _HasVocab(Protocol):
    n_vocab: int


# --------------------------------------------------------------------------------------------
# Shared helpers


def _as_id_list(ids: IdsLike) -> list[int]:
    """Turn an id, a sequence of ids or an integer numpy array into a list of ids.

    Accepting numpy lets generation code pass ``logits.argmax()`` results straight through.
    Element types are checked lazily by the table lookups (see _bad_id_type) so that the
    common case, a list of ints, costs nothing here.
    """
    if isinstance(ids, list):
        return ids
    if isinstance(ids, np.ndarray):
        if ids.ndim > 1:
            raise ValueError(f"token ids must be a 0-d or 1-d array, got shape {ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"token ids must be integers, got an array of dtype {ids.dtype}")
        return ids.reshape(-1).tolist()
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    if isinstance(ids, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"token ids must be integers, got {type(ids).__name__}")
    return list(ids)


def _bad_id_type(ids: list[Any]) -> TypeError:
    """The TypeError to raise when a lookup failed on a non-integer id."""
    for pos, i in enumerate(ids):
        if not isinstance(i, (int, np.integer)):
            return TypeError(f"token ids must be integers, got {i!r} ({type(i).__name__}) at position {pos}")
    return TypeError("token ids must be integers")


def _check_range(ids: list[int], n_vocab: int) -> None:
    """Raise ValueError naming the first id outside [0, n_vocab) (TypeError for a non-number)."""
    try:
        in_range = not ids or (min(ids) >= 0 and max(ids) < n_vocab)
    except TypeError:
        raise _bad_id_type(ids) from None
    if not in_range:
        for pos, i in enumerate(ids):
            if not 0 <= i < n_vocab:
                raise ValueError(
                    f"token id {i} (at position {pos}) is outside the vocabulary [0, {n_vocab})"
                )


def _join_table(table: list[bytes], ids: IdsLike, n_vocab: int) -> bytes:
    """Concatenated table entries of ids, after checking every id is an integer in range."""
    id_list = _as_id_list(ids)
    _check_range(id_list, n_vocab)
    try:
        return b"".join([table[i] for i in id_list])
    except TypeError:
        raise _bad_id_type(id_list) from None


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    if isinstance(data, str):
        raise TypeError("encode_bytes() takes bytes; use encode() for str")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"encode_bytes() takes bytes, got {type(data).__name__}")
    return bytes(data)


def _as_text(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"encode() takes str, got {type(text).__name__}; use encode_bytes() for bytes")
    return text


# --------------------------------------------------------------------------------------------
# Streaming


# Allowed range of the second byte of a UTF-8 sequence, by lead byte (Unicode Table 3-7). The
# narrow ranges after E0/ED/F0/F4 exclude overlong forms, surrogates and code points > U+10FFFF.
def _second_byte_range(lead: int) -> tuple[int, int]:
    if lead == 0xE0:
        return 0xA0, 0xBF
    if lead == 0xED:
        return 0x80, 0x9F
    if lead == 0xF0:
        return 0x90, 0xBF
    if lead == 0xF4:
        return 0x80, 0x8F
    return 0x80, 0xBF


def _sequence_length(lead: int) -> int:
    """Length of the well-formed sequence a lead byte starts, 0 if it cannot start one."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _incomplete_tail(buf: bytes) -> int:
    """How many trailing bytes of buf are the start of a well-formed but unfinished character.

    Only those can still become valid, so only those are worth holding back.
    """
    n = len(buf)
    for k in range(1, min(3, n) + 1):
        lead = buf[n - k]
        if 0x80 <= lead <= 0xBF:
            continue  # a continuation byte: the lead is further back
        need = _sequence_length(lead)
        if need <= k:
            return 0  # ASCII, an invalid lead, or a sequence that is already complete
        if k >= 2:
            lo, hi = _second_byte_range(lead)
            if not lo <= buf[n - k + 1] <= hi:
                return 0
        return k
    return 0


class IncrementalDecoder:
    """Turns a stream of token ids into text without ever emitting a broken character.

    A token boundary may fall inside a multi-byte UTF-8 character (World and byte-level
    tokenizers split on bytes). ``feed`` returns only complete characters and holds back a
    trailing sequence only while it can still become a valid character (at most 3 bytes).
    Bytes that can never become valid (0xFF, a lone continuation byte, a lead byte followed by
    a byte it does not allow, the start of a surrogate) come out at once as U+FFFD instead of
    being held. ``flush`` ends the stream: what is still held comes out with U+FFFD.

    The concatenation of all ``feed`` results plus ``flush`` equals
    ``tokenizer.decode(all_ids)``: a held tail always starts with a lead byte, so no sequence
    can run from the emitted part into it, and replacement follows the same "maximal subpart"
    rule as ``bytes.decode(errors='replace')``. (Python's own incremental UTF-8 decoder is
    not used because it keeps some never-valid prefixes such as ED A0 until more bytes come.)
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._held = b""

    def feed(self, ids: IdsLike) -> str:
        """Decode more ids; return the text that is now complete."""
        return self.feed_bytes(self.tokenizer.decode_bytes(ids))

    def feed_bytes(self, data: bytes) -> str:
        """Like feed, for raw bytes."""
        buf = self._held + bytes(data)
        keep = _incomplete_tail(buf)
        self._held = buf[len(buf) - keep :] if keep else b""
        return buf[: len(buf) - keep].decode("utf-8", errors="replace")

    def flush(self) -> str:
        """End of stream: return whatever is held back, with U+FFFD for an unfinished sequence."""
        text = self._held.decode("utf-8", errors="replace")
        self._held = b""
        return text

    def reset(self) -> None:
        """Drop held-back bytes without emitting them."""
        self._held = b""

    @property
    def pending(self) -> bytes:
        """The bytes currently held back (an unfinished UTF-8 sequence, at most 3 bytes)."""
        return self._held


# --------------------------------------------------------------------------------------------
# The interface


class Tokenizer(ABC):
    """Common interface of all tokenizers.

    ``encode``/``decode`` work on text; ``encode_bytes``/``decode_bytes`` on raw bytes, which
    is what a model really sees (and lets invalid UTF-8 round-trip). ``decode`` replaces
    invalid UTF-8 with U+FFFD rather than failing, because a sampled token sequence is not
    guaranteed to be valid text.
    """

    #: Short name: "20b", "world" or "bytes".
    name: str
    #: Number of ids the tokenizer may produce or accept: ids are in [0, n_vocab).
    n_vocab: int
    #: The end-of-text id the models were trained with (0 for 20B and World), or None.
    eos_token_id: int | None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (its UTF-8 bytes for the byte-based tokenizers)."""
        return self.encode_bytes(_as_text(text).encode("utf-8"))

    @abstractmethod
    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of raw bytes (need not be valid UTF-8)."""

    @abstractmethod
    def decode_bytes(self, ids: IdsLike) -> bytes:
        """Concatenated bytes of the ids. Raises ValueError for an id outside [0, n_vocab)."""

    def decode(self, ids: IdsLike) -> str:
        """Text of the ids; invalid UTF-8 becomes U+FFFD (errors='replace')."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """Bytes of a single token (empty for special tokens)."""
        return self.decode_bytes([token_id])

    def incremental_decoder(self) -> IncrementalDecoder:
        """A fresh streaming decoder for this tokenizer (see :class:`IncrementalDecoder`)."""
        return IncrementalDecoder(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_vocab={self.n_vocab})"

    # Selection ------------------------------------------------------------------------------

    @staticmethod
    def for_vocab_size(n_vocab: int, kind: str | None = None) -> Tokenizer:
        """The tokenizer for a model with ``n_vocab`` output rows.

        ``kind`` ("20b", "world" or "bytes") overrides the guess; its ids must still fit the
        model's vocabulary. The result is cached and shared: tokenizers are immutable.
        """
        if isinstance(n_vocab, bool) or not isinstance(n_vocab, (int, np.integer)) or n_vocab <= 0:
            raise ValueError(f"n_vocab must be a positive integer, got {n_vocab!r}")
        n_vocab = int(n_vocab)
        if kind is None:
            guessed = KNOWN_VOCAB_SIZES.get(n_vocab)
            if guessed is None:
                known = ", ".join(f"{n} -> {k!r}" for n, k in KNOWN_VOCAB_SIZES.items())
                raise ValueError(
                    f"no tokenizer is known for a vocabulary of {n_vocab} tokens (known: {known}); "
                    f"pass kind='20b', 'world' or 'bytes' to choose one"
                )
            kind = guessed
        tok = _shared_tokenizer(_normalise_kind(kind))
        if tok.n_vocab > n_vocab:
            raise ValueError(
                f"tokenizer {tok.name!r} produces ids up to {tok.n_vocab - 1}, but the model has only "
                f"{n_vocab} vocabulary rows"
            )
        return tok

    @staticmethod
    def for_model(model: _HasVocab | Any, kind: str | None = None) -> Tokenizer:
        """The tokenizer for ``model`` (anything with an ``n_vocab`` attribute)."""
        n_vocab = getattr(model, "n_vocab", None)
        if n_vocab is None:
            raise TypeError(f"for_model() needs an object with an n_vocab attribute, got {type(model).__name__}")
        return Tokenizer.for_vocab_size(n_vocab, kind)


def _normalise_kind(kind: str) -> str:
    if not isinstance(kind, str) or kind.lower() not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(map(repr, KINDS))}")
    return kind.lower()


@functools.lru_cache(maxsize=None)
def _shared_tokenizer(kind: str) -> Tokenizer:
    """One instance per kind: loading the World vocabulary takes ~0.2 s, do it once."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "20b":
        return NeoXTokenizer()
    return WorldTokenizer()


# --------------------------------------------------------------------------------------------
# Bytes


class ByteTokenizer(Tokenizer):
    """Token id = byte value, for byte-level models (n_vocab 256). No end-of-text token."""

    name = "bytes"
    n_vocab = 256
    eos_token_id = None

    def encode_bytes(self, data: bytes) -> list[int]:
        return list(_as_bytes(data))

    def decode_bytes(self, ids: IdsLike) -> bytes:
        id_list = _as_id_list(ids)
        try:
            return bytes(id_list)
        except (ValueError, TypeError):
            _check_range(id_list, 256)
            raise _bad_id_type(id_list) from None


# --------------------------------------------------------------------------------------------
# GPT-NeoX-20B


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

    Notes that follow from the vocabulary file (spec section 1):

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
        the result is identical to encoding the whole text at once (tests/test_tokenizer.py
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
                        )
                    ids.append(token_id)
                pos = bad_end
        return ids

    def decode_bytes(self, ids: IdsLike) -> bytes:
        return _join_table(self._table, ids, self.n_vocab)


# --------------------------------------------------------------------------------------------
# RWKV World


_SIMPLE_ESCAPES = {
    "n": 0x0A, "t": 0x09, "r": 0x0D, "\\": 0x5C, "'": 0x27, '"': 0x22,
    "0": 0x00, "a": 0x07, "b": 0x08, "f": 0x0C, "v": 0x0B,
}  # fmt: skip


def parse_world_literal(lit: str) -> bytes:
    """Bytes of one Python string/bytes literal from the World vocabulary, without ``eval``.

    Implements spec section 2.3: ``'...'``/``"..."`` are text (UTF-8 encoded, ``\\xNN`` means
    the code point U+00NN), ``b'...'`` are bytes (``\\xNN`` means the byte NN). Raises
    ValueError for anything else, so a corrupt file cannot smuggle code or wrong bytes in.
    """
    is_bytes = lit.startswith("b")
    body = lit[1:] if is_bytes else lit
    if len(body) < 2 or body[0] not in "'\"" or body[-1] != body[0]:
        raise ValueError(f"not a quoted literal: {lit!r}")
    body = body[1:-1]
    if "\\" not in body:
        # Fast path: ~99% of the lines have no escapes.
        if is_bytes and not body.isascii():
            raise ValueError(f"non-ASCII character in a bytes literal: {lit!r}")
        return body.encode("utf-8")
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            if is_bytes and not c.isascii():
                raise ValueError(f"non-ASCII character in a bytes literal: {lit!r}")
            out += c.encode("utf-8")
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError(f"literal ends with a lone backslash: {lit!r}")
        e = body[i + 1]
        if e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            if e != "x" and is_bytes:
                raise ValueError(f"\\{e} escape in a bytes literal: {lit!r}")
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"bad \\{e} escape in {lit!r}")
            value = int(digits, 16)
            if e == "x" and is_bytes:
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    raise ValueError(f"escape \\{e}{digits} is not a Unicode scalar value in {lit!r}")
                out += chr(value).encode("utf-8")
            i += 2 + width
        elif e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        else:
            raise ValueError(f"unsupported escape \\{e} in {lit!r}")
    return bytes(out)


def parse_world_vocab(path: str | Path | None = None, n_vocab: int = 65536) -> list[bytes]:
    """Parse a World vocabulary file into a table ``id -> bytes`` of length ``n_vocab``.

    Lines are ``<id> <literal> <byte length>`` (spec section 2.2); id 0 and ids missing from the
    file map to ``b""``. Raises ModelFormatError naming the file and line for a malformed line,
    a length mismatch, a repeated id or byte string, or an id outside [1, n_vocab).
    """
    path = Path(path) if path is not None else WORLD_VOCAB_FILE
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelIOError(f"cannot read World vocabulary '{path}': {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"World vocabulary '{path}' is not UTF-8 (byte {exc.start})") from exc
    table = [b""] * n_vocab
    seen: dict[bytes, int] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line:
            continue
        first = line.find(" ")
        last = line.rfind(" ")
        where = f"World vocabulary '{path}' line {lineno}"
        if first <= 0 or last <= first + 1:
            raise ModelFormatError(f"{where}: expected '<id> <literal> <length>', got {line[:80]!r}")
        try:
            token_id = int(line[:first])
            length = int(line[last + 1 :])
            data = parse_world_literal(line[first + 1 : last])
        except ValueError as exc:
            raise ModelFormatError(f"{where}: {exc}") from exc
        if len(data) != length:
            raise ModelFormatError(f"{where}: literal has {len(data)} bytes, the line says {length}")
        if not 1 <= token_id < n_vocab:
            raise ModelFormatError(f"{where}: id {token_id} is outside [1, {n_vocab})")
        if table[token_id]:
            raise ModelFormatError(f"{where}: id {token_id} appears twice")
        if not data:
            raise ModelFormatError(f"{where}: token {token_id} is empty")
        if data in seen:
            raise ModelFormatError(f"{where}: token {token_id} has the same bytes as token {seen[data]}")
        seen[data] = token_id
        table[token_id] = data
    return table


_TOKEN_KEY = 256  # key of the token id in a Python trie node (byte keys are 0..255)


class _PyTrie:
    """Pure-Python byte trie: nested dicts, node[byte] = child, node[256] = token id.

    About ten times slower than the C trie (~5 MB/s on mixed text) but obviously correct: the
    reference for the C trie and the fallback when the compiled core is not available.
    """

    def __init__(self, table: list[bytes]) -> None:
        self.root: dict[int, Any] = {}
        for token_id, data in enumerate(table):
            if not data:
                continue
            node = self.root
            for b in data:
                child = node.get(b)
                if child is None:
                    child = node[b] = {}
                node = child
            node[_TOKEN_KEY] = token_id

    def encode(self, data: bytes) -> list[int]:
        ids: list[int] = []
        append = ids.append
        root = self.root
        n = len(data)
        pos = 0
        while pos < n:
            node = root
            j = pos
            best_id = -1
            best_end = pos
            while j < n:
                node = node.get(data[j])
                if node is None:
                    break
                j += 1
                token_id = node.get(_TOKEN_KEY)
                if token_id is not None:
                    best_id = token_id
                    best_end = j
            if best_id < 0:
                raise ValueError(f"no World token matches byte 0x{data[pos]:02x} at position {pos}")
            append(best_id)
            pos = best_end
        return ids


def _core() -> tuple[Any, Any] | None:
    """The compiled core's (ffi, lib) if it is built and has the tokenizer trie, else None."""
    try:
        from ._lib import ffi, lib  # the one module that imports the compiled core
    except ImportError:
        return None
    if not hasattr(lib, "rwkv_tok_trie_new"):
        return None
    return ffi, lib


class _CTrie:
    """The C trie of csrc/tokenizer/world_trie.c, owned through ffi.gc."""

    # Ids are produced in chunks of at most this many, so encoding a huge text does not need a
    # 4-bytes-per-input-byte buffer all at once.
    CHUNK = 1 << 20

    def __init__(self, ffi: Any, lib: Any, table: list[bytes]) -> None:
        self._ffi = ffi
        self._lib = lib
        ids = [i for i, data in enumerate(table) if data]
        lengths = np.fromiter((len(table[i]) for i in ids), dtype=np.uint32, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.uint32)
        np.cumsum(lengths, out=offsets[1:])
        blob = b"".join(table[i] for i in ids)
        id_array = np.asarray(ids, dtype=np.int32)
        out = ffi.new("rwkv_tok_trie **")
        bad = ffi.new("size_t *")
        status = lib.rwkv_tok_trie_new(
            ffi.from_buffer("uint8_t[]", blob),
            len(blob),
            ffi.from_buffer("uint32_t[]", offsets),
            ffi.from_buffer("int32_t[]", id_array),
            len(ids),
            out,
            bad,
        )
        if status != lib.RWKV_TOK_OK:
            # parse_world_vocab already rejects all of these; reaching here is a bug.
            token = ids[bad[0]] if bad[0] < len(ids) else None
            raise ModelFormatError(f"the C trie rejected the vocabulary (status {status}, token id {token})")
        self._trie = ffi.gc(out[0], lib.rwkv_tok_trie_free)

    def encode(self, data: bytes) -> list[int]:
        ffi, lib = self._ffi, self._lib
        n = len(data)
        if n == 0:
            return []
        cap = min(n, self.CHUNK)
        buf = ffi.new("int32_t[]", cap)
        n_ids = ffi.new("size_t *")
        n_consumed = ffi.new("size_t *")
        src = ffi.from_buffer("uint8_t[]", data)
        ids: list[int] = []
        pos = 0
        while pos < n:
            status = lib.rwkv_tok_trie_encode(self._trie, src + pos, n - pos, buf, cap, n_ids, n_consumed)
            ids += ffi.unpack(buf, n_ids[0])
            if status == lib.RWKV_TOK_E_NOMATCH:
                at = pos + n_consumed[0]
                raise ValueError(f"no World token matches byte 0x{data[at]:02x} at position {at}")
            if status != lib.RWKV_TOK_OK:
                raise RuntimeError(f"rwkv_tok_trie_encode failed with status {status}")
            pos += n_consumed[0]
        return ids


class WorldTokenizer(Tokenizer):
    """The RWKV World tokenizer: greedy longest match over bytes (spec section 2).

    * no normalisation, no special-token parsing: ``<|endoftext|>`` is ordinary text;
    * every byte ``b`` is token ``b + 1``, so any byte string encodes and round-trips;
    * id 0 (end of text) and ids without a byte string (65530..65535) decode to nothing;
      ids outside [0, n_vocab) raise ValueError.

    ``backend``: "auto" (C trie if the core is built, else Python), "c" (fail if unavailable)
    or "python" (the reference implementation).
    """

    name = "world"
    eos_token_id = 0

    def __init__(self, path: str | Path | None = None, n_vocab: int = 65536, backend: str = "auto") -> None:
        if backend not in ("auto", "c", "python"):
            raise ValueError(f"backend must be 'auto', 'c' or 'python', got {backend!r}")
        self.path = Path(path) if path is not None else WORLD_VOCAB_FILE
        self.n_vocab = n_vocab
        self._table = parse_world_vocab(self.path, n_vocab)
        self._trie: _CTrie | _PyTrie
        core = _core() if backend != "python" else None
        if core is not None:
            self._trie = _CTrie(core[0], core[1], self._table)
            self.backend = "c"
        elif backend == "c":
            raise ImportError("the compiled core (rwkv_ggml._core) with the tokenizer trie is not available")
        else:
            self._trie = _PyTrie(self._table)
            self.backend = "python"

    def encode_bytes(self, data: bytes) -> list[int]:
        return self._trie.encode(_as_bytes(data))

    def decode_bytes(self, ids: IdsLike) -> bytes:
        return _join_table(self._table, ids, self.n_vocab)

    def __repr__(self) -> str:
        return f"WorldTokenizer(n_vocab={self.n_vocab}, backend={self.backend!r})"


__all__ = [
    "ByteTokenizer",
    "IncrementalDecoder",
    "KNOWN_VOCAB_SIZES",
    "NeoXTokenizer",
    "Tokenizer",
    "WorldTokenizer",
    "parse_world_literal",
    "parse_world_vocab",
]
