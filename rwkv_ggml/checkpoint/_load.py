"""Opening a checkpoint: sniff the file type (or pick one from a folder) and hand it to its reader.

This is the readers' boundary: whatever a malformed file makes the standard library raise
underneath (json, struct, zipfile, pickle, numpy) leaves here as a ModelFormatError naming the
file, and the checkpoint is closed again.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelFormatError, ModelIOError, RwkvGgmlError, UnsupportedError
from ._container import Checkpoint, open_regular_file
from ._pth import _open_pth
from ._safetensors import _open_safetensors, _open_sharded
from ._tensor import _short

# What a malformed file can make the libraries under the readers raise. MemoryError is not
# among them: every size is checked against the file before anything is allocated, so a
# MemoryError is a real shortage and stays one.
_MALFORMED = (
    ValueError,  # also UnicodeDecodeError, json.JSONDecodeError
    TypeError,
    LookupError,  # KeyError, IndexError
    AttributeError,
    ArithmeticError,  # OverflowError
    RecursionError,
    NotImplementedError,  # zipfile: an unknown "version needed" or compression method
    EOFError,
    struct.error,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
)

# Enough of the start of a file to tell the formats apart (a tar header's magic is at 257).
_SNIFF_BYTES = 262


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open an RWKV checkpoint for lazy, torch-free reading.

    Accepts a PyTorch zip ``.pth`` (any extension; the type is sniffed from the content),
    a ``.safetensors`` file, a ``*.safetensors.index.json`` of a sharded Hugging Face
    checkpoint, or a directory holding one of these. Raises ``ModelIOError`` when the file
    cannot be opened or is not a regular file (a FIFO would block), ``ModelFormatError`` when it
    is malformed (naming the file and the problem) and ``UnsupportedError`` for legacy (pre-1.6,
    non-zip) PyTorch files.
    """
    p = Path(path)
    if p.is_dir():
        p = _pick_from_directory(p)
    if p.name.endswith(".index.json"):
        return _read_into(Checkpoint(p, "safetensors"), lambda ckpt: _open_sharded(ckpt, p))
    with open_regular_file(p) as f:
        try:
            head = f.read(_SNIFF_BYTES)
        except OSError as e:
            raise ModelIOError(f"cannot read checkpoint '{p}': {e.strerror or e}") from e
    kind = sniff_checkpoint(p.name, head)
    if kind == "pth":
        return _read_into(Checkpoint(p, "pth"), lambda ckpt: _open_pth(ckpt, p))
    if kind == "safetensors":
        return _read_into(Checkpoint(p, "safetensors"), lambda ckpt: _open_safetensors(ckpt, [p]))
    raise _unknown_format(p, head)


#: What :func:`sniff_checkpoint` returns, in words for messages.
CHECKPOINT_KINDS = {
    "pth": "a PyTorch checkpoint",
    "safetensors": "a safetensors checkpoint",
    "index": "the index of a sharded safetensors checkpoint",
    "legacy-pth": "a legacy (pre-1.6, non-zip) PyTorch checkpoint",
}


def sniff_checkpoint(name: str, head: bytes) -> str | None:
    """The checkpoint format a file's name and first bytes (at least 262 for every kind) show: "pth",
    "safetensors", "index" (a ``*.safetensors.index.json``), "legacy-pth", or None."""
    if name.endswith(".index.json"):
        return "index"
    if head[:4] == b"PK\x03\x04":
        return "pth"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" or head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar":
        return "legacy-pth"
    return None


def find_checkpoint_in(folder: str | os.PathLike[str]) -> Path | None:
    """The checkpoint file :func:`load_checkpoint` would read from ``folder``, or None if it holds none
    (or several)."""
    try:
        return _pick_from_directory(Path(folder))
    except (ModelFormatError, ModelIOError):
        return None


