"""The file format's type table (fileformat.DType, which reads files without the engine) agrees with the
engine's (rwkv_ggml.ggml, read from the engine header through the binding): ids, names, block sizes and
bytes per block."""

from __future__ import annotations

import pytest

from rwkv_ggml import ggml, ggml_types
from rwkv_ggml.fileformat import DType


@pytest.mark.parametrize("dtype", list(DType), ids=lambda d: d.name)
def test_each_file_type_is_the_engine_type_of_the_same_name(dtype: DType) -> None:
    engine_id = getattr(ggml, dtype.name)
    assert engine_id == int(dtype)
    assert ggml.type_name(engine_id) == dtype.name
    assert ggml.block_size(engine_id) == dtype.block_size
    assert ggml.block_bytes(engine_id) == dtype.type_size
    assert ggml.is_quantized(engine_id) == dtype.is_quantized


def test_the_engine_has_no_file_type_the_file_format_lacks() -> None:
    # I32 holds token ids inside graphs; it is never a tensor of a model file.
    assert {int(d) for d in DType} == set(ggml.TENSOR_TYPES) - {ggml.I32}
    assert (
        ggml.type_name(ggml.I32) == "I32"
        and ggml.block_size(ggml.I32) == 1
        and ggml.block_bytes(ggml.I32) == 4
    )


def test_the_binding_takes_its_ids_from_the_engine() -> None:
    from rwkv_ggml._lib import lib

    for name in ("F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "I32"):
        assert getattr(ggml, name) == getattr(ggml_types, name) == getattr(lib, f"RG_TYPE_{name}")
    assert not ggml.is_valid_type(max(ggml.TENSOR_TYPES) + 100)
