"""Read official RWKV checkpoints (``.pth`` and ``.safetensors``) without PyTorch.

Why not ``torch.load``: it needs PyTorch (hundreds of MB) and a ``.pth`` file is a pickle,
which can run arbitrary code while it is being read. Here a ``.pth`` is parsed as what it
really is, a zip archive holding ``<top>/data.pkl`` (a pickle describing the state dict)
and one raw little-endian byte blob per storage, ``<top>/data/<key>``. The pickle is read by
a :class:`pickle.Unpickler` subclass that resolves only the handful of globals a state dict
needs (tensor-rebuild functions, ``OrderedDict``, storage types) to our own inert stand-ins;
any other global (``os.system``, ``builtins.eval``, ...) is refused *before* anything could
call it. Tensor bytes are never unpickled: they are memory-mapped from the archive (torch
stores members uncompressed) and copied out one tensor at a time, so peak memory stays at
about one tensor beyond the mapped file.

Safetensors files are read the same way: the format is an 8-byte little-endian header
length, a JSON header (name -> dtype, shape, data offsets) and the raw data, so parsing it
ourselves costs a few lines and handles ``BF16``, which numpy (and therefore the
``safetensors`` library's numpy backend) cannot represent. BF16 is widened to float32 on
read, exactly.

Key layouts: besides the official names (``emb.weight``, ``blocks.N.att.key.weight``, ...)
the Hugging Face transformers RWKV layout (v4, and the community v5/v6 models that follow
it: ``rwkv.embeddings.weight``, ``rwkv.blocks.N.attention.*``, ``rwkv.blocks.N.feed_forward.*``,
``pre_ln``, ``time_mix_key``, ...) and the flash-linear-attention RWKV-7 layout used by the
RWKV-7 "HF" releases (``model.layers.N.attn.*_proj``, ``*_lora.lora.{0,2}``, ...) are
recognised and presented under the official names and shapes, so the converter only ever
sees one layout.
"""

from __future__ import annotations

import _compat_pickle
import collections
import json
import mmap
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ClosedError, ModelFormatError, ModelIOError, UnsupportedError

__all__ = ["Checkpoint", "LazyTensor", "initial_state_from_checkpoint", "load_checkpoint"]

# A checkpoint header larger than this is not a plausible RWKV safetensors/pickle header.
_MAX_HEADER_BYTES = 256 * 1024 * 1024

_ZIP_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_ZIP_LOCAL_MAGIC = 0x04034B50


# ---------------------------------------------------------------------------------------------
# Element types


@dataclass(frozen=True)
class _ElemType:
    """How the bytes of one element are stored on disk, and what numpy type they become."""

    name: str  # the source's spelling, e.g. "BF16" or "BFloat16Storage"
    raw: np.dtype  # dtype of the stored bytes (bf16 is read as uint16)
    bf16: bool = False  # widen the uint16 bits to float32 on read

    @property
    def out(self) -> np.dtype:
        """The numpy dtype :meth:`LazyTensor.numpy` returns (native byte order)."""
        if self.bf16:
            return np.dtype(np.float32)
        return self.raw.newbyteorder("=")

    def with_byteorder(self, order: str) -> _ElemType:
        return replace(self, raw=self.raw.newbyteorder(order))


def _et(name: str, code: str, bf16: bool = False) -> _ElemType:
    return _ElemType(name, np.dtype(code), bf16)


# PyTorch typed-storage classes (as pickled by torch.save) -> element type.
_TORCH_STORAGES: dict[str, _ElemType] = {
    "FloatStorage": _et("FloatStorage", "<f4"),
    "DoubleStorage": _et("DoubleStorage", "<f8"),
    "HalfStorage": _et("HalfStorage", "<f2"),
    "BFloat16Storage": _et("BFloat16Storage", "<u2", bf16=True),
    "LongStorage": _et("LongStorage", "<i8"),
    "IntStorage": _et("IntStorage", "<i4"),
    "ShortStorage": _et("ShortStorage", "<i2"),
    "CharStorage": _et("CharStorage", "<i1"),
    "ByteStorage": _et("ByteStorage", "<u1"),
    "BoolStorage": _et("BoolStorage", "?"),
}

# safetensors dtype strings -> element type. FP8 types are rejected (never used by RWKV).
_SAFETENSORS_TYPES: dict[str, _ElemType] = {
    "F64": _et("F64", "<f8"),
    "F32": _et("F32", "<f4"),
    "F16": _et("F16", "<f2"),
    "BF16": _et("BF16", "<u2", bf16=True),
    "I64": _et("I64", "<i8"),
    "I32": _et("I32", "<i4"),
    "I16": _et("I16", "<i2"),
    "I8": _et("I8", "<i1"),
    "U64": _et("U64", "<u8"),
    "U32": _et("U32", "<u4"),
    "U16": _et("U16", "<u2"),
    "U8": _et("U8", "<u1"),
    "BOOL": _et("BOOL", "?"),
}


