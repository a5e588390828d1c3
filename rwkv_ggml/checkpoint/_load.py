"""Opening a checkpoint: sniff the file type (or pick one from a folder) and hand it to its reader."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelFormatError, ModelIOError, UnsupportedError
from ._container import Checkpoint
from ._pth import _open_pth
from ._safetensors import _open_safetensors, _open_sharded


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
