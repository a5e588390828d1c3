"""The engine's tensor types, read from the compiled engine: ids, names, block sizes and bytes per block.

The ids are the ``rg_type`` enum of the engine header, so they are defined once (they equal the file
type ids of formats.md §2; :mod:`rwkv_ggml.fileformat` keeps its own table to read files without the
engine, and a test checks that the two agree). Part of the engine binding: :mod:`rwkv_ggml.ggml`
re-exports every name here.
"""

from __future__ import annotations

import numpy as np

from ._lib import c_string, lib
from .ggml_ops import C_INT, as_int

F32: int = int(lib.RG_TYPE_F32)
F16: int = int(lib.RG_TYPE_F16)
Q4_0: int = int(lib.RG_TYPE_Q4_0)
Q4_1: int = int(lib.RG_TYPE_Q4_1)
Q5_0: int = int(lib.RG_TYPE_Q5_0)
Q5_1: int = int(lib.RG_TYPE_Q5_1)
Q8_0: int = int(lib.RG_TYPE_Q8_0)
Q4_K: int = int(lib.RG_TYPE_Q4_K)
Q5_K: int = int(lib.RG_TYPE_Q5_K)
Q6_K: int = int(lib.RG_TYPE_Q6_K)
I32: int = int(lib.RG_TYPE_I32)

# The types a tensor built through this binding can have (the engine-internal activation type is left out).
TENSOR_TYPES: tuple[int, ...] = (F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, I32)

NUMPY_TYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): F32,
    np.dtype(np.float16): F16,
    np.dtype(np.int32): I32,
}
TYPE_NUMPY: dict[int, np.dtype] = {t: d for d, t in NUMPY_TYPES.items()}


def is_valid_type(t: int) -> bool:
    return bool(lib.rg_type_is_valid(as_int(t, "is_valid_type: type id", *C_INT)))


def type_name(t: int) -> str:
    """The engine's name of a type id ("F32", "Q5_1", ...; "invalid" for an unknown id)."""
    return c_string(lib.rg_type_name(as_int(t, "type_name: type id", *C_INT)))


def block_size(t: int) -> int:
    """Elements per block: 1 for F32/F16/I32, the block length for quantized types (0 for an unknown id)."""
    return int(lib.rg_type_block_size(as_int(t, "block_size: type id", *C_INT)))


def block_bytes(t: int) -> int:
    """Bytes per block (0 for an unknown id)."""
    return int(lib.rg_type_block_bytes(as_int(t, "block_bytes: type id", *C_INT)))


def is_quantized(t: int) -> bool:
    return bool(lib.rg_type_is_quantized(as_int(t, "is_quantized: type id", *C_INT)))
