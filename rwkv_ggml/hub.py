"""RWKV checkpoints from the Hugging Face hub: downloaded, converted and quantized once, then loaded.

:func:`pretrained_model_file` is ``Model.from_pretrained`` and the command line's ``--model hf:...``
without the loading: it downloads a checkpoint with ``huggingface_hub`` (its cache, its offline mode
``HF_HUB_OFFLINE=1``, its token), converts it (:func:`rwkv_ggml.conversion.convert`) and quantizes it
(:func:`rwkv_ggml.quantization.quantize`) into our own cache, and returns the model file.

The converted file is keyed by the hash of the source file(s) and the dtype, so a new revision of a
checkpoint is converted again while an unchanged one (under another revision or repository name) is
not. Every file in the cache is written under a temporary name and renamed when complete, so an
interrupted conversion leaves nothing that a later run would mistake for a finished model.

The cache folder is ``$RWKV_GGML_CACHE``, else ``$XDG_CACHE_HOME/rwkv_ggml``, else
``~/.cache/rwkv_ggml``; converted models are under ``models/`` in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ModelFormatError, ModelIOError

__all__ = [
    "DEFAULT_DTYPE",
    "cache_folder",
    "checkpoint_candidates",
    "parse_hf_model",
    "pretrained_model_file",
]

DEFAULT_DTYPE = "Q8_0"
_CHECKPOINT_SUFFIXES = (".pth", ".safetensors", ".safetensors.index.json")
# one shard of a sharded safetensors checkpoint: loaded through its index, never alone
_SHARD = re.compile(r"-\d+-of-\d+\.safetensors$")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


def cache_folder() -> Path:
    """Where converted models are kept (see the module docstring)."""
    explicit = os.environ.get("RWKV_GGML_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rwkv_ggml"


def parse_hf_model(spec: str) -> tuple[str, str | None]:
    """``"hf:OWNER/NAME[/PATH/IN/REPO]"`` -> ``(repo_id, filename or None)``."""
    body = spec.removeprefix("hf:")
    parts = body.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1] or any(not p for p in parts[2:]):
        raise ValueError(f"{spec!r} is not hf:OWNER/NAME or hf:OWNER/NAME/FILE (a Hugging Face repository)")
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:]) or None


def checkpoint_candidates(files: list[str]) -> list[str]:
    """The files of a repository that are whole checkpoints: ``.pth`` and ``.safetensors`` files, and
    the index of a sharded safetensors checkpoint instead of its shards; failing those, the
    ``pytorch_model.bin`` of a transformers repository (older ones have no safetensors)."""
    found = sorted(f for f in files if f.endswith(_CHECKPOINT_SUFFIXES) and not _SHARD.search(f))
    return found or sorted(f for f in files if PurePosixPath(f).name == "pytorch_model.bin")


def pretrained_model_file(
    repo_id: str,
    filename: str | None = None,
    *,
    dtype: str = DEFAULT_DTYPE,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> Path:
    """The model file of checkpoint ``filename`` of hub repository ``repo_id`` converted to ``dtype``
    (f32, f16, Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0), downloading and converting it on first use.

    ``filename``: the checkpoint's path in the repository; may be omitted when the repository holds
    exactly one checkpoint (``.pth``, ``.safetensors`` or a sharded index), else a ValueError lists
    them. ``revision``: a branch, tag or commit (default: the main branch). ``cache_dir``: the
    ``huggingface_hub`` cache to download into (default: its own, ``HF_HUB_CACHE``); the converted
    models are then kept in its ``rwkv_ggml/models`` folder instead of :func:`cache_folder`'s.
    ``threads``: for quantizing. ``progress``: progress bars on stderr (default: when it is a
    terminal). An rwkv.cpp ``.bin`` or a GGUF model file named as ``filename`` is used as it is, whatever
    ``dtype`` says. Errors: ModelIOError when the hub cannot be reached or the file is not there
    (offline: not in the hub cache), ValueError for a bad argument or several candidate checkpoints,
    ModelFormatError for a repository without one, and the converter's errors for a checkpoint it
    cannot read.
    """
    from .fileformat import DType

    try:
        target = DType.from_name(dtype)
    except ValueError:
        raise ValueError(
            f"unknown dtype {dtype!r}; choose f32, f16, Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0"
        ) from None
    parse_hf_model(f"hf:{repo_id}")  # the repository id's shape, with the same message as hf:...
    hub_cache = None if cache_dir is None else os.fspath(cache_dir)
    if filename is None:
        filename = _only_checkpoint(repo_id, revision, hub_cache)
    local = _download(repo_id, filename, revision, hub_cache)
    parts = [local]
    if filename.endswith(".index.json"):
        parts += [_download(repo_id, shard, revision, hub_cache) for shard in _shards(local, filename)]
    if _is_model_file(local):
        return local
    key = hashlib.sha256("\n".join(f"{p.name}:{_content_hash(p)}" for p in parts).encode()).hexdigest()
    stem = PurePosixPath(filename).name.removesuffix(".index.json").rsplit(".", 1)[0]
    folder = (Path(cache_dir) / "rwkv_ggml" if cache_dir is not None else cache_folder()) / "models"
    out = folder / f"{repo_id.replace('/', '--')}--{stem}-{target.name}-{key[:16]}.bin"
    if out.is_file():
        return out
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelIOError(f"cannot create the model cache folder '{folder}': {exc.strerror or exc}") from exc
    _convert_into(local, out, target, threads, progress)
    return out


def _only_checkpoint(repo_id: str, revision: str | None, cache_dir: str | None) -> str:
    files = _repo_files(repo_id, revision, cache_dir)
    candidates = checkpoint_candidates(files)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelFormatError(
            f"the Hugging Face repository '{repo_id}' holds no checkpoint (.pth, .safetensors or a "
            f"sharded .safetensors.index.json) among its {len(files)} files; name the file: hf:{repo_id}/FILE"
        )
    listed = ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")
    raise ValueError(
        f"the Hugging Face repository '{repo_id}' holds {len(candidates)} checkpoints ({listed}); "
        f"choose one: filename=... or hf:{repo_id}/FILE"
    )


# Calls into huggingface_hub catch every Exception: besides its own errors and OSError, its HTTP transport
# raises that library's exception types (requests, httpx or httpx2, by hub version) for a network that
# cannot be reached; each becomes one ModelIOError naming the repository and the cause.


def _repo_files(repo_id: str, revision: str | None, cache_dir: str | None) -> list[str]:
    """The repository's file list: from the hub, or offline from the cached snapshot."""
    import huggingface_hub as hub
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return list(hub.list_repo_files(repo_id, revision=revision))
    except Exception as online_error:
        # offline (HF_HUB_OFFLINE=1, no network): the files of the snapshot already in the hub cache
        try:
            snapshot = Path(
                hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
            )
        except (OSError, ValueError, EntryNotFoundError):
            raise _hub_error(repo_id, None, online_error) from online_error
        return [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]