# ---------------------------------------------------------------------------------------------
# Where a tensor's elements are, and how to copy them out


@dataclass(frozen=True)
class _Spec:
    """Location of one tensor: a strided view into a flat storage of ``storage_numel`` elements.

    ``buffer()`` returns the object holding the storage (the file's mmap, or the bytes of a
    compressed zip member) and ``base`` is the byte offset of storage element 0 in it.
    ``offset`` and ``strides`` count elements, like PyTorch's ``storage_offset``/``stride``.
    """

    buffer: Callable[[], Any]
    base: int
    storage_numel: int
    etype: _ElemType
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def transposed(self) -> _Spec:
        """The 2-D transpose, for free: swap sizes and strides (nothing is read)."""
        return replace(self, shape=self.shape[::-1], strides=self.strides[::-1])

    def is_contiguous(self) -> bool:
        return self.strides == _contiguous_strides(self.shape)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


def _read_spec(spec: _Spec) -> np.ndarray:
    """Copy one tensor out of its storage into a fresh, C-contiguous native-endian array."""
    out_dtype = spec.etype.out
    if _numel(spec.shape) == 0:
        return np.zeros(spec.shape, dtype=out_dtype)
    raw = spec.etype.raw
    flat = np.frombuffer(spec.buffer(), dtype=raw, count=spec.storage_numel, offset=spec.base)
    try:
        if spec.is_contiguous():
            view = flat[spec.offset : spec.offset + _numel(spec.shape)].reshape(spec.shape)
        else:
            view = np.lib.stride_tricks.as_strided(
                flat[spec.offset :],
                shape=spec.shape,
                strides=tuple(s * raw.itemsize for s in spec.strides),
                writeable=False,
            )
        if spec.etype.bf16:
            # bf16 is the upper half of an IEEE float32: shift the bits into place (exact).
            bits = view.astype(np.uint32, order="C")  # copies, and fixes the byte order
            bits <<= 16
            return bits.view(np.float32)
        return view.astype(out_dtype, order="C")  # always a copy, so the mmap can be closed later
    finally:
        del flat


def _check_extent(spec: _Spec, what: str) -> None:
    """Refuse a tensor whose strided view reaches outside its storage (before reading it)."""
    if spec.offset < 0 or any(s < 0 for s in spec.shape) or any(s < 0 for s in spec.strides):
        raise ModelFormatError(
            f"{what}: negative storage offset, size or stride "
            f"(offset {spec.offset}, size {list(spec.shape)}, stride {list(spec.strides)})"
        )
    if len(spec.shape) != len(spec.strides):
        raise ModelFormatError(
            f"{what}: size {list(spec.shape)} and stride {list(spec.strides)} differ in length"
        )
    if _numel(spec.shape) == 0:
        return
    last = spec.offset + sum((d - 1) * s for d, s in zip(spec.shape, spec.strides, strict=True))
    if last >= spec.storage_numel:
        raise ModelFormatError(
            f"{what}: tensor of size {list(spec.shape)} at storage offset {spec.offset} with stride "
            f"{list(spec.strides)} needs element {last}, but its storage has only "
            f"{spec.storage_numel} elements"
        )


# ---------------------------------------------------------------------------------------------
# Public objects


class LazyTensor:
    """One tensor of a checkpoint, read from disk only when :meth:`numpy` is called.

    ``shape`` and ``dtype`` describe the array :meth:`numpy` returns (BF16 tensors report
    float32, since numpy has no bfloat16). ``source_name`` is the key in the file (it differs
    from ``name`` for Hugging Face layouts), ``source_dtype`` the dtype as the file spells it.
    """

    __slots__ = ("name", "source_name", "shape", "dtype", "source_dtype", "_spec", "_reshape", "_owner")

    def __init__(
        self,
        name: str,
        source_name: str,
        spec: _Spec,
        owner: Checkpoint | None = None,
        reshape: tuple[int, ...] | None = None,
    ) -> None:
        self.name = name
        self.source_name = source_name
        self._spec = spec
        self._reshape = reshape
        self._owner = owner
        self.shape: tuple[int, ...] = reshape if reshape is not None else spec.shape
        self.dtype: np.dtype = spec.etype.out
        self.source_dtype: str = spec.etype.name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return _numel(self.shape)

    def numpy(self) -> np.ndarray:
        """Read the tensor: a new C-contiguous array the caller owns (the file may be closed after)."""
        if self._owner is not None:
            self._owner._check_open()
        array = _read_spec(self._spec)
        if self._reshape is not None:
            array = array.reshape(self._reshape)
        return array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.source_dtype})"


