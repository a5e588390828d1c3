"""The :class:`Checkpoint` mapping: official name -> :class:`LazyTensor`, over memory-mapped files."""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ClosedError, ModelFormatError, ModelIOError
from ._tensor import LazyTensor, _check_expansion, _Spec
from .layouts import _to_official

if TYPE_CHECKING:
    from typing_extensions import Self


def open_regular_file(path: Path) -> IO[bytes]:
    """Open a checkpoint file for reading, refusing anything but a regular file.

    A FIFO would block ``open`` (and every read) forever and a device or directory has no
    file contents, so the file is opened without blocking and checked before anything is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise ModelIOError(f"cannot open checkpoint '{path}': {e.strerror or e}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ModelIOError(f"checkpoint '{path}' is not a regular file (a pipe, device or folder)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
        self._paths: list[Path] = []  # every file mapped, in order (several for a sharded checkpoint)
        self._maps: list[mmap.mmap] = []
        self._files: list[Any] = []
        self._closed = False
        self._expanded = 0  # elements declared beyond their storage so far (expanded views)

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Construction helpers
    def _map_file(self, path: Path) -> mmap.mmap:
        handle = open_regular_file(path)
        self._files.append(handle)
        self._paths.append(path)
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise ModelFormatError(f"{path}: file is empty")
        try:
            mm = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise ModelIOError(f"cannot map checkpoint '{path}' into memory: {e}") from e
        self._maps.append(mm)
        return mm

    def _add(self, source_name: str, spec: _Spec, file: Path) -> None:
        self._expanded += _check_expansion(spec, f"{file}: tensor '{source_name}'", self._expanded)
        try:
            name, spec, reshape = _to_official(self.layout, source_name, spec)
        except ModelFormatError as e:
            raise ModelFormatError(f"{file}: {e}") from e
        if name in self._tensors:
            raise ModelFormatError(
                f"{file}: tensors '{self._tensors[name].source_name}' and '{source_name}' "
                f"both map to '{name}'"
            )
        self._tensors[name] = LazyTensor(name, source_name, spec, self, reshape)
