"""Reader and writer of the rwkv.cpp ``.bin`` model format (formats.md §1–§2 in docs/).

A file is a 24-byte header followed by tensor records until the end of the file. This module
knows the container only: it never asks which RWKV version a file holds or whether the
tensors a model needs are present (the model loader does that). What it guarantees is that a
:class:`ModelFile` returned by :func:`read_model_file` describes a file whose every record is
well formed and whose every byte of tensor data lies inside the file, so code downstream can
index into it without further bounds checks.

The parser is plain Python (``struct``) over buffered reads: a model has at most a few
thousand records, and parsing them costs milliseconds even for multi-GiB files because the
tensor data itself is skipped with ``seek`` and later exposed through a read-only memory map.
All offsets are Python ints, so files over 2 GiB need no special care.
"""

from __future__ import annotations

import enum
import math
import os
import pathlib
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ._atomic import atomic_output
from .errors import ClosedError, DTypeError, ModelFormatError, ModelIOError

__all__ = [
    "FILE_MAGIC",
    "HEADER_SIZE",
    "MAX_KEY_LENGTH",
    "MAX_N_ELEMENTS",
    "MAX_N_EMBED",
    "MAX_N_LAYER",
    "MAX_N_TENSORS",
    "MAX_N_VOCAB",
    "DType",
    "ModelFile",
    "TensorRecord",
    "read_model_file",
    "tensor_nbytes",
    "write_model_file",
]

FILE_MAGIC = 0x67676D66
"""Header magic; on disk the bytes ``66 6D 67 67`` ("fmgg")."""

HEADER_SIZE = 24
SUPPORTED_VERSIONS = (100, 101)
CURRENT_VERSION = 101

# Sanity limits. The u32 header fields of a damaged file easily hold billions that would drive absurd
# allocations; the limits sit far above any RWKV model (vocabularies ~65k, n_embed <= 7168, n_layer
# <= 61) and turn garbage into a clear error instead of a MemoryError.
MAX_N_VOCAB = 1 << 24
MAX_N_EMBED = 1 << 20
MAX_N_LAYER = 1 << 16
# rwkv.cpp reads names into a fixed buffer; real names are < 64 bytes.
MAX_KEY_LENGTH = 1024
# 2**40 elements is 4 TiB of f32: beyond it a record is certainly corrupt, and the bound
# keeps every size computation far away from 64-bit overflow in the C engine.
MAX_N_ELEMENTS = 1 << 40
# The largest RWKV models hold a few thousand tensors (61 layers of ~40). Records cost ~200 bytes of
# Python objects each, so without a bound a crafted 1 GB file of 1-element records would need ~8 GB.
MAX_N_TENSORS = 1 << 16

_HEADER = struct.Struct("<6I")
_RECORD_HEAD = struct.Struct("<3i")


