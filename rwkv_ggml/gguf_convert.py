"""``rwkv-ggml convert x.gguf y.bin``: an RWKV-6/RWKV-7 GGUF model written as an rwkv.cpp ``.bin``.

The tensors are those :func:`rwkv_ggml.gguf_model.read_gguf_model` presents (our names and shapes,
the v6 rescaling undone, BF16 widened). Blocks of Q4_0..Q8_0 are copied as they are (they are the
``.bin`` blocks, formats.md §7.1); float tensors become ``dtype`` where formats.md §4.1 stores that
tensor as FP16 in an FP16 file, else F32, as the checkpoint converter writes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .conversion import stored_as_fp16
from .errors import ModelFormatError
from .fileformat import DType, write_model_file
from .gguf_model import GgufModelFile, read_gguf_model

__all__ = ["block_types", "convert_gguf"]


def convert_gguf(src: str | os.PathLike[str], dst: str | os.PathLike[str], dtype: str = "f16") -> None:
    """Write GGUF model ``src`` as rwkv.cpp file ``dst`` (written through a temporary file and renamed).

    ``dtype``: "f16" or "f32", the type of the float matrices (quantize the result for a block type).
    Raises what :func:`~rwkv_ggml.gguf_model.read_gguf_model` raises, and ModelFormatError for a value
    beyond the F16 range when ``dtype`` is "f16".
    """
    target = DType.from_name(dtype)
    if target not in (DType.F32, DType.F16):
        raise ValueError(f"convert_gguf writes f32 or f16 float tensors, not {dtype!r}")
    with read_gguf_model(src) as mf:
        blocks = {rec.dtype for rec in mf.tensors.values() if rec.dtype.is_quantized}
        file_type = (
            max(blocks, key=lambda d: sum(r.dtype == d for r in mf.tensors.values())) if blocks else target
        )
        write_model_file(
            dst,
            n_vocab=mf.n_vocab,
            n_embed=mf.n_embed,
            n_layer=mf.n_layer,
            data_type=file_type,
            tensors=_tensors(mf, target),
        )


def block_types(src: str | os.PathLike[str]) -> list[str]:
    """The block-quantized types among a GGUF model's tensors (names, sorted)."""
    with read_gguf_model(src) as mf:
        return sorted({rec.dtype.name for rec in mf.tensors.values() if rec.dtype.is_quantized})


def _tensors(mf: GgufModelFile, target: DType) -> Iterator[Any]:
    for name, rec in mf.tensors.items():
        data = mf.array(name)
        if rec.dtype.is_quantized:
            yield name, rec.dtype, rec.ne, np.ascontiguousarray(data)
            continue
        values = np.asarray(data, dtype=np.float32)
        if target == DType.F16 and stored_as_fp16(name, len(rec.ne)):
            with np.errstate(over="ignore"):
                half = values.astype(np.float16)
            if not np.all(np.isfinite(half)) and np.all(np.isfinite(values)):
                raise ModelFormatError(
                    f"{mf.path}: tensor '{name}' has values beyond the F16 range (65504); "
                    "convert with --dtype f32"
                )
            yield name, half
        else:
            yield name, values
