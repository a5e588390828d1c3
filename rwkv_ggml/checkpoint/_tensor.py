"""Element types and lazily read, strided tensors of a checkpoint (shared by every reader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import ModelFormatError, RwkvGgmlError

if TYPE_CHECKING:
    from ._container import Checkpoint

# A checkpoint header larger than this is not a plausible RWKV safetensors/pickle header.
_MAX_HEADER_BYTES = 256 * 1024 * 1024

# Shape limits: no RWKV tensor has more dimensions or a longer one (a model file stores each
# dimension as an int32), and numpy cannot even describe an empty array of 2**62 x 4 bytes.
_MAX_NDIM = 8
_MAX_DIM = 2**31 - 1

# An expanded (stride-0 or overlapping) view reads more elements than its storage holds; up to
# this many are allowed (64 MiB as float32), beyond it a tiny file could demand gigabytes.
_MAX_EXPANDED_ELEMENTS = 1 << 24

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

    def with_byteorder(self, order: Literal["<", ">"]) -> _ElemType:
        return replace(self, raw=self.raw.newbyteorder(order))


def _et(name: str, code: str, bf16: bool = False) -> _ElemType:
    return _ElemType(name, np.dtype(code), bf16)


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


def _check_shape(shape: tuple[int, ...], what: str) -> None:
    """Refuse a shape no checkpoint tensor can have, even an empty one (``[0, 2**70]``)."""
    if len(shape) > _MAX_NDIM or any(d > _MAX_DIM for d in shape):
        raise ModelFormatError(
            f"{what}: impossible shape {_short(list(shape))} (at most {_MAX_NDIM} dimensions "
            f"of at most {_MAX_DIM} elements each)"
        )


def _short(value: object, limit: int = 200) -> str:
    """Printable text of a value taken from a hostile file, cut to a readable length.

    Strings and exceptions print as themselves, anything else as its ``repr``; an integer too
    long for Python to print (over 4300 digits) cannot break the error message that names it.
    """
    try:
        text = (
            value
            if isinstance(value, str)
            else str(value)
            if isinstance(value, BaseException)
            else repr(value)
        )
    except ValueError:
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[:limit] + "..."


def _check_extent(spec: _Spec, what: str) -> None:
    """Refuse a tensor whose strided view reaches outside its storage (before reading it)."""
    if spec.offset < 0 or any(s < 0 for s in spec.shape) or any(s < 0 for s in spec.strides):
        raise ModelFormatError(
            f"{what}: negative storage offset, size or stride "
            f"(offset {_short(spec.offset)}, size {_short(list(spec.shape))}, "
            f"stride {_short(list(spec.strides))})"
        )
    if len(spec.shape) != len(spec.strides):
        raise ModelFormatError(
            f"{what}: size {_short(list(spec.shape))} and stride {_short(list(spec.strides))} "
            "differ in length"
        )
    _check_shape(spec.shape, what)
    if _numel(spec.shape) == 0:
        return
    last = spec.offset + sum((d - 1) * s for d, s in zip(spec.shape, spec.strides, strict=True))
    if last >= spec.storage_numel:
        raise ModelFormatError(
            f"{what}: tensor of size {_short(list(spec.shape))} at storage offset {_short(spec.offset)} with "
            f"stride {_short(list(spec.strides))} needs element {_short(last)}, but its storage has only "
            f"{spec.storage_numel} elements"
        )


def _check_expansion(spec: _Spec, what: str, already: int = 0) -> int:
    """The elements ``spec`` declares beyond what its storage holds from its offset (0 for an
    ordinary view); refused once that, plus ``already`` from earlier tensors, is too many.

    Reading such a view (stride 0, or strides that overlap) materialises every declared
    element: a few bytes of storage expanded to 65536 x 65536 would allocate 16 GiB. Small
    expansions are harmless and PyTorch writes them (``x.expand(...)``), so they stay readable;
    the allowance is shared by the whole checkpoint so that many tensors cannot add up either.
    """
    numel = _numel(spec.shape)
    available = max(spec.storage_numel - spec.offset, 0)
    excess = max(numel - available, 0)
    if excess and already + excess > _MAX_EXPANDED_ELEMENTS:
        raise ModelFormatError(
            f"{what}: size {list(spec.shape)} with stride {list(spec.strides)} declares {numel} elements "
            f"but its storage holds only {available} from offset {_short(spec.offset)}; expanded views "
            f"declaring over {_MAX_EXPANDED_ELEMENTS} elements more than their storage are refused"
        )
    return excess


# ---------------------------------------------------------------------------------------------
# Public objects


class LazyTensor:
    """One tensor of a checkpoint, read from disk only when :meth:`numpy` is called.

    ``shape`` and ``dtype`` describe the array :meth:`numpy` returns (BF16 tensors report
    float32, since numpy has no bfloat16). ``source_name`` is the key in the file (it differs
    from ``name`` for Hugging Face layouts), ``source_dtype`` the dtype as the file spells it.
    """

    __slots__ = ("_owner", "_reshape", "_spec", "dtype", "name", "shape", "source_dtype", "source_name")

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
        try:
            array = _read_spec(self._spec)
        except RwkvGgmlError:
            raise
        except (ValueError, TypeError, OverflowError) as e:  # checked at load; a last line of defence
            where = self._owner.path if self._owner is not None else "checkpoint"
            raise ModelFormatError(
                f"{where}: tensor '{self.source_name}' cannot be read ({_short(e)})"
            ) from e
        if self._reshape is not None:
            array = array.reshape(self._reshape)
        return array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.source_dtype})"
