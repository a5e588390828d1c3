"""rwkv_ggml: RWKV language models on the CPU through our own ggml-style C engine.

The heavy parts (the compiled engine, the model) are imported lazily on first use so that
light modules (tokenizers, sampling, file parsing) work even before the engine is needed.

A lazily exported name must never be the name of a submodule: importing a submodule sets the
package attribute of that name to the module, so ``rwkv_ggml.quantize`` would turn from the
function into the module as soon as anything imported ``rwkv_ggml.quantize`` the module
(tests/package/test_public_names.py checks that no name collides).
"""

from __future__ import annotations

from typing import Any

from .errors import (
    BusyError,
    ClosedError,
    ConstraintError,
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
    "quantize": ("rwkv_ggml.quantization", "quantize"),
    "convert": ("rwkv_ggml.conversion", "convert"),
    "merge_lora": ("rwkv_ggml.conversion", "merge_lora"),
    "generate": ("rwkv_ggml.generation", "generate"),
    "complete": ("rwkv_ggml.generation", "complete"),
    "embed": ("rwkv_ggml.generation", "embed"),
    "Generation": ("rwkv_ggml.generation", "Generation"),
    "ChatSession": ("rwkv_ggml.chat_session", "ChatSession"),
    "ChatTemplate": ("rwkv_ggml.chat_format", "ChatTemplate"),
    "StateBank": ("rwkv_ggml.batch", "StateBank"),
    "generate_batch": ("rwkv_ggml.batch_generation", "generate_batch"),
    "BatchGenerator": ("rwkv_ggml.batch_generation", "BatchGenerator"),
    "default_model_path": ("rwkv_ggml.generation", "default_model_path"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value  # bound once: later lookups no longer come here
        return value
    raise AttributeError(f"module 'rwkv_ggml' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [  # every error class and every name of _LAZY (a test checks that they agree)
    "BatchGenerator",
    "BusyError",
    "ChatSession",
    "ChatTemplate",
    "ClosedError",
    "ConstraintError",
    "DTypeError",
    "EngineArgumentError",
    "Generation",
    "InternalError",
    "Model",
    "ModelFormatError",
    "ModelIOError",
    "OutOfMemoryError",
    "RwkvGgmlError",
    "Sampler",
    "SamplingParams",
    "ShapeError",
    "State",
    "StateBank",
    "Tokenizer",
    "UnsupportedError",
    "complete",
    "convert",
    "default_model_path",
    "embed",
    "generate",
    "generate_batch",
    "merge_lora",
    "quantize",
]
