"""The tokenizer interface, the checks on token ids every tokenizer shares, and the byte tokenizer.

:class:`Tokenizer` is what generation and the CLI program against; ``Tokenizer.for_model`` picks the
concrete one from a model's vocabulary size. The id helpers here turn the many forms ids come in
(an int, a list, a numpy array) into a checked list once, with messages that name the bad id.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .streaming import IncrementalDecoder

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
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
                raise ValueError(f"token id {i} (at position {pos}) is outside the vocabulary [0, {n_vocab})")


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
        table = getattr(model, "vocab_table", None)  # a GGUF model's own World vocabulary
        if kind is None and table is not None:
            from .world import table_tokenizer

            return table_tokenizer(model, table)
        if n_vocab is None:
            raise TypeError(
                f"for_model() needs an object with an n_vocab attribute, got {type(model).__name__}"
            )
        return Tokenizer.for_vocab_size(n_vocab, kind)


def _normalise_kind(kind: str) -> str:
    if not isinstance(kind, str) or kind.lower() not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(map(repr, KINDS))}")
    return kind.lower()


@functools.cache
def _shared_tokenizer(kind: str) -> Tokenizer:
    """One instance per kind: loading the World vocabulary takes ~0.2 s, do it once."""
    # imported here: the concrete tokenizers build on this module
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "20b":
        from .neox import NeoXTokenizer

        return NeoXTokenizer()
    from .world import WorldTokenizer

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
