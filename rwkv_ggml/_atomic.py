"""Writing a file atomically: into a temporary file beside the destination, renamed over it when
complete. A failure or Ctrl-C never leaves a half-written file or a stray temporary file, and an
existing file at the destination stays untouched until the new one is whole."""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from .errors import ModelIOError


def new_file_mode() -> int:
    """The permissions a plain ``open(path, 'w')`` would give (0o666 minus the umask, read without
    changing it). mkstemp creates 0o600 files, which other users could not read."""
    umask = 0o022
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    return 0o666 & ~umask


@contextmanager
def atomic_output(path: str | os.PathLike[str], what: str) -> Iterator[BinaryIO]:
    """``with atomic_output(path, "model file") as f: f.write(...)``: on normal exit the data is synced
    and renamed to ``path``; on any exception the temporary file is removed. OS errors become
    ModelIOError naming ``what`` and the path."""
    path = pathlib.Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ModelIOError(f"cannot create a temporary file next to '{path}': {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, new_file_mode())
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, ModelIOError):
            raise ModelIOError(f"cannot write {what} '{path}': {exc.strerror or exc}") from exc
        raise
