"""rwkv_ggml: RWKV language models on the CPU through our own ggml-style C engine.

The heavy parts (the compiled engine, the model) are imported lazily on first use so that
light modules (tokenizers, sampling, file parsing) work even before the engine is needed.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    BusyError,
    ClosedError,
    DTypeError,
    EngineArgumentError,
    InternalError,
    ModelFormatError,
    ModelIOError,
    OutOfMemoryError,
    RwkvGgmlError,
    ShapeError,
    UnsupportedError,
)

__version__ = "0.1.0"

_LAZY = {
    "Model": ("rwkv_ggml.model", "Model"),
    "State": ("rwkv_ggml.state", "State"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'rwkv_ggml' has no attribute {name!r}")


__all__ = [
    "BusyError",
    "ClosedError",
    "DTypeError",
    "EngineArgumentError",
    "InternalError",
    "Model",
    "ModelFormatError",
    "ModelIOError",
    "OutOfMemoryError",
    "RwkvGgmlError",
    "ShapeError",
    "State",
    "UnsupportedError",
]