class Checkpoint(Mapping[str, LazyTensor]):
    """A read-only mapping ``official name -> LazyTensor`` over one or more memory-mapped files.

    Keys keep the order of the checkpoint (pickle order for ``.pth``, data order for
    safetensors). ``layout`` says which key layout the file used: ``"official"``,
    ``"hf-rwkv"`` (transformers RWKV-4 and the v5/v6 models following it) or
    ``"hf-rwkv7-fla"`` (flash-linear-attention RWKV-7). ``metadata`` holds a safetensors
    ``__metadata__`` dict, if any. Close it (or use ``with``) to release the mappings.
    """

    def __init__(self, path: Path, file_format: str) -> None:
        self.path = path
        self.format = file_format
        self.layout = "official"
        self.metadata: dict[str, str] = {}
        self._tensors: dict[str, LazyTensor] = {}
        self._maps: list[mmap.mmap] = []
        self._files: list[Any] = []
        self._closed = False

    # Mapping protocol
    def __getitem__(self, name: str) -> LazyTensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return (
            f"Checkpoint({str(self.path)!r}, format={self.format}, layout={self.layout}, tensors={len(self)})"
        )

    # Lifetime
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.path}: checkpoint is closed")

    def close(self) -> None:
        """Release the memory maps and file handles. Arrays already returned stay valid."""
        if self._closed:
            return
        self._closed = True
        for mm in self._maps:
            try:
                mm.close()
            except BufferError:  # a caller still holds a view into it; let GC close it later
                pass
        for handle in self._files:
            handle.close()
        self._maps.clear()
        self._files.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Construction helpers
    def _map_file(self, path: Path) -> mmap.mmap:
        try:
            handle = open(path, "rb")
        except OSError as e:
            raise ModelIOError(f"cannot open checkpoint '{path}': {e.strerror or e}") from e
        self._files.append(handle)
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise ModelFormatError(f"{path}: file is empty")
        mm = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(mm)
        return mm

    def _add(self, source_name: str, spec: _Spec, file: Path) -> None:
        name, spec, reshape = _to_official(self.layout, source_name, spec)
        if name in self._tensors:
            raise ModelFormatError(
                f"{file}: tensors '{self._tensors[name].source_name}' and '{source_name}' "
                f"both map to '{name}'"
            )
        self._tensors[name] = LazyTensor(name, source_name, spec, self, reshape)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open an RWKV checkpoint for lazy, torch-free reading.

    Accepts a PyTorch zip ``.pth`` (any extension; the type is sniffed from the content),
    a ``.safetensors`` file, a ``*.safetensors.index.json`` of a sharded Hugging Face
    checkpoint, or a directory holding one of these. Raises ``ModelIOError`` when the file
    cannot be opened, ``ModelFormatError`` when it is malformed (naming the file and the
    problem) and ``UnsupportedError`` for legacy (pre-1.6, non-zip) PyTorch files.
    """
    p = Path(path)
    if p.is_dir():
        p = _pick_from_directory(p)
    if p.name.endswith(".index.json"):
        return _open_sharded(p)
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ModelIOError(f"cannot open checkpoint '{p}': {e.strerror or e}") from e
    ckpt: Checkpoint
    if head[:4] == b"PK\x03\x04":
        ckpt = Checkpoint(p, "pth")
        try:
            _open_pth(ckpt, p)
        except BaseException:
            ckpt.close()
            raise
        return ckpt
    if len(head) >= 9 and head[8:9] == b"{":
        ckpt = Checkpoint(p, "safetensors")
        try:
            _open_safetensors(ckpt, [p])
        except BaseException:
            ckpt.close()
            raise
        return ckpt
    raise _unknown_format(p, head)


def _unknown_format(p: Path, head: bytes) -> Exception:
    if not head:
        return ModelFormatError(f"{p}: file is empty")
    if head[:1] == b"\x80" or head[:2] == b"\x1f\x8b" or _looks_like_tar(p):
        return UnsupportedError(
            f"{p}: legacy (pre-1.6, non-zip) PyTorch checkpoint; re-save it with a recent PyTorch "
            "(torch.save(torch.load(path), new_path)) and convert that file"
        )
    if head[:4] == b"fmgg":
        return ModelFormatError(f"{p}: this is already an rwkv.cpp model file (.bin), not a checkpoint")
    return ModelFormatError(
        f"{p}: not a PyTorch zip checkpoint (.pth) or safetensors file (first bytes {head[:8].hex()})"
    )


def _looks_like_tar(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            f.seek(257)
            return f.read(5) == b"ustar"
    except OSError:
        return False


def _pick_from_directory(d: Path) -> Path:
    """A directory: prefer a shard index, then a single safetensors file, then a single .pth."""
    for pattern in ("*.safetensors.index.json", "*.safetensors", "*.pth"):
        found = sorted(d.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ModelFormatError(
                f"{d}: several {pattern} files ({', '.join(f.name for f in found)}); pass one of them"
            )
    raise ModelFormatError(f"{d}: no .safetensors, .safetensors.index.json or .pth checkpoint in this folder")


# ---------------------------------------------------------------------------------------------
# safetensors


def _open_sharded(index_path: Path) -> Checkpoint:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelIOError(f"cannot read '{index_path}': {e.strerror or e}") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{index_path}: not valid JSON ({e})") from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelFormatError(f"{index_path}: missing or malformed 'weight_map'")
    shards: list[Path] = []
    for shard in weight_map.values():
        shard_path = index_path.parent / shard
        if Path(shard).name != shard:
            raise ModelFormatError(f"{index_path}: shard name '{shard}' is not a plain file name")
        if shard_path not in shards:
            shards.append(shard_path)
    ckpt = Checkpoint(index_path, "safetensors")
    try:
        _open_safetensors(ckpt, shards)
    except BaseException:
        ckpt.close()
        raise
    return ckpt


def _open_safetensors(ckpt: Checkpoint, files: list[Path]) -> None:
    entries: list[tuple[str, _Spec, Path]] = []
    for file in files:
        mm = ckpt._map_file(file)
        size = len(mm)
        if size < 8:
            raise ModelFormatError(f"{file}: safetensors file is only {size} bytes (truncated)")
        (header_len,) = struct.unpack_from("<Q", mm, 0)
        if header_len > min(size - 8, _MAX_HEADER_BYTES):
            raise ModelFormatError(
                f"{file}: safetensors header claims {header_len} bytes but the file has {size - 8} after "
                "the length field (truncated or not a safetensors file)"
            )
        try:
            header = json.loads(bytes(mm[8 : 8 + header_len]).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{file}: safetensors header is not valid JSON ({e})") from e
        if not isinstance(header, dict):
            raise ModelFormatError(f"{file}: safetensors header is not a JSON object")
        data_start = 8 + header_len
        data_size = size - data_start
        found: list[tuple[int, str, _Spec]] = []
        for name, info in header.items():
            if name == "__metadata__":
                if isinstance(info, dict):
                    ckpt.metadata.update({str(k): str(v) for k, v in info.items()})
                continue
            spec = _safetensors_spec(file, name, info, mm, data_start, data_size)
            found.append((spec.base, name, spec))
        found.sort(key=lambda item: item[0])  # file order: the order the writer laid tensors out
        entries.extend((name, spec, file) for _, name, spec in found)
    if not entries:
        raise ModelFormatError(f"{files[0]}: safetensors file holds no tensors")
    ckpt.layout = _detect_layout([name for name, _, _ in entries])
    for name, spec, file in entries:
        ckpt._add(name, spec, file)


def _safetensors_spec(
    file: Path, name: str, info: Any, mm: mmap.mmap, data_start: int, data_size: int
) -> _Spec:
    what = f"{file}: tensor '{name}'"
    if not isinstance(info, dict):
        raise ModelFormatError(f"{what}: header entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise ModelFormatError(f"{what}: missing dtype")
    etype = _SAFETENSORS_TYPES.get(dtype)
    if etype is None:
        raise UnsupportedError(f"{what}: dtype {dtype} is not supported (use F32, F16 or BF16)")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ModelFormatError(f"{what}: malformed shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise ModelFormatError(f"{what}: malformed data_offsets {offsets!r}")
    begin, end = offsets
    numel = _numel(tuple(shape))
    if not 0 <= begin <= end:
        raise ModelFormatError(f"{what}: data_offsets [{begin}, {end}] are not an increasing pair")
    if end - begin != numel * etype.raw.itemsize:
        raise ModelFormatError(
            f"{what}: data_offsets span {end - begin} bytes but shape {shape} of {dtype} needs "
            f"{numel * etype.raw.itemsize}"
        )
    if end > data_size:
        raise ModelFormatError(
            f"{what}: data ends at byte {data_start + end} but the file has only {data_start + data_size} "
            "bytes (truncated)"
        )
    return _Spec(
        buffer=lambda: mm,
        base=data_start + begin,
        storage_numel=numel,
        etype=etype,
        offset=0,
        shape=tuple(shape),
        strides=_contiguous_strides(tuple(shape)),
    )


# ---------------------------------------------------------------------------------------------
# PyTorch zip (.pth)


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the element type."""

    __slots__ = ("etype",)

    def __init__(self, etype: _ElemType) -> None:
        self.etype = etype

    def __setstate__(self, state: Any) -> None:
        raise ModelFormatError("data.pkl tries to set state on a storage type")


