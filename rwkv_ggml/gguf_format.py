"""Reader of the GGUF container (formats.md §7): header, typed metadata, tensor infos, mapped data.

GGUF is llama.cpp's model file: a fixed header (magic ``GGUF``, version, tensor count, metadata
count), the metadata as typed key/value pairs, one info record per tensor (name, sizes, type, offset),
then, at the next multiple of the alignment, the tensor data. This module knows the container only;
:mod:`rwkv_ggml.gguf_model` maps the RWKV-6/RWKV-7 tensors onto our model description.

Everything a file claims is checked before it is believed: every count is bounded by the bytes left
in the file (an element takes at least one byte), every string by a length limit, every tensor's
data must lie inside the data section, start at an aligned offset and not overlap another tensor's,
so a hostile file costs memory and time in proportion to its size and fails with a
ModelFormatError naming the file and the problem. The parse reads a read-only memory map of the file.
"""

from __future__ import annotations

import itertools
import math
import mmap
import os
import pathlib
import stat
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ClosedError, ModelFormatError, ModelIOError
from .fileformat import map_read_only

__all__ = [
    "GGUF_MAGIC",
    "GgufFile",
    "GgufTensor",
    "is_gguf",
    "read_gguf",
    "type_name",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # version 1 had 32-bit counts and is long gone
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 16
MAX_N_TENSORS = 1 << 16  # RWKV files hold a few thousand tensors (fileformat.MAX_N_TENSORS)
MAX_N_METADATA = 1 << 16
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 1 << 24  # a chat template is a few KiB; a 16 MiB string is a damaged length
MAX_ARRAY_ITEMS = 1 << 24  # the largest vocabularies and merge lists are a few hundred thousand
MAX_DIMS = 4
MAX_N_ELEMENTS = 1 << 40  # as fileformat.MAX_N_ELEMENTS

# Metadata value types: id -> (name, struct code of a scalar, or "" for string/array).
_VALUE_TYPES: dict[int, tuple[str, str]] = {
    0: ("u8", "<B"),
    1: ("i8", "<b"),
    2: ("u16", "<H"),
    3: ("i16", "<h"),
    4: ("u32", "<I"),
    5: ("i32", "<i"),
    6: ("f32", "<f"),
    7: ("bool", "<B"),
    8: ("string", ""),
    9: ("array", ""),
    10: ("u64", "<Q"),
    11: ("i64", "<q"),
    12: ("f64", "<d"),
}
_STRING, _ARRAY, _BOOL = 8, 9, 7

# ggml tensor types: id -> (name, elements per block, bytes per block). The sizes are facts of the
# format; every type is listed so a file holding types we cannot compute with still parses (and the
# model loader can name the tensor and its type).
_TENSOR_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}


def type_name(type_id: int) -> str:
    """The ggml name of a tensor type id ("Q6_K"), or "type <id>" for an unknown one."""
    known = _TENSOR_TYPES.get(type_id)
    return known[0] if known else f"type {type_id}"


@dataclass(frozen=True)
class GgufTensor:
    """One tensor info record: name, ggml type id, sizes (fastest-varying first) and where its bytes are."""

    name: str
    type_id: int
    ne: tuple[int, ...]
    offset: int
    """Absolute byte offset of the data in the file."""
    nbytes: int

    @property
    def type_name(self) -> str:
        return type_name(self.type_id)

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)


