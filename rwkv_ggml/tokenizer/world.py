"""The RWKV World tokenizer: its vocabulary file, parsed without ``eval``, and greedy longest match."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFormatError, ModelIOError
from ._trie import CTrie, PyTrie, compiled_core
from .base import WORLD_VOCAB_FILE, IdsLike, Tokenizer, _as_bytes, _join_table

_SIMPLE_ESCAPES = {
    "n": 0x0A, "t": 0x09, "r": 0x0D, "\\": 0x5C, "'": 0x27, '"': 0x22,
    "0": 0x00, "a": 0x07, "b": 0x08, "f": 0x0C, "v": 0x0B,
}  # fmt: skip


def parse_world_literal(lit: str) -> bytes:
    """Bytes of one Python string/bytes literal from the World vocabulary, without ``eval``.

    Implements tokenizers.md §2.3: ``'...'``/``"..."`` are text (UTF-8 encoded, ``\\xNN`` means
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

    Lines are ``<id> <literal> <byte length>`` (tokenizers.md §2.2); id 0 and ids missing from the
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


class WorldTokenizer(Tokenizer):
    """The RWKV World tokenizer: greedy longest match over bytes (tokenizers.md §2).

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
        self._build_trie(backend)

    @classmethod
    def from_table(cls, table: list[bytes], source: str | Path, backend: str = "auto") -> WorldTokenizer:
        """A World tokenizer over a table id -> bytes read elsewhere (a GGUF file's token list)."""
        tok = cls.__new__(cls)
        tok.path, tok.n_vocab, tok._table = Path(source), len(table), list(table)
        tok._build_trie(backend)
        return tok

    def _build_trie(self, backend: str) -> None:
        self._trie: CTrie | PyTrie
        core = compiled_core() if backend != "python" else None
        if core is not None:
            self._trie = CTrie(core[0], core[1], self._table)
            self.backend = "c"
        elif backend == "c":
            raise ImportError("the compiled core (rwkv_ggml._core) with the tokenizer trie is not available")
        else:
            self._trie = PyTrie(self._table)
            self.backend = "python"

    def encode_bytes(self, data: bytes) -> list[int]:
        return self._trie.encode(_as_bytes(data))

    def decode_bytes(self, ids: IdsLike) -> bytes:
        return _join_table(self._table, ids, self.n_vocab)

    def __repr__(self) -> str:
        return f"WorldTokenizer(n_vocab={self.n_vocab}, backend={self.backend!r})"


def table_tokenizer(model: object, table: list[bytes]) -> WorldTokenizer:
    """The World tokenizer over a model's own vocabulary table, built once per model."""
    cache = vars(model)
    tok = cache.get("_vocab_tokenizer")
    if not isinstance(tok, WorldTokenizer):
        tok = cache["_vocab_tokenizer"] = WorldTokenizer.from_table(table, getattr(model, "path", "model"))
    return tok
