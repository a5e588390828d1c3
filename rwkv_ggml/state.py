"""Recurrent states as objects: a float32 array plus the identity of the model it belongs to.

:class:`rwkv_ggml.Model` takes and returns plain float32 arrays (architecture.md §7), which is all
a generation loop needs. A state kept for later (a cached system prompt, a state-tuned prefix, a
checkpointed conversation) is different: fed to another model of the same size it would run
without complaint and silently produce garbage. :class:`State` therefore records which model made
it (version, sizes, the model's weights fingerprint) and refuses to be used with, or loaded for,
any other model. ``state.array`` stays the raw array for people who want it; ``Model.eval`` and
friends accept a :class:`State` as well and check it against the model first.

State file format (little-endian; version 1)::

    offset  size  field
    0       8     magic b"RWKVSTAT"
    8       4     u32 format version (1)
    12      4     u32 CRC-32 of the whole file with these 4 bytes zeroed
    16      16    RWKV version as ASCII, NUL-padded ("4", "5.1", "5.1-gated", "5.2", "6", "7")
    32      4     u32 n_embed
    36      4     u32 n_layer
    40      4     u32 n_head (0 for v4)
    44      4     u32 head_size (0 for v4)
    48      8     u64 number of floats that follow (must equal the size the fields above imply)
    56      8     reserved, zero
    64      32    the model's weights fingerprint (SHA-256 digest, see Model.fingerprint)
    96      4*n   the state, float32, architecture.md §7 layout

The file is written to a temporary file next to the destination and renamed, so an interrupted
save never leaves a half-written state behind. The checksum catches a damaged file; the sizes
catch a truncated one.
"""

from __future__ import annotations

import os
import pathlib
import stat
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._atomic import atomic_output
from .errors import EngineArgumentError, ModelFormatError, ModelIOError, UnsupportedError
from .layout import SUPPORTED_VERSIONS, family, state_layout

if TYPE_CHECKING:
    from .model import Model

__all__ = ["STATE_FORMAT_VERSION", "STATE_MAGIC", "State", "StateInfo"]

FloatArray = npt.NDArray[np.float32]

STATE_MAGIC = b"RWKVSTAT"
STATE_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sII16sIIIIQQ32s")
_HEADER_SIZE = _HEADER.size  # 96
_CRC_OFFSET = 12


@dataclass(frozen=True)
class StateInfo:
    """Identity of the model a state belongs to. ``fingerprint`` is ``Model.fingerprint`` (hex)."""

    version: str
    n_embed: int
    n_layer: int
    n_head: int
    head_size: int
    fingerprint: str

    @property
    def state_size(self) -> int:
        """Floats in a state of this model (architecture.md §7)."""
        return state_layout(self.version, self.n_layer, self.n_embed, self.head_size).size

    @staticmethod
    def of(model: Model) -> StateInfo:
        """The identity of a loaded model."""
        hp = model.hparams
        return StateInfo(
            version=hp.version,
            n_embed=hp.n_embed,
            n_layer=hp.n_layer,
            n_head=hp.n_head,
            head_size=hp.head_size,
            fingerprint=model.fingerprint,
        )

    def describe(self) -> str:
        shape = f"n_embed={self.n_embed}, n_layer={self.n_layer}"
        if self.version != "4":
            shape += f", {self.n_head} heads of size {self.head_size}"
        return f"RWKV v{self.version} ({shape}, weights {self.fingerprint[:12]})"

    def mismatch(self, other: StateInfo, strict: bool = True) -> str | None:
        """Why a state of ``self`` cannot be used with model ``other`` (None if it can).

        Non-strict compares only what decides the array's layout (version family and sizes), for
        a state that should carry over to a re-quantized or fine-tuned copy of the same model."""
        if self.version != other.version and (strict or family(self.version) != family(other.version)):
            return f"version v{self.version} vs v{other.version}"
        for field in ("n_embed", "n_layer", "n_head", "head_size"):
            if getattr(self, field) != getattr(other, field):
                return f"{field} {getattr(self, field)} vs {getattr(other, field)}"
        if strict and self.fingerprint != other.fingerprint:
            return (
                f"weights fingerprint {self.fingerprint[:12]}... vs {other.fingerprint[:12]}... "
                "(same shape, different weights; pass strict=False to accept it anyway)"
            )
        return None