@dataclass
class GgufFile:
    """A parsed, fully checked GGUF file; the tensor data is mapped read-only on first access."""

    path: pathlib.Path
    version: int
    alignment: int
    metadata: dict[str, Any]
    """Key -> value: int, float, bool, str, list[str] (string arrays), numpy arrays (numeric arrays) or
    lists of those (nested arrays)."""
    metadata_types: dict[str, str]
    """Key -> type as written ("u32", "string", "array[string]", ...)."""
    tensors: dict[str, GgufTensor]
    file_size: int
    data_start: int
    _mmap: np.memmap | None = field(default=None, init=False, repr=False, compare=False)
    _closed: bool = field(default=False, init=False, repr=False, compare=False)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the memory-mapped file."""
        t = self.tensors[name]
        return self.view(t.offset, t.nbytes)

    def view(self, offset: int, nbytes: int) -> np.ndarray:
        """``nbytes`` bytes of the file from ``offset`` (inside the file: callers take them from a
        checked tensor info) as a read-only uint8 view."""
        if self._closed:
            raise ClosedError(f"{self.path}: GGUF file was closed")
        if self._mmap is None:
            self._mmap = map_read_only(self.path, self.file_size)
        return self._mmap[offset : offset + nbytes]

    def close(self) -> None:
        self._mmap = None
        self._closed = True

    def __enter__(self) -> GgufFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with the GGUF magic (False if unreadable: the caller's reader says why)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


class _Cursor:
    """Bounds-checked little-endian reads from the mapped file; every failure names the file and what
    was being read."""

    def __init__(self, buf: mmap.mmap, path: pathlib.Path) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.path = path
        self.what = "header"

    def fail(self, msg: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: {self.what}: {msg}")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(
                f"file ends at byte {self.size}, but {what} at byte {self.pos} needs {n} bytes "
                "(truncated or damaged file?)"
            )

    def scalar(self, code: str, what: str) -> Any:
        n = struct.calcsize(code)
        self.need(n, what)
        (value,) = struct.unpack_from(code, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar("<I", what))

    def u64(self, what: str) -> int:
        return int(self.scalar("<Q", what))

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        length = self.u64(f"the length of {what}")
        if length > limit:
            raise self.fail(f"{what} claims {length} bytes, above the limit {limit} (damaged length?)")
        self.need(length, what)
        data = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8 (byte {exc.start}: {data[:40]!r})") from None

    def count(self, what: str, limit: int, min_item_bytes: int) -> int:
        """A u64 count, refused when above ``limit`` or when that many items cannot fit in the rest of
        the file: this bounds every list built from a count by the file's size."""
        n = self.u64(what)
        if n > limit:
            raise self.fail(f"{what} is {n}, above the limit {limit} (damaged count?)")
        if n * min_item_bytes > self.size - self.pos:
            raise self.fail(
                f"{what} is {n}, but only {self.size - self.pos} bytes remain for them (damaged count?)"
            )
        return n


def _value(cur: _Cursor, type_id: int, depth: int = 0) -> tuple[Any, str]:
    """One metadata value of ``type_id`` and its type's name."""
    known = _VALUE_TYPES.get(type_id)
    if known is None:
        raise cur.fail(f"unknown value type {type_id} (valid: 0..12)")
    name, code = known
    if type_id == _STRING:
        return cur.string("string value"), name
    if type_id != _ARRAY:
        value = cur.scalar(code, f"{name} value")
        return (bool(value) if type_id == _BOOL else value), name
    if depth >= 2:
        raise cur.fail("arrays nested deeper than 2 levels")
    item_type = cur.u32("array item type")
    item = _VALUE_TYPES.get(item_type)
    if item is None:
        raise cur.fail(f"array of unknown value type {item_type} (valid: 0..12)")
    item_name, item_code = item
    min_bytes = struct.calcsize(item_code) if item_code else 8  # a string or array starts with a u64
    n = cur.count("array length", MAX_ARRAY_ITEMS, min_bytes)
    if item_code:  # numbers: one copy out of the map
        dtype = np.dtype(item_code)
        values = np.frombuffer(cur.buf, dtype=dtype, count=n, offset=cur.pos).copy()
        cur.pos += n * dtype.itemsize
        return (values.astype(bool) if item_type == _BOOL else values), f"array[{item_name}]"
    if item_type == _STRING:
        return [cur.string(f"string #{i} of the array") for i in range(n)], "array[string]"
    return [_value(cur, _ARRAY, depth + 1)[0] for _ in range(n)], "array[array]"


def _tensor_info(
    cur: _Cursor, index: int, seen: dict[str, GgufTensor]
) -> tuple[str, int, tuple[int, ...], int]:
    cur.what = f"tensor info #{index}"
    name = cur.string("tensor name", MAX_KEY_BYTES)
    cur.what = f"tensor info #{index} {name[:80]!r}"
    if not name:
        raise cur.fail("empty tensor name")
    if name in seen:
        raise cur.fail("duplicate tensor name")
    n_dims = cur.u32("dimension count")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.fail(f"has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}")
    ne = tuple(cur.u64(f"size of dimension {d}") for d in range(n_dims))
    type_id = cur.u32("tensor type")
    rel = cur.u64("data offset")
    if type_id not in _TENSOR_TYPES:
        raise cur.fail(f"unknown tensor type id {type_id}")
    for d, n in enumerate(ne):
        if not 1 <= n <= MAX_N_ELEMENTS:
            raise cur.fail(f"ne[{d}] = {n}: every size must be 1..2**40 (ne = {ne})")
    count = math.prod(ne)
    if count > MAX_N_ELEMENTS:
        raise cur.fail(f"has {count} elements (ne = {ne}), more than the limit 2**40")
    _, block, _ = _TENSOR_TYPES[type_id]
    if ne[0] % block:
        raise cur.fail(
            f"is {type_name(type_id)} with ne[0] = {ne[0]}, not a multiple of its block size {block}"
        )
    return name, type_id, ne, rel