def _download(repo_id: str, filename: str, revision: str | None, cache_dir: str | None) -> Path:
    import huggingface_hub as hub

    try:
        return Path(hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except Exception as exc:
        raise _hub_error(repo_id, filename, exc) from exc


def _hub_error(repo_id: str, filename: str | None, exc: BaseException) -> ModelIOError:
    what = (
        f"'{filename}' of the Hugging Face repository '{repo_id}'"
        if filename
        else f"the Hugging Face repository '{repo_id}'"
    )
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    hint = " (HF_HUB_OFFLINE is set: only files already in the hub cache can be used)" if offline else ""
    return ModelIOError(f"cannot get {what}{hint}: {detail}")


def _shards(index: Path, filename: str) -> list[str]:
    """The shard paths (in the repository) that a sharded safetensors index names."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted({str(v) for v in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelFormatError(f"{index}: not a safetensors shard index ({exc})") from exc
    folder = PurePosixPath(filename).parent
    for name in names:
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise ModelFormatError(f"{index}: shard name {name!r} points outside the repository")
    return [str(folder / name) if str(folder) != "." else name for name in names]


def _is_model_file(path: Path) -> bool:
    """Whether a downloaded file is already a model file we load as it is: rwkv.cpp ``.bin`` or GGUF (its
    magic bytes)."""
    from .fileformat import FILE_MAGIC

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ModelIOError(f"cannot read '{path}': {exc.strerror or exc}") from exc
    return len(head) == 4 and (int.from_bytes(head, "little") == FILE_MAGIC or head == b"GGUF")


def _content_hash(path: Path) -> str:
    """The file's hash: the name of its blob in the hub cache (the sha256 of an LFS file, the git hash
    of a small one) where the snapshot links to one, else the sha256 of its bytes."""
    blob = path.resolve().name
    if _SHA.match(blob):
        return blob
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    except OSError as exc:
        raise ModelIOError(f"cannot read '{path}': {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _convert_into(src: Path, out: Path, target: Any, threads: int | None, progress: bool | None) -> None:
    """Converts ``src`` to ``out`` in ``target`` (a DType); quantized targets go through a temporary
    F16 file. ``convert`` and ``quantize`` write atomically themselves, so ``out`` appears whole or
    not at all."""
    from .conversion import convert
    from .quantization import quantize

    if not target.is_quantized:
        convert(src, out, target.name.lower(), progress=progress)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".f16.tmp", dir=out.parent)
    os.close(fd)
    try:
        convert(src, tmp, "f16", progress=progress)
        quantize(tmp, out, target, threads=threads, progress=progress)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
