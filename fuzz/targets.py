"""The fuzz targets: one function per input format, each taking the fuzzer's bytes.

Each writes the bytes to a file (in a private temporary folder, on tmpfs where there is one),
drives the library through its public entry points only, as a user would, and lets exceptions
propagate: :mod:`fuzz.harness` decides which ones are findings. Keeping to public names
(``rwkv_ggml.fileformat.read_model_file``, ``rwkv_ggml.Model``, ``rwkv_ggml.checkpoint.load_checkpoint``,
``rwkv_ggml.conversion.plan_conversion`` / ``convert_state_dict``, ``rwkv_ggml.state.State``) keeps the
targets valid while the modules behind them are reorganised.
"""

from __future__ import annotations

import atexit
import contextlib
import pathlib
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["TARGETS", "fuzz_bin", "fuzz_gguf", "fuzz_pth", "fuzz_safetensors", "fuzz_state", "resolve"]

_workdir: pathlib.Path | None = None


def _scratch() -> pathlib.Path:
    """This process's private folder for input files, removed at exit."""
    global _workdir
    if _workdir is None:
        shm = pathlib.Path("/dev/shm")
        base = str(shm) if shm.is_dir() else None
        _workdir = pathlib.Path(tempfile.mkdtemp(prefix="rwkv-ggml-fuzz-", dir=base))
        atexit.register(shutil.rmtree, _workdir, True)
    return _workdir


@contextlib.contextmanager
def input_file(data: bytes, name: str) -> Iterator[pathlib.Path]:
    """``data`` as a file called ``name``, deleted afterwards."""
    path = _scratch() / name
    path.write_bytes(data)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def fuzz_bin(data: bytes) -> None:
    """An rwkv.cpp ``.bin``: parse it, view every tensor, load it as a Model and evaluate a token.

    The weight placement alternates with the input's length, so both loaders are covered."""
    from rwkv_ggml import Model
    from rwkv_ggml.fileformat import read_model_file

    with input_file(data, "model.bin") as path:
        with read_model_file(path) as mf:
            for name in mf.tensors:
                mf.array(name)
        placement = "mmap" if len(data) % 2 else "hugepage"
        with Model(path, threads=1, placement=placement) as model:
            logits, state = model.eval(0)
            model.eval(model.n_vocab - 1, state, logits_out=logits)


def fuzz_gguf(data: bytes) -> None:
    """A GGUF file: parse the container, view every tensor, map it as an RWKV model, load it as a Model
    (both placements, alternating with the input's length) and evaluate a token."""
    from rwkv_ggml import Model
    from rwkv_ggml.gguf_format import read_gguf
    from rwkv_ggml.gguf_model import read_gguf_model

    with input_file(data, "model.gguf") as path:
        with read_gguf(path) as gf:
            for name in gf.tensors:
                gf.raw(name)
        with read_gguf_model(path) as mf:
            for name in mf.tensors:
                mf.array(name)
        placement = "mmap" if len(data) % 2 else "hugepage"
        with Model(path, threads=1, placement=placement) as model:
            logits, state = model.eval(0)
            model.eval(model.n_vocab - 1, state, logits_out=logits)
            if model.vocab_table is not None:  # the file's own vocabulary: decode every token
                model.detokenize(list(range(model.n_vocab)))


def _checkpoint(data: bytes, name: str) -> None:
    """A checkpoint: open it, read every tensor, plan the conversion and run it to the end."""
    from rwkv_ggml.checkpoint import load_checkpoint
    from rwkv_ggml.conversion import convert_state_dict, plan_conversion

    with input_file(data, name) as path, load_checkpoint(path) as ckpt:
        for tensor in ckpt.values():
            tensor.numpy()
        plan_conversion(ckpt)
        for _ in convert_state_dict(ckpt, "f16" if len(data) % 2 else "f32"):
            pass


def fuzz_pth(data: bytes) -> None:
    """A PyTorch zip checkpoint (its restricted unpickler, zip reader and tensor views)."""
    _checkpoint(data, "model.pth")


def fuzz_safetensors(data: bytes) -> None:
    """A safetensors checkpoint (its JSON header and tensor views)."""
    _checkpoint(data, "model.safetensors")


# State file layout (state.py's module docstring): the CRC-32 of the file with these bytes zeroed.
_STATE_CRC = slice(12, 16)
_STATE_HEADER_SIZE = 96


def with_state_checksum(data: bytes) -> bytes:
    """``data`` with its state-file checksum recomputed. Almost every mutation would otherwise stop
    at the checksum test; with it fixed, the fuzzer reaches the header validation behind it."""
    if len(data) < _STATE_HEADER_SIZE:
        return data
    zeroed = data[: _STATE_CRC.start] + b"\0\0\0\0" + data[_STATE_CRC.stop :]
    return data[: _STATE_CRC.start] + struct.pack("<I", zlib.crc32(zeroed)) + data[_STATE_CRC.stop :]


_state_model: Any = None


def state_model() -> Any:
    """The model state inputs are also loaded against (built once per process from a tiny model)."""
    global _state_model
    if _state_model is None:
        from rwkv_ggml import Model

        from .corpus import state_model_path

        _state_model = Model(state_model_path(_scratch()), threads=1)
        atexit.register(_state_model.close)
    return _state_model


def fuzz_state(data: bytes) -> None:
    """A state file: load it alone, then against a model (strict and not), then use it."""
    from rwkv_ggml.state import State

    model = state_model()
    with input_file(with_state_checksum(data), "state.bin") as path:
        state = State.load(path)
        state.info.describe()
        state.info.mismatch(state.info)
        lenient = State.load(path, model, strict=False)
        model.eval(0, lenient)
        State.load(path, model)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "bin": fuzz_bin,
    "gguf": fuzz_gguf,
    "pth": fuzz_pth,
    "safetensors": fuzz_safetensors,
    "state": fuzz_state,
}


def resolve(spec: str) -> Callable[[bytes], None]:
    """A target by name, or ``module:function`` / ``path/to/file.py:function`` for any other (the
    harness tests plant some)."""
    if spec in TARGETS:
        return TARGETS[spec]
    if ":" not in spec:
        raise ValueError(f"unknown fuzz target {spec!r}; use one of {', '.join(TARGETS)} or module:function")
    import importlib
    import importlib.util

    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        where = importlib.util.spec_from_file_location(pathlib.Path(module_name).stem, module_name)
        if where is None or where.loader is None:
            raise ValueError(f"cannot load fuzz target module {module_name!r}")
        module = importlib.util.module_from_spec(where)
        where.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    target: Callable[[bytes], None] = getattr(module, attr)
    return target
