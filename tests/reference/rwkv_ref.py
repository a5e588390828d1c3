"""Entry point of the float64 reference models: version detection and the ``reference_model`` factory.

Usage::

    from tests.reference.rwkv_ref import reference_model
    ref = reference_model(weights, n_layer)          # weights: name -> array as stored in a .bin
    logits, state = ref.eval(34, ref.init_state())

Detection follows architecture.md §1.1 (rwkv.cpp, later checks win) refined by the v5 feature
detection of §1.3, so official-5.1 checkpoints (gate + per-head decay) get their own name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .common import ReferenceModel
from .rwkv_v4 import RwkvV4, wkv4_step
from .rwkv_v5 import RwkvV5, v5_variant, wkv5_step
from .rwkv_v6 import RwkvV6
from .rwkv_v7 import RwkvV7, wkv7_step

VERSIONS = ("4", "5.1", "5.1-gated", "5.2", "6", "7")


def detect_version(weights: Mapping[str, Any]) -> str:
    """The version name of a weight dict: "4", "5.1", "5.1-gated", "5.2", "6" or "7"."""
    if "blocks.0.att.r_k" in weights:  # §1.1: v7 wins over everything
        return "7"
    if "blocks.0.att.time_maa_x" in weights:
        return "6"
    if "blocks.0.att.ln_x.weight" in weights:
        return v5_variant(weights)
    return "4"


def reference_model(
    weights: Mapping[str, Any], n_layer: int, *, gn_eps: float | None = None
) -> ReferenceModel:
    """Build the float64 reference for ``weights`` (NumPy order, preprocessed as in an rwkv.cpp file).

    ``gn_eps`` overrides the GroupNorm epsilon of v5+ (default: rwkv.cpp's, §9.2: v5 1e-5, v6/v7
    64e-5); it is meaningless for v4, which has no GroupNorm, and is then ignored.
    """
    version = detect_version(weights)
    if version == "4":
        return RwkvV4(weights, n_layer)
    if version == "6":
        return RwkvV6(weights, n_layer, gn_eps=gn_eps)
    if version == "7":
        return RwkvV7(weights, n_layer, gn_eps=gn_eps)
    return RwkvV5(weights, n_layer, gn_eps=gn_eps)


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], int]:
    """(weights as stored, n_layer) of an rwkv.cpp `.bin` file, for ``reference_model``.

    F32 / F16 tensors come back as float32 / float16 arrays (copies, so the file is not held
    open); quantized tensors are decoded with ``quant_ref.dequantize_ref`` into float32, i.e.
    the reference then computes with exactly the weights the file encodes ("plain route").
    """
    from rwkv_ggml.fileformat import read_model_file  # lazy: the models themselves need no file I/O

    weights: dict[str, np.ndarray] = {}
    with read_model_file(path) as model_file:
        for name, record in model_file.tensors.items():
            data = model_file.array(name)
            if record.dtype.is_quantized:
                from .quant_ref import dequantize_ref

                weights[name] = dequantize_ref(data, record.dtype, record.ne)
            else:
                weights[name] = np.array(data, copy=True)
        return weights, model_file.n_layer


def load_reference_model(path: str | os.PathLike[str], *, gn_eps: float | None = None) -> ReferenceModel:
    """``reference_model`` of the weights in an rwkv.cpp `.bin` file (see ``load_weights``)."""
    weights, n_layer = load_weights(path)
    return reference_model(weights, n_layer, gn_eps=gn_eps)


__all__ = [
    "VERSIONS",
    "ReferenceModel",
    "detect_version",
    "load_reference_model",
    "load_weights",
    "reference_model",
    "wkv4_step",
    "wkv5_step",
    "wkv7_step",
]
