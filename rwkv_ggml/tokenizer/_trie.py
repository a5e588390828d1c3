"""The two byte tries behind World encoding: the C one of the compiled core and a pure-Python one.

Both do the same greedy longest-match walk. The C trie (csrc/tokenizer/world_trie.c) is the fast
path; the Python trie is the fallback when the core is not built and the reference the tests
compare the C one against. This module and ``_lib`` are the only tokenizer code that touches the
compiled core: ``compiled_core()`` gets its (ffi, lib) from ``_lib``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelFormatError

_TOKEN_KEY = 256  # key of the token id in a Python trie node (byte keys are 0..255)


class PyTrie:
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
                child = node.get(data[j])
                if child is None:
                    break
                node = child
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


def compiled_core() -> tuple[Any, Any] | None:
    """The compiled core's (ffi, lib) if it is built and has the tokenizer trie, else None."""
    try:
        from .._lib import ffi, lib  # the one module that imports the compiled core
    except ImportError:
        return None
    if not hasattr(lib, "rwkv_tok_trie_new"):
        return None
    return ffi, lib


class CTrie:
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
