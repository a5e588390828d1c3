"""Loads the compiled extension (``_core``) and owns the conversion of engine statuses to exceptions.

The contract: this is the only module that imports ``_core``. The modules that may call its ``lib`` and
``ffi`` are the bindings: the engine binding (:mod:`rwkv_ggml.ggml` and the ``ggml_*`` modules it is split
into), row quantization (:mod:`rwkv_ggml.quantization`) and the tokenizer's C trie binding. Everything else
goes through them and sees Python objects and numpy arrays, never cdata (tests/engine/test_binding_contract.py
keeps it so).
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np

from . import errors

try:
    from ._core import ffi, lib  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover - only without a built extension
    raise ImportError(
        "rwkv_ggml's C engine (rwkv_ggml._core) is not built: install the package with `pip install .` "
        "(or run `python build.py` in a source checkout)"
    ) from exc

__all__ = ["STATUS_ERRORS", "check", "ffi", "float_ptr", "lib", "raise_status", "void_ptr"]

STATUS_ERRORS: dict[int, type[errors.RwkvGgmlError]] = {
    lib.RG_E_ARG: errors.EngineArgumentError,
    lib.RG_E_SHAPE: errors.ShapeError,
    lib.RG_E_TYPE: errors.DTypeError,
    lib.RG_E_NOMEM: errors.OutOfMemoryError,
    lib.RG_E_IO: errors.ModelIOError,
    lib.RG_E_FORMAT: errors.ModelFormatError,
    lib.RG_E_UNSUPPORTED: errors.UnsupportedError,
    lib.RG_E_BUSY: errors.BusyError,
    lib.RG_E_INTERNAL: errors.InternalError,
}


def raise_status(status: int, message: str) -> NoReturn:
    cls = STATUS_ERRORS.get(status, errors.InternalError)
    raise cls(message or f"engine call failed with status {status}")


def check(status: int, message_source: Any = None) -> None:
    """Raises the exception of a non-OK status, with the message read from the failed object."""
    if status == lib.RG_OK:
        return
    message = ""
    if callable(message_source):
        message = message_source()
    elif isinstance(message_source, str):
        message = message_source
    raise_status(status, message)


def c_string(p: Any) -> str:
    return ffi.string(p).decode("utf-8", "replace") if p != ffi.NULL else ""


def float_ptr(a: np.ndarray) -> Any:
    """A float* into a C-contiguous float32 array (no copy)."""
    return ffi.cast("float *", ffi.from_buffer(a, require_writable=False))


def void_ptr(a: np.ndarray, writable: bool = False) -> Any:
    return ffi.cast("void *", ffi.from_buffer(a, require_writable=writable))
