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
    "Model": ("rwkv_ggml.api", "Model"),
    "State": ("rwkv_ggml.state", "State"),
    "Tokenizer": ("rwkv_ggml.tokenizer", "Tokenizer"),
    "SamplingParams": ("rwkv_ggml.sampling", "SamplingParams"),
    "Sampler": ("rwkv_ggml.sampling", "Sampler"),
    "quantize": ("rwkv_ggml.quantize", "quantize"),
    "convert": ("rwkv_ggml.convert", "convert"),
    "merge_lora": ("rwkv_ggml.convert", "merge_lora"),
    "generate": ("rwkv_ggml.generate", "generate"),
    "complete": ("rwkv_ggml.generate", "complete"),
    "embed": ("rwkv_ggml.generate", "embed"),
    "Generation": ("rwkv_ggml.generate", "Generation"),
    "ChatSession": ("rwkv_ggml.generate", "ChatSession"),
    "default_model_path": ("rwkv_ggml.generate", "default_model_path"),
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