def read_gguf(path: str | os.PathLike[str]) -> GgufFile:
    """Parse and check a GGUF file's header, metadata and tensor infos; the data is mapped lazily.

    Raises ModelIOError if the file cannot be opened or read, ModelFormatError (naming the file, the
    part and the problem) for anything malformed.
    """
    path = pathlib.Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below; open errors get their own message)
    except OSError as exc:
        raise ModelIOError(f"cannot open model file '{path}': {exc.strerror or exc}") from exc
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ModelIOError(f"model file '{path}' is not a regular file")
        if st.st_size < 24:
            raise ModelFormatError(f"{path}: file is {st.st_size} bytes, shorter than a GGUF header (24)")
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ModelIOError(f"cannot memory-map '{path}': {exc}") from exc
    with buf:
        return _parse(_Cursor(buf, path))


def _parse(cur: _Cursor) -> GgufFile:
    path = cur.path
    magic = bytes(cur.buf[:4])
    if magic != GGUF_MAGIC:
        raise ModelFormatError(
            f"{path}: not a GGUF file (magic bytes {magic.hex(' ').upper()}, expected 47 47 55 46)"
        )
    cur.pos = 4
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise cur.fail(f"unsupported GGUF version {version} (supported: 2, 3)")
    n_tensors = cur.count("tensor count", MAX_N_TENSORS, 8 + 4 + 8 + 4 + 8)
    n_kv = cur.count("metadata count", MAX_N_METADATA, 8 + 4 + 1)
    metadata: dict[str, Any] = {}
    types: dict[str, str] = {}
    for i in range(n_kv):
        cur.what = f"metadata entry #{i}"
        key = cur.string("key", MAX_KEY_BYTES)
        cur.what = f"metadata {key[:80]!r}"
        if key in metadata:
            raise cur.fail("duplicate key")
        metadata[key], types[key] = _value(cur, cur.u32("value type"))
    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        cur.what = "metadata 'general.alignment'"
        alignment = metadata["general.alignment"]
        if (
            types["general.alignment"] != "u32"
            or not 1 <= alignment <= MAX_ALIGNMENT
            or alignment & (alignment - 1)
        ):
            raise cur.fail(
                f"must be a u32 power of two up to {MAX_ALIGNMENT}, "
                f"got {types['general.alignment']} {alignment!r}"
            )
    infos = []
    seen: dict[str, GgufTensor] = {}
    for i in range(n_tensors):
        info = _tensor_info(cur, i, seen)
        infos.append(info)
        seen[info[0]] = GgufTensor(info[0], info[1], info[2], 0, 0)
    data_start = -(-cur.pos // alignment) * alignment
    cur.what = "tensor data"
    tensors = _place(cur, infos, data_start, alignment)
    return GgufFile(path, version, alignment, metadata, types, tensors, cur.size, data_start)


def _place(
    cur: _Cursor, infos: list[tuple[str, int, tuple[int, ...], int]], data_start: int, alignment: int
) -> dict[str, GgufTensor]:
    """Turns relative offsets into absolute ones, checking alignment, bounds and overlaps."""
    tensors: dict[str, GgufTensor] = {}
    for name, type_id, ne, rel in infos:
        _, block, size = _TENSOR_TYPES[type_id]
        nbytes = math.prod(ne) // block * size
        where = f"tensor {name[:80]!r}"
        if rel % alignment:
            raise cur.fail(f"{where}: data offset {rel} is not a multiple of the alignment {alignment}")
        if rel > cur.size or data_start + rel + nbytes > cur.size:
            raise cur.fail(
                f"{where}: {nbytes} bytes of {type_name(type_id)} data at offset {rel} of the data section "
                f"(byte {data_start}) run past the end of the file ({cur.size} bytes; truncated?)"
            )
        tensors[name] = GgufTensor(name, type_id, ne, data_start + rel, nbytes)
    ordered = sorted(tensors.values(), key=lambda t: t.offset)
    for a, b in itertools.pairwise(ordered):
        if a.offset + a.nbytes > b.offset:
            raise cur.fail(
                f"tensors {a.name[:80]!r} (bytes {a.offset}..{a.offset + a.nbytes}) and {b.name[:80]!r} "
                f"(from byte {b.offset}) overlap"
            )
    return tensors