class DType(enum.IntEnum):
    """Tensor data types; the values are rwkv.cpp's file type ids (formats.md §2)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 7
    Q5_1 = 8
    Q8_0 = 9
    Q4_K = 13  # the K-quants (formats.md §7.4): read (GGUF files), never written by rwkv_ggml
    Q5_K = 14
    Q6_K = 15

    @property
    def block_size(self) -> int:
        """Elements per block: 1 for F32/F16, 32 for the §5 block types, 256 for the K-quants."""
        return _SIZES[self][0]

    @property
    def type_size(self) -> int:
        """Bytes per block (formats.md §5.1, §7.4)."""
        return _SIZES[self][1]

    @property
    def is_quantized(self) -> bool:
        return self not in (DType.F32, DType.F16)

    @classmethod
    def from_name(cls, name: str) -> DType:
        """Parse a user-facing type name such as ``"Q5_1"``, ``"q5_1"``, ``"fp16"`` or ``"F32"``."""
        key = str(name).strip().upper().replace("-", "_")
        found = _NAME_ALIASES.get(key)
        if found is None:
            valid = ", ".join(member.name for member in cls)
            raise ValueError(f"unknown data type {name!r}; valid names are {valid} (also FP32, FP16)")
        return found


# (elements, bytes) per block
_SIZES = {DType.F32: (1, 4), DType.F16: (1, 2), DType.Q4_0: (32, 18), DType.Q4_1: (32, 20)}
_SIZES |= {DType.Q5_0: (32, 22), DType.Q5_1: (32, 24), DType.Q8_0: (32, 34), DType.Q4_K: (256, 144)}
_SIZES |= {DType.Q5_K: (256, 176), DType.Q6_K: (256, 210)}
_NAME_ALIASES: dict[str, DType] = {member.name: member for member in DType}
_NAME_ALIASES.update(
    {
        "FP32": DType.F32,
        "FLOAT32": DType.F32,
        "FLOAT": DType.F32,
        "FP16": DType.F16,
        "FLOAT16": DType.F16,
        "HALF": DType.F16,
    }
)

# Ids that appear in rwkv.cpp's enum but that we cannot read, with the reason we give.
_REJECTED_TYPES = {
    4: "Q4_1_O, a format removed from ggml",
    5: "Q4_2, a format removed from ggml",
    6: "Q4_3, a format removed from ggml",
    10: "Q8_1, which only ggml's activations use",
    11: "Q2_K, a K-quant that rwkv.cpp never writes and rwkv_ggml does not support",
    12: "Q3_K, a K-quant that rwkv.cpp never writes and rwkv_ggml does not support",
    16: "Q8_K, a K-quant that rwkv.cpp never writes and rwkv_ggml does not support",
}
_REQUANTIZE_HINT = "re-quantize it from an FP32/FP16 file with a current rwkv.cpp or rwkv_ggml quantize"


def _dtype_from_id(type_id: int) -> tuple[DType | None, str]:
    """Map a file type id to a DType, or return (None, why it is not acceptable)."""
    try:
        return DType(type_id), ""
    except ValueError:
        pass
    if type_id in _REJECTED_TYPES:
        why = f"type id {type_id} ({_REJECTED_TYPES[type_id]}) is not supported"
        if type_id in (4, 5, 6):
            why += f"; {_REQUANTIZE_HINT}"
        return None, why
    valid = ", ".join(f"{m.value} ({m.name})" for m in DType)
    return None, f"unknown type id {type_id} (valid ids: {valid})"


@dataclass(frozen=True)
class TensorRecord:
    """One tensor of a model file: its name, type, ggml sizes and where its bytes are."""

    name: str
    dtype: DType
    ne: tuple[int, ...]
    """Sizes in ggml order, fastest-varying first (the PyTorch shape reversed)."""
    offset: int
    """Byte offset of the tensor data in the file."""
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy/PyTorch order: ``reversed(ne)``."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)


def _shape_problem(dtype: DType, ne: Sequence[Any]) -> str | None:
    """Return why ``(dtype, ne)`` cannot be a tensor, or None if it can.

    Shared by the reader (which adds file/tensor context) and the writer.
    """
    if not 1 <= len(ne) <= 3:
        return f"has {len(ne)} dimensions; the format allows 1 to 3"
    for i, n in enumerate(ne):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            return f"ne[{i}] = {n!r} is not an integer"
        if n <= 0:
            return f"ne[{i}] = {int(n)} must be positive (ne = {tuple(int(v) for v in ne)})"
        if n > MAX_N_ELEMENTS:
            return f"ne[{i}] = {int(n)} is absurdly large"
    count = math.prod(int(n) for n in ne)
    if count > MAX_N_ELEMENTS:
        return f"has {count} elements (ne = {tuple(int(v) for v in ne)}), more than the limit 2**40"
    if int(ne[0]) % dtype.block_size != 0:
        return (
            f"is {dtype.name} with ne[0] = {int(ne[0])}, which is not a multiple of the "
            f"block size {dtype.block_size}"
        )
    return None


def tensor_nbytes(dtype: DType, ne: Sequence[int]) -> int:
    """Bytes of tensor data for ``dtype`` and ggml sizes ``ne`` (formats.md §1.2).

    Raises ModelFormatError if the sizes are not a valid tensor of that type.
    """
    dtype = DType(dtype)
    problem = _shape_problem(dtype, ne)
    if problem is not None:
        raise ModelFormatError(f"tensor {problem}")
    return math.prod(int(n) for n in ne) // dtype.block_size * dtype.type_size


def _header_problem(version: int, n_vocab: int, n_embed: int, n_layer: int, data_type: int) -> str | None:
    """Return what is wrong with header values (magic excluded), or None."""
    if version not in SUPPORTED_VERSIONS:
        return f"unsupported version {version} (supported: 100, 101)"
    for label, value, limit in (
        ("n_vocab", n_vocab, MAX_N_VOCAB),
        ("n_embed", n_embed, MAX_N_EMBED),
        ("n_layer", n_layer, MAX_N_LAYER),
    ):
        if value <= 0:
            return f"{label} is {value}; it must be positive"
        if value > limit:
            return f"{label} is {value}, above the sanity limit {limit} (corrupt header?)"
    dtype, why = _dtype_from_id(data_type)
    if dtype is None:
        return f"header data_type: {why}"
    if dtype.is_quantized and version != CURRENT_VERSION:
        return (
            f"version {version} file with quantized data_type {dtype.name}: its blocks use the old "
            f"pre-2023-05-27 ggml layout that cannot be loaded; {_REQUANTIZE_HINT}"
        )
    return None


def map_read_only(path: pathlib.Path, file_size: int) -> np.memmap:
    """The whole file memory-mapped read-only; refused if its size is no longer ``file_size``, the size its
    records were validated against (their offsets would mean nothing now)."""
    try:
        mm = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        raise ModelIOError(f"cannot memory-map '{path}': {exc}") from exc
    if mm.shape[0] != file_size:
        raise ModelFormatError(
            f"{path}: file changed since it was read ({file_size} bytes then, {mm.shape[0]} now)"
        )
    return mm


@dataclass
class ModelFile:
    """A parsed, fully validated model file; tensor data is mapped lazily on first access."""

    path: pathlib.Path
    version: int
    n_vocab: int
    n_embed: int
    n_layer: int
    data_type: int
    file_size: int
    tensors: dict[str, TensorRecord]
    """Name → record, in file order."""
    _mmap: np.memmap | None = field(default=None, init=False, repr=False, compare=False)
    _closed: bool = field(default=False, init=False, repr=False, compare=False)

    def _map(self) -> np.memmap:
        if self._closed:
            raise ClosedError(f"{self.path}: model file was closed")
        if self._mmap is None:
            self._mmap = map_read_only(self.path, self.file_size)
        return self._mmap

    def array(self, name: str) -> np.ndarray:
        """Read-only memory-mapped view of a tensor's data.

        F32 → float32 and F16 → float16 arrays in numpy shape (``reversed(ne)``); quantized
        tensors → uint8 array of shape ``(rows, row_bytes)`` with ``rows = prod(ne[1:])``.
        The view may be unaligned (offsets in this format are arbitrary); copy it if a
        consumer needs aligned memory.
        """
        record = self.tensors.get(name)
        if record is None:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        raw = self._map()[record.offset : record.offset + record.nbytes]
        if record.dtype == DType.F32:
            return raw.view("<f4").reshape(record.shape)
        if record.dtype == DType.F16:
            return raw.view("<f2").reshape(record.shape)
        rows = math.prod(record.ne[1:])
        return raw.reshape(rows, record.nbytes // rows)

    def close(self) -> None:
        """Drop the memory map. Arrays handed out earlier stay valid (they keep the map alive)."""
        self._mmap = None
        self._closed = True

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_exact(f: BinaryIO, n: int, path: pathlib.Path) -> bytes:
    try:
        data = f.read(n)
    except OSError as exc:
        raise ModelIOError(f"cannot read '{path}': {exc}") from exc
    if len(data) != n:
        # The size was checked against fstat before reading; a short read means the file shrank.
        raise ModelFormatError(f"{path}: file changed while being read (short read)")
    return data


def read_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Parse and validate a model file's header and every tensor record.

    Raises ModelIOError if the file cannot be opened or read, ModelFormatError (naming the
    file, the record and the problem) if anything in it is malformed.
    """
    path = pathlib.Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ModelIOError(f"cannot open model file '{path}': {exc.strerror or exc}") from exc
    if stat.S_ISDIR(st.st_mode) and (hint := _checkpoint_hint(path, None)):
        raise ModelFormatError(hint)
    if not stat.S_ISREG(st.st_mode):
        # Opening a FIFO would block and a directory has no bytes; say so instead.
        raise ModelIOError(f"model file '{path}' is not a regular file")
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below; open errors get their own message)
    except OSError as exc:
        raise ModelIOError(f"cannot open model file '{path}': {exc.strerror or exc}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < HEADER_SIZE:
            raise ModelFormatError(
                f"{path}: file is {size} bytes, shorter than the {HEADER_SIZE}-byte header"
            )
        header = _HEADER.unpack(_read_exact(f, HEADER_SIZE, path))
        magic, version, n_vocab, n_embed, n_layer, data_type = header
        if magic != FILE_MAGIC:
            f.seek(0)
            hint = _checkpoint_hint(path, f.read(512))
            if hint:
                raise ModelFormatError(hint)
            shown = " ".join(f"{b:02X}" for b in struct.pack("<I", magic))
            raise ModelFormatError(
                f"{path}: not an rwkv.cpp model file (magic bytes {shown}, expected 66 6D 67 67)"
            )
        problem = _header_problem(version, n_vocab, n_embed, n_layer, data_type)
        if problem is not None:
            raise ModelFormatError(f"{path}: {problem}")
        tensors: dict[str, TensorRecord] = {}
        pos = HEADER_SIZE
        while pos < size:
            if len(tensors) == MAX_N_TENSORS:
                raise ModelFormatError(
                    f"{path}: more than {MAX_N_TENSORS} tensor records (data continues at "
                    f"byte {pos}); RWKV models have a few thousand: corrupt or not a model"
                )
            record = _read_record(f, path, size, pos, len(tensors), version, tensors)
            tensors[record.name] = record
            pos = record.offset + record.nbytes
            f.seek(pos)
    return ModelFile(
        path=path,
        version=version,
        n_vocab=n_vocab,
        n_embed=n_embed,
        n_layer=n_layer,
        data_type=data_type,
        file_size=size,
        tensors=tensors,
    )


def _checkpoint_hint(path: pathlib.Path, head: bytes | None) -> str | None:
    """The convert command for a checkpoint given where a model file is expected (error path only)."""
    from .checkpoint._load import convert_hint

    return convert_hint(path, head)


def _read_record(
    f: BinaryIO,
    path: pathlib.Path,
    size: int,
    pos: int,
    index: int,
    version: int,
    seen: dict[str, TensorRecord],
) -> TensorRecord:
    """Parse the record starting at byte ``pos``; ``f`` is positioned there."""
    where = f"{path}: tensor record #{index} (at byte {pos})"
    if pos + _RECORD_HEAD.size > size:
        raise ModelFormatError(
            f"{where}: file ends at byte {size} inside the record header, which needs "
            f"{pos + _RECORD_HEAD.size - size} more bytes"
        )
    dim_count, key_length, type_id = _RECORD_HEAD.unpack(_read_exact(f, _RECORD_HEAD.size, path))
    if not 1 <= dim_count <= 3:
        raise ModelFormatError(f"{where}: dim_count is {dim_count}; it must be 1, 2 or 3")
    if not 1 <= key_length <= MAX_KEY_LENGTH:
        raise ModelFormatError(f"{where}: name length is {key_length}; it must be 1..{MAX_KEY_LENGTH}")
    ne_start = pos + _RECORD_HEAD.size
    data_start = ne_start + 4 * dim_count + key_length
    if data_start > size:
        raise ModelFormatError(
            f"{where}: file ends at byte {size} inside the record's sizes/name, which "
            f"need {data_start - size} more bytes"
        )
    ne = struct.unpack(f"<{dim_count}i", _read_exact(f, 4 * dim_count, path))
    key = _read_exact(f, key_length, path)
    try:
        name = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFormatError(
            f"{where}: name {key!r} is not valid UTF-8 ({exc.reason} at byte {exc.start} of the name)"
        ) from None
    where = f"{path}: tensor #{index} {name!r} (record at byte {pos})"
    if name in seen:
        raise ModelFormatError(
            f"{where}: duplicate tensor name (an earlier record already defines it, "
            f"data at byte {seen[name].offset})"
        )
    dtype, why = _dtype_from_id(type_id)
    if dtype is None:
        raise ModelFormatError(f"{where}: {why}")
    if dtype.is_quantized and version != CURRENT_VERSION:
        raise ModelFormatError(
            f"{where}: quantized ({dtype.name}) tensor in a version {version} file uses "
            f"the old pre-2023-05-27 ggml block layout; {_REQUANTIZE_HINT}"
        )
    problem = _shape_problem(dtype, ne)
    if problem is not None:
        raise ModelFormatError(f"{where}: tensor {problem}")
    nbytes = math.prod(ne) // dtype.block_size * dtype.type_size
    if data_start + nbytes > size:
        raise ModelFormatError(
            f"{where}: file ends at byte {size}, tensor {name!r} needs "
            f"{data_start + nbytes - size} more bytes ({nbytes} bytes of {dtype.name} "
            f"data from byte {data_start}; file truncated?)"
        )
    return TensorRecord(name=name, dtype=dtype, ne=tuple(ne), offset=data_start, nbytes=nbytes)


# --- writer ------------------------------------------------------------------------------------


def _little_endian_bytes(array: np.ndarray) -> memoryview:
    """Raw bytes of ``array`` in C order with multi-byte items little-endian."""
    array = np.ascontiguousarray(array)
    if array.dtype.itemsize > 1 and array.dtype.byteorder != "|":
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        array = np.ascontiguousarray(array)
    return array.reshape(-1).view(np.uint8).data


def _coerce_dtype(value: Any, name: str) -> DType:
    """Accept a DType, a type id or a type name for the 4-tuple form of ``write_model_file``."""
    if isinstance(value, str):
        try:
            return DType.from_name(value)
        except ValueError as exc:
            raise ModelFormatError(f"tensor {name!r}: {exc}") from None
    try:
        type_id = int(value)
    except (TypeError, ValueError):
        raise ModelFormatError(f"tensor {name!r}: data type {value!r} is not a DType") from None
    dtype, why = _dtype_from_id(type_id)
    if dtype is None:
        raise ModelFormatError(f"tensor {name!r}: {why}")
    return dtype


def _encode_tensor(item: Any, index: int) -> tuple[str, DType, tuple[int, ...], memoryview | bytes]:
    """Turn one entry of ``tensors`` into (name, dtype, ne, raw bytes), validating it."""
    if not isinstance(item, tuple) or len(item) not in (2, 4):
        kind = f"a tuple of {len(item)}" if isinstance(item, tuple) else type(item).__name__
        raise ModelFormatError(
            f"tensors item #{index} must be (name, array) or (name, dtype, ne, data), got {kind}"
        )
    name = item[0]
    try:
        key_length = len(name.encode("utf-8")) if isinstance(name, str) else 0
    except UnicodeEncodeError:  # lone surrogates
        key_length = 0
    if not 1 <= key_length <= MAX_KEY_LENGTH:
        raise ModelFormatError(
            f"tensors item #{index}: name {name!r} must be a str of 1..{MAX_KEY_LENGTH} UTF-8 bytes"
        )
    if len(item) == 2:
        array = np.asarray(item[1])
        # Compare kind and size, not dtype equality, so big-endian float arrays are accepted too.
        if array.dtype.kind == "f" and array.dtype.itemsize == 4:
            dtype = DType.F32
        elif array.dtype.kind == "f" and array.dtype.itemsize == 2:
            dtype = DType.F16
        else:
            raise DTypeError(
                f"tensor {name!r} has numpy dtype {array.dtype}; only float32 and float16 "
                f"arrays can be written directly (convert it, or pass (name, dtype, ne, data))"
            )
        ne = tuple(int(n) for n in reversed(array.shape))
        data: memoryview | bytes = _little_endian_bytes(array)
    else:
        dtype = _coerce_dtype(item[1], name)
        try:
            ne = tuple(item[2])
        except TypeError:
            raise ModelFormatError(
                f"tensor {name!r}: ne must be a sequence of ints, got {item[2]!r}"
            ) from None
        raw = item[3]
        if isinstance(raw, np.ndarray):
            data = _little_endian_bytes(raw)
        elif isinstance(raw, (bytes, bytearray, memoryview)):
            data = memoryview(raw).cast("B")
        else:
            raise ModelFormatError(
                f"tensor {name!r}: data must be bytes or a numpy array, got {type(raw).__name__}"
            )
    problem = _shape_problem(dtype, ne)
    if problem is not None:
        raise ModelFormatError(f"tensor {name!r}: tensor {problem}")
    ne = tuple(int(n) for n in ne)
    expected = math.prod(ne) // dtype.block_size * dtype.type_size
    if len(data) != expected:
        raise ModelFormatError(
            f"tensor {name!r}: {dtype.name} with ne = {ne} needs {expected} bytes of data, got {len(data)}"
        )
    return name, dtype, ne, data


def write_model_file(
    path: str | os.PathLike[str],
    *,
    n_vocab: int,
    n_embed: int,
    n_layer: int,
    data_type: DType | int,
    tensors: Iterable[tuple[str, np.ndarray] | tuple[str, DType | int, Sequence[int], bytes | np.ndarray]],
    version: int = CURRENT_VERSION,
) -> None:
    """Write a model file, streaming ``tensors`` one at a time.

    Each item is ``(name, array)`` — float32 → F32, float16 → F16, numpy shape reversed into
    ``ne`` — or ``(name, dtype, ne, data)`` for already-encoded (e.g. quantized) data.
    The file is written to a temporary file in the destination's directory and renamed over
    ``path`` only when complete, so a failure (or Ctrl-C) never leaves a half-written model or
    a stray temporary file behind, and an existing file at ``path`` stays untouched.
    """
    path = pathlib.Path(path)
    problem = _header_problem(int(version), int(n_vocab), int(n_embed), int(n_layer), int(data_type))
    if problem is not None:
        raise ModelFormatError(f"cannot write '{path}': {problem}")
    header = _HEADER.pack(FILE_MAGIC, int(version), int(n_vocab), int(n_embed), int(n_layer), int(data_type))
    with atomic_output(path, "model file") as out:
        out.write(header)
        out.flush()
        names: set[str] = set()
        for index, item in enumerate(tensors):
            if index == MAX_N_TENSORS:
                raise ModelFormatError(
                    f"cannot write '{path}': more than {MAX_N_TENSORS} tensors, which read_model_file refuses"
                )
            name, dtype, ne, data = _encode_tensor(item, index)
            if name in names:
                raise ModelFormatError(f"cannot write '{path}': duplicate tensor name {name!r}")
            if dtype.is_quantized and version != CURRENT_VERSION:
                raise ModelFormatError(
                    f"cannot write '{path}': quantized tensor {name!r} needs "
                    f"version {CURRENT_VERSION}, not {version}"
                )
            names.add(name)
            key = name.encode("utf-8")
            out.write(_RECORD_HEAD.pack(len(ne), len(key), int(dtype)))
            out.write(struct.pack(f"<{len(ne)}i", *ne))
            out.write(key)
            out.write(data)
            # Flushing per tensor keeps memory flat and surfaces a full disk early.
            out.flush()
