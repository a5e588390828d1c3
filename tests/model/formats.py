"""Test helper: a model file in every format, made from an F32 file (F16 as rwkv.cpp's converter would
write it, the block types with our quantizer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml.fileformat import DType, read_model_file, write_model_file
from tests.reference.random_models import stored_as_fp16

FORMATS = ["F32", "F16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"]

_cache: dict[tuple[str, str], Path] = {}


def to_f16_file(src: Path, dst: Path) -> Path:
    with read_model_file(src) as mf:
        tensors = []
        for name in mf.tensors:
            arr = np.array(mf.array(name))
            tensors.append((name, arr.astype(np.float16) if stored_as_fp16(name, arr) else arr))
        write_model_file(
            dst,
            n_vocab=mf.n_vocab,
            n_embed=mf.n_embed,
            n_layer=mf.n_layer,
            data_type=DType.F16,
            tensors=tensors,
        )
    return dst


def model_in_format(f32_path: Path, fmt: str, factory: pytest.TempPathFactory) -> Path:
    """f32_path converted to fmt (cached per session)."""
    if fmt == "F32":
        return f32_path
    key = (str(f32_path), fmt)
    if key not in _cache:
        dst = factory.mktemp("fmt") / f"{f32_path.stem}-{fmt}.bin"
        if fmt == "F16":
            to_f16_file(f32_path, dst)
        else:
            from rwkv_ggml.quantization import quantize

            quantize(f32_path, dst, fmt, threads=2, progress=False)
        _cache[key] = dst
    return _cache[key]