class _Storage:
    """A storage referenced by data.pkl: a zip member holding ``numel`` elements."""

    __slots__ = ("key", "etype", "numel", "buffer", "base")

    def __init__(self, key: str, etype: _ElemType, numel: int, buffer: Callable[[], Any], base: int) -> None:
        self.key = key
        self.etype = etype
        self.numel = numel
        self.buffer = buffer
        self.base = base

    def __setstate__(self, state: Any) -> None:
        raise ModelFormatError("data.pkl tries to set state on a storage")


class _TensorRecord:
    """What ``_rebuild_tensor_v2`` would have built: a strided view of a storage."""

    __slots__ = ("spec",)

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec

    def __setstate__(self, state: Any) -> None:
        raise ModelFormatError("data.pkl tries to set state on a tensor")


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ModelFormatError(f"data.pkl: {what} must be a tuple of integers, got {value!r}")
    return tuple(value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *rest: Any) -> _TensorRecord:
    """Inert replacement for ``torch._utils._rebuild_tensor_v2`` (and v1): records the view."""
    if not isinstance(storage, _Storage):
        raise ModelFormatError(f"data.pkl: tensor rebuilt from {type(storage).__name__}, not a storage")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool):
        raise ModelFormatError(f"data.pkl: storage offset must be an integer, got {storage_offset!r}")
    spec = _Spec(
        buffer=storage.buffer,
        base=storage.base,
        storage_numel=storage.numel,
        etype=storage.etype,
        offset=storage_offset,
        shape=_as_int_tuple(size, "tensor size"),
        strides=_as_int_tuple(stride, "tensor stride"),
    )
    _check_extent(spec, f"data.pkl: tensor in storage '{storage.key}'")
    return _TensorRecord(spec)


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    """Inert replacement for ``torch._utils._rebuild_parameter[_with_state]``: a Parameter is its data."""
    if not isinstance(data, _TensorRecord):
        raise ModelFormatError(f"data.pkl: parameter rebuilt from {type(data).__name__}, not a tensor")
    return data