class State:
    """A recurrent state (float32, architecture.md §7 layout) that knows which model it belongs to.

    Make one with :meth:`new` or :meth:`from_array`, or :meth:`load` it from a file. ``array`` is the
    raw numpy array: it can be passed to ``Model.eval`` directly (so can the State itself, which is
    then checked against the model). ``Model.eval`` returns a plain array as the new state; wrap it
    with :meth:`from_array` (``copy=False`` to avoid the copy) to keep it as a State.
    """

    __slots__ = ("_array", "_info")

    def __init__(self, array: FloatArray, info: StateInfo) -> None:
        """Low-level constructor: takes ``array`` as is. Prefer :meth:`new` / :meth:`from_array`."""
        if (
            not isinstance(array, np.ndarray)
            or array.dtype != np.float32
            or array.shape != (info.state_size,)
            or not array.flags.c_contiguous
        ):
            raise EngineArgumentError(
                f"a State needs a C-contiguous float32 array of shape ({info.state_size},)"
            )
        self._array = array
        self._info = info

    # ---- construction ----
    @classmethod
    def new(cls, model: Model) -> State:
        """The model's initial state (``model.init_state()``: zeros, v4's pp = -1e30, or the trained
        initial state after ``model.load_initial_state``)."""
        return cls(model.init_state(), StateInfo.of(model))

    @classmethod
    def from_array(cls, model: Model, array: Any, *, copy: bool = True) -> State:
        """Wrap a state array of ``model`` (e.g. the one ``model.eval`` returned).

        ``copy=False`` keeps the caller's array when it already is a C-contiguous float32 array
        (later changes to it then show in the State). Raises EngineArgumentError for a wrong size."""
        info = StateInfo.of(model)
        try:
            arr = (
                np.array(array, dtype=np.float32, copy=True)
                if copy
                else np.ascontiguousarray(array, dtype=np.float32)
            )
        except (TypeError, ValueError) as exc:
            raise EngineArgumentError(f"not a state array: {exc}") from None
        if arr.ndim != 1 or arr.size != info.state_size:
            raise EngineArgumentError(
                f"state array has shape {arr.shape}; a state of {info.describe()} "
                f"has shape ({info.state_size},)"
            )
        return cls(arr, info)

    # ---- access ----
    @property
    def array(self) -> FloatArray:
        """The raw float32 state (not a copy)."""
        return self._array

    @property
    def info(self) -> StateInfo:
        return self._info

    @property
    def version(self) -> str:
        return self._info.version

    @property
    def n_embed(self) -> int:
        return self._info.n_embed

    @property
    def n_layer(self) -> int:
        return self._info.n_layer

    @property
    def n_head(self) -> int:
        return self._info.n_head

    @property
    def head_size(self) -> int:
        return self._info.head_size

    @property
    def fingerprint(self) -> str:
        return self._info.fingerprint

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """``np.asarray(state)`` is the raw array (no copy unless asked for or a dtype change needs one)."""
        if dtype is None and not copy:
            return self._array
        return np.array(self._array, dtype=dtype, copy=True)

    def __repr__(self) -> str:
        return f"State({self._info.describe()}, {self._array.size} floats)"

    def copy(self) -> State:
        """An independent copy (for branching a conversation)."""
        return State(self._array.copy(), self._info)

    def matches(self, model: Model, *, strict: bool = True) -> bool:
        """Whether this state can be used with ``model`` (see :meth:`StateInfo.mismatch`)."""
        return self._info.mismatch(StateInfo.of(model), strict) is None

    def array_for(self, model: Model) -> FloatArray:
        """The array, after checking that this state belongs to ``model``: what ``Model.eval`` calls
        when given a State. Raises EngineArgumentError naming the difference."""
        why = self._info.mismatch(StateInfo.of(model))
        if why is not None:
            raise EngineArgumentError(
                f"this state belongs to another model ({why}): it was made by "
                f"{self._info.describe()}, not by {model.path}"
            )
        return self._array

    # ---- files ----
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state file (format in the module docstring) atomically: temp file + rename."""
        path = pathlib.Path(path)
        info = self._info
        header = _HEADER.pack(
            STATE_MAGIC,
            STATE_FORMAT_VERSION,
            0,
            info.version.encode("ascii"),
            info.n_embed,
            info.n_layer,
            info.n_head,
            info.head_size,
            self._array.size,
            0,
            bytes.fromhex(info.fingerprint),
        )
        payload = self._array.astype("<f4", copy=False).tobytes()
        crc = zlib.crc32(payload, zlib.crc32(header))
        header = header[:_CRC_OFFSET] + struct.pack("<I", crc) + header[_CRC_OFFSET + 4 :]
        with atomic_output(path, "state file") as out:
            out.write(header)
            out.write(payload)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Model | None = None, *, strict: bool = True) -> State:
        """Read a state file written by :meth:`save`.

        With ``model``, the state must belong to it: same version, sizes and weights fingerprint, or
        with ``strict=False`` only the same layout (version family and sizes), e.g. to reuse a state on
        a re-quantized copy; the result is then a State of ``model``. Without ``model`` the file's
        own identity is kept (``Model.eval`` will still check it). Raises ModelFormatError naming the
        file for a truncated, corrupt or foreign file and for a state of another model,
        UnsupportedError for a newer format version, ModelIOError when the file cannot be read or is
        not a regular file (a FIFO would block, a device never ends).
        """
        path = pathlib.Path(path)
        try:
            with open(_open_regular_file(path), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(_HEADER_SIZE)
                if not head or head[:8] != STATE_MAGIC[: len(head)]:
                    raise ModelFormatError(
                        f"{path}: not an rwkv_ggml state file (magic {head[:8]!r}, expected {STATE_MAGIC!r})"
                    )
                if len(head) < _HEADER_SIZE:
                    raise ModelFormatError(
                        f"{path}: truncated state file ({size} bytes, the header alone is {_HEADER_SIZE})"
                    )
                (
                    _,
                    fmt,
                    crc,
                    version_raw,
                    n_embed,
                    n_layer,
                    n_head,
                    head_size,
                    n_floats,
                    _reserved,
                    digest,
                ) = _HEADER.unpack(head)
                if fmt != STATE_FORMAT_VERSION:
                    raise UnsupportedError(
                        f"{path}: state file format version {fmt}; this rwkv_ggml reads "
                        f"version {STATE_FORMAT_VERSION}"
                    )
                want_size = _HEADER_SIZE + 4 * n_floats
                if size != want_size:
                    what = "truncated" if size < want_size else "has trailing bytes"
                    raise ModelFormatError(
                        f"{path}: state file {what}: {size} bytes, the header announces "
                        f"{n_floats} floats ({want_size} bytes)"
                    )
                payload = f.read(4 * n_floats)
        except ModelIOError:
            raise
        except OSError as exc:
            raise ModelIOError(f"cannot read state file '{path}': {exc.strerror or exc}") from exc
        if len(payload) != 4 * n_floats:
            raise ModelFormatError(f"{path}: state file changed while being read (short read)")
        zeroed = head[:_CRC_OFFSET] + b"\0\0\0\0" + head[_CRC_OFFSET + 4 :]
        if zlib.crc32(payload, zlib.crc32(zeroed)) != crc:
            raise ModelFormatError(f"{path}: state file is corrupt (checksum mismatch)")
        # The checksum matched, so the fields are what save() wrote; still validate them, since a
        # hand-made file can have a valid checksum too.
        version = version_raw.rstrip(b"\0").decode("ascii", "replace")
        if version not in SUPPORTED_VERSIONS:
            raise ModelFormatError(f"{path}: unknown RWKV version {version!r} in state file")
        info = StateInfo(version, n_embed, n_layer, n_head, head_size, digest.hex())
        heads_ok = version == "4" or (head_size >= 1 and n_head * head_size == n_embed)
        if n_embed < 1 or n_layer < 1 or not heads_ok or info.state_size != n_floats:
            raise ModelFormatError(
                f"{path}: inconsistent state file header ({info.describe()}, {n_floats} floats)"
            )
        array = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        if model is not None:
            own = StateInfo.of(model)
            why = info.mismatch(own, strict)
            if why is not None:
                raise ModelFormatError(
                    f"{path}: state of another model ({why}): the file holds a state of "
                    f"{info.describe()}, the model '{model.path}' is {own.describe()}"
                )
            info = own
        return cls(array, info)


def _open_regular_file(path: pathlib.Path) -> int:
    """An fd of ``path`` opened for reading, after checking that it is a regular file.

    The open itself must not block: opening a FIFO for reading waits for a writer, forever if none
    comes, so it is opened non-blocking and checked with fstat on the descriptor (no stat-then-open
    race). Raises ModelIOError naming the path for a FIFO, a device, a socket or a directory.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(mode)
                else "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device or socket"
            )
            raise ModelIOError(f"cannot read state file '{path}': it is {kind}, not a regular file")
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
