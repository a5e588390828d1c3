"""PyTorch zip checkpoints (``.pth``): the archive and a restricted unpickler for ``data.pkl``."""

from __future__ import annotations

import _compat_pickle
import collections
import mmap
import pickle
import pickletools
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelFormatError, UnsupportedError
from ._container import Checkpoint
from ._tensor import _MAX_HEADER_BYTES, _check_extent, _ElemType, _et, _short, _Spec
from .layouts import _detect_layout

_ZIP_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_ZIP_LOCAL_MAGIC = 0x04034B50


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

    __slots__ = ("base", "buffer", "etype", "key", "numel")

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
        raise ModelFormatError(f"data.pkl: {what} must be a tuple of integers, got {_short(value)}")
    return tuple(value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *rest: Any) -> _TensorRecord:
    """Inert replacement for ``torch._utils._rebuild_tensor_v2`` (and v1): records the view."""
    if not isinstance(storage, _Storage):
        raise ModelFormatError(f"data.pkl: tensor rebuilt from {type(storage).__name__}, not a storage")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool):
        raise ModelFormatError(f"data.pkl: storage offset must be an integer, got {_short(storage_offset)}")
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
                f"{self._file}: data.pkl references the forbidden global '{_short(module)}.{_short(name)}'; "
                "refusing to load "
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
            raise ModelFormatError(f"{self._file}: data.pkl has a malformed storage reference {_short(pid)}")
        key, etype, numel = pid[2], pid[1].etype, pid[4]
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storage_for(key, etype, numel)
            self._storages[key] = storage
        elif storage.etype != etype:
            # torch lets views of one storage differ in dtype only via untyped storages; refuse.
            raise ModelFormatError(f"{self._file}: storage '{key}' is referenced with two element types")
        return storage


_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
# pickletools' message for a length field that the remaining data does not hold
_LENGTH_BEYOND_DATA = re.compile(r"expected \d+ bytes in a \w+, but only \d+ remain")


def _check_pickle_bounds(data: bytes, path: Path) -> None:
    """Refuses a pickle whose numbers would make CPython's unpickler allocate far more than the pickle's
    own size: a length field (BINBYTES8, BINUNICODE8, ...) larger than what follows it is allocated in
    full before the read fails, and a memo index i sizes the memo table to ~16*i bytes. pickletools
    reads the opcodes without allocating declared lengths; picklers number memo entries 0, 1, 2, ...,
    so an index beyond the opcodes read is forged. Other malformations are left to the unpickler, which
    also refuses a forbidden global met before them."""
    n_ops = 0
    try:
        for opcode, arg, _ in pickletools.genops(data):
            n_ops += 1
            if opcode.name in _MEMO_OPCODES and isinstance(arg, int) and not 0 <= arg <= n_ops:
                raise ModelFormatError(
                    f"{path}: data.pkl stores memo entry {arg} after {n_ops} opcodes: "
                    "not a pickle a PyTorch writer makes"
                )
    except ModelFormatError:
        raise
    except Exception as e:
        if _LENGTH_BEYOND_DATA.search(str(e)):
            raise ModelFormatError(
                f"{path}: data.pkl declares an object longer than the pickle ({_short(e)})"
            ) from e


def _open_pth(ckpt: Checkpoint, path: Path) -> None:
    mm = ckpt._map_file(path)
    try:
        # Through the handle already checked to be a regular file; reads the central directory only.
        zf = zipfile.ZipFile(ckpt._files[-1])
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
    ) as e:
        raise ModelFormatError(
            f"{path}: not a readable PyTorch zip checkpoint ({_short(e)}); truncated or corrupt?"
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
        raise ModelFormatError(
            f"{path}: zip archive has several data.pkl members ({_short(', '.join(pickles))})"
        )
    prefix = pickles[0][: -len("data.pkl")]

    byteorder = "little"
    if prefix + "byteorder" in members:
        byteorder = _read_member(zf, members[prefix + "byteorder"], path, limit=16).decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise ModelFormatError(f"{path}: unknown byte order '{byteorder}' in {prefix}byteorder")
    order: Literal["<", ">"] = "<" if byteorder == "little" else ">"

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
    _check_pickle_bounds(data, path)
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
            f"{path}: data.pkl is not a valid state-dict pickle ({type(e).__name__}: {_short(e)})"
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
            raise ModelFormatError(f"{path}: state dict key {_short(k)} is not a string")
    return tensors


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limit: int) -> bytes:
    if info.file_size > limit:
        raise ModelFormatError(
            f"{path}: zip member '{info.filename}' is {info.file_size} bytes, more than expected"
        )
    try:
        with zf.open(info) as f:
            return f.read(limit)
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        ValueError,
        RuntimeError,
        NotImplementedError,
        zlib.error,
    ) as e:
        raise ModelFormatError(
            f"{path}: cannot read zip member '{info.filename}' ({_short(e)}); truncated or corrupt?"
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
    name_len, extra_len = int(fields[9]), int(fields[10])
    offset = start + _ZIP_LOCAL_HEADER.size + name_len + extra_len
    if offset + info.file_size > len(mm):
        raise ModelFormatError(
            f"{path}: data of '{info.filename}' ends at byte {offset + info.file_size} but the file has "
            f"{len(mm)} bytes (truncated)"
        )
    return offset