class _SafeCallable:
    """Wraps one of the inert rebuild functions above so that a pickle cannot alter it.

    A bare function would accept pickle's BUILD opcode (which sets attributes such as
    ``__defaults__`` on whatever object is on the stack), and it is shared by every later load
    in the process; this wrapper refuses BUILD like the other stand-ins do.
    """

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise ModelFormatError("data.pkl tries to set state on a rebuild function")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _SafeCallable(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor"): _SafeCallable(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _SafeCallable(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _SafeCallable(_rebuild_parameter),
    ("collections", "OrderedDict"): collections.OrderedDict,  # a builtin type: attributes cannot be set
    **{("torch", name): _StorageType(etype) for name, etype in _TORCH_STORAGES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for ``data.pkl`` that knows only the globals a state dict needs.

    ``find_class`` is the single place where a pickle can obtain a callable (GLOBAL,
    STACK_GLOBAL, INST, OBJ and the EXT opcodes all go through it), so refusing every other
    name there means nothing outside the table above can ever be called.
    """

    def __init__(
        self, data: bytes, file: Path, storage_for: Callable[[str, _ElemType, int], _Storage]
    ) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._file = file
        self._storage_for = storage_for
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles may spell names the Python 2 way (__builtin__.eval); translate like
        # the standard unpickler so that the check (and the error message) see the real name.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ModelFormatError(
                f"{self._file}: data.pkl references the forbidden global '{module}.{name}'; refusing to load "
                "(a checkpoint may only contain tensors; this file may be malicious)"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if (
            not isinstance(pid, tuple)
            or len(pid) != 5
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
            or not isinstance(pid[2], str)
            or not isinstance(pid[4], int)
            or isinstance(pid[4], bool)
            or pid[4] < 0
        ):
            raise ModelFormatError(f"{self._file}: data.pkl has a malformed storage reference {pid!r}")
        key, etype, numel = pid[2], pid[1].etype, pid[4]
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storage_for(key, etype, numel)
            self._storages[key] = storage
        elif storage.etype != etype:
            # torch lets views of one storage differ in dtype only via untyped storages; refuse.
            raise ModelFormatError(f"{self._file}: storage '{key}' is referenced with two element types")
        return storage


def _open_pth(ckpt: Checkpoint, path: Path) -> None:
    mm = ckpt._map_file(path)
    try:
        zf = zipfile.ZipFile(path)  # reads the central directory only
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise ModelFormatError(
            f"{path}: not a readable PyTorch zip checkpoint ({e}); truncated or corrupt?"
        ) from e
    ckpt._files.append(zf)
    members = {info.filename: info for info in zf.infolist()}
    pickles = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pickles:
        if "data.pkl" in members:
            pickles = ["data.pkl"]
        else:
            raise ModelFormatError(f"{path}: zip archive has no data.pkl; not a PyTorch checkpoint")
    if len(pickles) > 1:
        raise ModelFormatError(f"{path}: zip archive has several data.pkl members ({', '.join(pickles)})")
    prefix = pickles[0][: -len("data.pkl")]

    byteorder = "little"
    if prefix + "byteorder" in members:
        byteorder = _read_member(zf, members[prefix + "byteorder"], path, limit=16).decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise ModelFormatError(f"{path}: unknown byte order '{byteorder}' in {prefix}byteorder")
    order = "<" if byteorder == "little" else ">"

    def storage_for(key: str, etype: _ElemType, numel: int) -> _Storage:
        if "/" in key or key in ("", ".", ".."):
            raise ModelFormatError(f"{path}: data.pkl names an invalid storage key '{key}'")
        member = prefix + "data/" + key
        info = members.get(member)
        if info is None:
            raise ModelFormatError(
                f"{path}: data.pkl refers to storage '{key}' but '{member}' is not in the archive"
            )
        etype = etype.with_byteorder(order) if etype.raw.itemsize > 1 else etype
        need = numel * etype.raw.itemsize
        if info.file_size < need:
            raise ModelFormatError(
                f"{path}: storage '{key}' should hold {numel} {etype.name} elements ({need} bytes) but "
                f"'{member}' has {info.file_size} bytes"
            )
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            base = _member_data_offset(mm, info, path)
            return _Storage(key, etype, numel, lambda: mm, base)
        # Not written by torch (it stores uncompressed), but readable: decompress on demand.
        return _Storage(key, etype, numel, lambda: _read_member(zf, info, path, limit=need), 0)

    data = _read_member(zf, members[pickles[0]], path, limit=_MAX_HEADER_BYTES)
    unpickler = _RestrictedUnpickler(data, path, storage_for)
    try:
        obj = unpickler.load()
    except (ModelFormatError, UnsupportedError) as e:
        if str(e).startswith(str(path)):
            raise
        raise type(e)(f"{path}: {e}") from e  # errors of the stand-ins do not know the file name
    except MemoryError:
        raise
    except Exception as e:  # any malformed pickle: truncated, bad opcode, wrong arity, ...
        raise ModelFormatError(
            f"{path}: data.pkl is not a valid state-dict pickle ({type(e).__name__}: {e})"
        ) from e

    state = _find_state_dict(obj, path)
    names = list(state)
    ckpt.layout = _detect_layout(names)
    for name in names:
        ckpt._add(name, state[name].spec, path)


def _find_state_dict(obj: Any, path: Path, depth: int = 0) -> dict[str, _TensorRecord]:
    """The tensors of the pickled object: a dict of tensors, or one nested under a usual key."""
    if depth > 4:  # a pickle can build a dict that contains itself
        raise ModelFormatError(f"{path}: data.pkl nests 'state_dict'/'model' dicts too deeply")
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{path}: data.pkl holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, _TensorRecord)}
    if not tensors:
        for key in ("state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                return _find_state_dict(inner, path, depth + 1)
        raise ModelFormatError(f"{path}: data.pkl holds no tensors")
    for k in tensors:
        if not isinstance(k, str):
            raise ModelFormatError(f"{path}: state dict key {k!r} is not a string")
    return tensors


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limit: int) -> bytes:
    if info.file_size > limit:
        raise ModelFormatError(
            f"{path}: zip member '{info.filename}' is {info.file_size} bytes, more than expected"
        )
    try:
        with zf.open(info) as f:
            return f.read(limit)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as e:
        raise ModelFormatError(
            f"{path}: cannot read zip member '{info.filename}' ({e}); truncated or corrupt?"
        ) from e


def _member_data_offset(mm: mmap.mmap, info: zipfile.ZipInfo, path: Path) -> int:
    """Byte offset of a stored member's data: after its *local* header (its extra field may
    differ from the central directory's; torch pads it to align the data)."""
    start = info.header_offset
    if start + _ZIP_LOCAL_HEADER.size > len(mm):
        raise ModelFormatError(f"{path}: local header of '{info.filename}' lies beyond the end of the file")
    fields = _ZIP_LOCAL_HEADER.unpack_from(mm, start)
    if fields[0] != _ZIP_LOCAL_MAGIC:
        raise ModelFormatError(f"{path}: bad local header signature for '{info.filename}' (corrupt zip)")
    name_len, extra_len = fields[9], fields[10]
    offset = start + _ZIP_LOCAL_HEADER.size + name_len + extra_len
    if offset + info.file_size > len(mm):
        raise ModelFormatError(
            f"{path}: data of '{info.filename}' ends at byte {offset + info.file_size} but the file has "
            f"{len(mm)} bytes (truncated)"
        )
    return offset


# ---------------------------------------------------------------------------------------------
# Key layouts -> official names


def _detect_layout(names: list[str]) -> str:
    if any(n.startswith("rwkv.") for n in names):
        return "hf-rwkv"
    if any(n.startswith("model.layers.") or n.startswith("model.embeddings.") for n in names):
        return "hf-rwkv7-fla"
    return "official"


# transformers RWKV spells the mix coefficients out: time_mix_key -> time_mix_k, ...
_HF_MIX = {
    "time_mix_key": "time_mix_k",
    "time_mix_value": "time_mix_v",
    "time_mix_receptance": "time_mix_r",
    "time_mix_gate": "time_mix_g",
}
_HF_BLOCK = re.compile(r"rwkv\.blocks\.(\d+)\.(.+)")


def _from_hf_rwkv(name: str) -> str:
    """transformers RWKV (v4; community v5/v6 use the same scheme) -> official name."""
    if name in ("head.weight", "rwkv.head.weight"):
        return "head.weight"
    if name.startswith("rwkv.embeddings."):
        return "emb." + name[len("rwkv.embeddings.") :]
    m = _HF_BLOCK.fullmatch(name)
    if m:
        layer, tail = m.groups()
        for hf, official in (("pre_ln.", "ln0."), ("attention.", "att."), ("feed_forward.", "ffn.")):
            if tail.startswith(hf):
                tail = official + tail[len(hf) :]
                break
        parts = tail.split(".")
        parts[-1] = _HF_MIX.get(parts[-1], parts[-1])
        return f"blocks.{layer}." + ".".join(parts)
    if name.startswith("rwkv."):
        return name[len("rwkv.") :]  # rwkv.ln_out.weight -> ln_out.weight
    return name


_FLA_TOP = {
    "model.embeddings.weight": "emb.weight",
    "model.norm.weight": "ln_out.weight",
    "model.norm.bias": "ln_out.bias",
    "lm_head.weight": "head.weight",
}
_FLA_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_FLA_RENAME = {
    "pre_norm.weight": "ln0.weight",
    "pre_norm.bias": "ln0.bias",
    "attn_norm.weight": "ln1.weight",
    "attn_norm.bias": "ln1.bias",
    "ffn_norm.weight": "ln2.weight",
    "ffn_norm.bias": "ln2.bias",
    "attn.r_proj.weight": "att.receptance.weight",
    "attn.k_proj.weight": "att.key.weight",
    "attn.v_proj.weight": "att.value.weight",
    "attn.o_proj.weight": "att.output.weight",
    "attn.g_norm.weight": "att.ln_x.weight",
    "attn.g_norm.bias": "att.ln_x.bias",
    "attn.r_k": "att.r_k",
    "ffn.key.weight": "ffn.key.weight",
    "ffn.value.weight": "ffn.value.weight",
}
# Official (1,1,C) vectors that the fla layout may store flat.
_FLA_VECTORS = {f"attn.x_{c}": f"att.x_{c}" for c in "rwkvag"} | {
    "attn.k_k": "att.k_k",
    "attn.k_a": "att.k_a",
    "ffn.x_k": "ffn.x_k",
}
_FLA_LORA = re.compile(r"attn\.([wavg])_lora\.lora\.(0\.weight|2\.weight|2\.bias)")


def _from_fla(name: str, spec: _Spec) -> tuple[str, _Spec, tuple[int, ...] | None]:
    """flash-linear-attention RWKV-7 -> official name, transposing/reshaping to official shapes.

    The LoRA factors are ``nn.Linear`` weights there (``lora.0``: (rank, C) = w1ᵀ,
    ``lora.2``: (C, rank) = w2ᵀ, ``lora.2.bias`` = w0), so they are transposed back; the
    per-channel vectors are given the official (1, 1, C) shape.
    """
    if name in _FLA_TOP:
        return _FLA_TOP[name], spec, None
    m = _FLA_LAYER.fullmatch(name)
    if not m:
        return name, spec, None
    layer, tail = m.groups()
    prefix = f"blocks.{layer}."
    if tail in _FLA_RENAME:
        return prefix + _FLA_RENAME[tail], spec, None
    if tail in _FLA_VECTORS:
        return prefix + _FLA_VECTORS[tail], spec, (1, 1, _numel(spec.shape))
    lora = _FLA_LORA.fullmatch(tail)
    if lora:
        which, part = lora.groups()
        if part == "2.bias":
            return f"{prefix}att.{which}0", spec, (1, 1, _numel(spec.shape))
        if len(spec.shape) != 2:
            raise ModelFormatError(f"tensor '{name}' should be 2-D, has shape {list(spec.shape)}")
        return f"{prefix}att.{which}{1 if part == '0.weight' else 2}", spec.transposed(), None
    return name, spec, None


def _to_official(layout: str, name: str, spec: _Spec) -> tuple[str, _Spec, tuple[int, ...] | None]:
    if layout == "hf-rwkv":
        return _from_hf_rwkv(name), spec, None
    if layout == "hf-rwkv7-fla":
        return _from_fla(name, spec)
    return name, spec, None


# ---------------------------------------------------------------------------------------------
# State-tuned checkpoints


_TIME_STATE = re.compile(r"blocks\.(\d+)\.att\.time_state")


def initial_state_from_checkpoint(
    source: str | os.PathLike[str] | Mapping[str, Any],
    version: str,
    *,
    n_layer: int | None = None,
    n_embed: int | None = None,
) -> np.ndarray:
    """The flat float32 initial state (architecture.md §7 layout) stored in a state-tuned checkpoint.

    ``source`` is a checkpoint path (or an already loaded mapping) holding
    ``blocks.N.att.time_state`` of shape (H, N, N) for every layer; other tensors are ignored.
    ``version`` is the model's ("5.x", "6", "7"): the official v5/v6 code stores the WKV state as
    ``[h][value][key]`` and transposes it on load into our ``[h][key][value]``; v7 trainers
    (RWKV-PEFT) store the kernel's own ``[h][value][key]`` orientation, which is also ours for v7,
    so it is copied as is. The token-shift parts (ffn_x, att_x) start at zero. ``n_layer`` /
    ``n_embed``, when given, are checked against the file. Raises ModelFormatError (naming the
    tensor) on missing layers or inconsistent shapes, UnsupportedError for v4.
    """
    if version.startswith("4"):
        raise UnsupportedError("RWKV v4 has no trainable initial state (time_state)")
    if not (version.startswith("5") or version in ("6", "7")):
        raise UnsupportedError(f"unknown RWKV version {version!r} for a state checkpoint")
    owned = not isinstance(source, Mapping)
    tensors: Mapping[str, Any] = load_checkpoint(source) if owned else source  # type: ignore[arg-type]
    try:
        layers = {int(m.group(1)): name for name in tensors if (m := _TIME_STATE.fullmatch(name))}
        where = getattr(tensors, "path", "state checkpoint")
        if not layers:
            raise ModelFormatError(
                f"{where}: no blocks.N.att.time_state tensors (not a state-tuned checkpoint)"
            )
        count = max(layers) + 1
        missing = sorted(set(range(count)) - set(layers))
        if missing or (n_layer is not None and count != n_layer):
            raise ModelFormatError(
                f"{where}: time_state for layers {sorted(layers)}, but the model has "
                f"{n_layer if n_layer is not None else count} layers (missing {missing})"
            )
        first = tuple(tensors[layers[0]].shape)
        if len(first) != 3 or first[1] != first[2] or first[0] < 1 or first[1] < 1:
            raise ModelFormatError(
                f"{where}: tensor '{layers[0]}' has shape {list(first)}, expected (H, N, N)"
            )
        heads, size = first[0], first[1]
        c = heads * size
        if n_embed is not None and c != n_embed:
            raise ModelFormatError(
                f"{where}: time_state has {heads} heads of size {size} (n_embed {c}), the model has {n_embed}"
            )
        per_layer = (2 + size) * c
        state = np.zeros(per_layer * count, dtype=np.float32)
        for layer in range(count):
            name = layers[layer]
            value = tensors[name]
            if tuple(value.shape) != first:
                raise ModelFormatError(
                    f"{where}: tensor '{name}' has shape {list(value.shape)}, expected {list(first)}"
                )
            s = np.asarray(value, dtype=np.float32)  # a LazyTensor reads itself via __array__
            if version != "7":
                s = s.transpose(0, 2, 1)
            start = layer * per_layer + 2 * c  # after ffn_x and att_x
            state[start : start + heads * size * size] = s.reshape(-1)
        return state
    finally:
        if owned:
            tensors.close()  # type: ignore[attr-defined]