def _read_into(ckpt: Checkpoint, read: Callable[[Checkpoint], None]) -> Checkpoint:
    """Run one reader on ``ckpt``; on any failure close it and raise a typed error naming the file."""
    try:
        read(ckpt)
    except RwkvGgmlError as e:
        ckpt.close()
        named = [str(f) for f in (ckpt.path, *ckpt._paths)]
        if isinstance(e, ModelFormatError) and not any(str(e).startswith(n) for n in named):
            raise ModelFormatError(f"{ckpt.path}: {e}") from e
        raise
    except _MALFORMED as e:
        ckpt.close()
        where = ckpt._paths[-1] if ckpt._paths else ckpt.path  # the file being read when it failed
        raise ModelFormatError(
            f"{where}: malformed {ckpt.format} checkpoint ({type(e).__name__}: {_short(e)})"
        ) from e
    except OSError as e:
        ckpt.close()
        raise ModelIOError(f"cannot read checkpoint '{ckpt.path}': {e.strerror or e}") from e
    except BaseException:
        ckpt.close()
        raise
    return ckpt


def _unknown_format(p: Path, head: bytes) -> Exception:
    if not head:
        return ModelFormatError(f"{p}: file is empty")
    if sniff_checkpoint(p.name, head) == "legacy-pth":
        return UnsupportedError(
            f"{p}: legacy (pre-1.6, non-zip) PyTorch checkpoint; re-save it with a recent PyTorch "
            "(torch.save(torch.load(path), new_path)) and convert that file"
        )
    if head[:4] == b"fmgg":
        return ModelFormatError(f"{p}: this is already an rwkv.cpp model file (.bin), not a checkpoint")
    return ModelFormatError(
        f"{p}: not a PyTorch zip checkpoint (.pth) or safetensors file (first bytes {head[:8].hex()})"
    )


def _pick_from_directory(d: Path) -> Path:
    """A directory: prefer a shard index, then a single safetensors file, then a single .pth."""
    for pattern in ("*.safetensors.index.json", "*.safetensors", "*.pth"):
        try:
            found = sorted(d.glob(pattern))
        except OSError as e:
            raise ModelIOError(f"cannot list checkpoint folder '{d}': {e.strerror or e}") from e
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ModelFormatError(
                f"{d}: several {pattern} files ({', '.join(f.name for f in found)}); pass one of them"
            )
    raise ModelFormatError(f"{d}: no .safetensors, .safetensors.index.json or .pth checkpoint in this folder")


def convert_hint(path: Path, head: bytes | None) -> str | None:
    """For a checkpoint (a file whose first bytes are ``head``, or a folder if ``head`` is None) given
    where a model file is expected: a message with the command that converts it; else None."""
    import shlex

    if head is None:
        found = find_checkpoint_in(path)
        if found is None:
            return None
        what = f"a checkpoint folder (holding {found.name})"
        stem = path.resolve().name or "model"
    else:
        kind = sniff_checkpoint(path.name, head)
        if kind is None:
            return None
        what = CHECKPOINT_KINDS[kind]
        if kind == "legacy-pth":
            return (
                f"{path} is {what}, not an rwkv.cpp model file: re-save it with a recent PyTorch "
                f"(torch.save(torch.load(path), new_path)), then convert it with `rwkv-ggml convert`"
            )
        stem = path.name.removesuffix(".index.json").removesuffix(".safetensors").removesuffix(".pth")
        stem = stem if stem != path.name else path.stem
    dst = path.parent / f"{stem}.bin"
    if dst == path:
        dst = path.parent / f"{stem}-converted.bin"
    src_arg, dst_arg = shlex.quote(str(path)), shlex.quote(str(dst))
    return (
        f"{path} is {what}, not an rwkv.cpp model file: convert it with `rwkv-ggml convert {src_arg} "
        f"{dst_arg}` (add `--dtype Q8_0` or `--dtype Q4_0` to quantize it too), then load {dst_arg}"
    )
