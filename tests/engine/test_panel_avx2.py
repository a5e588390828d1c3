"""The AVX2 level's column-panel kernels (simd/k_gemm_panel_avx2.c; simd/k_quant_panel_avx2.c where the
quantized panels are built): mul_mat of many columns at level 1 against the float64 product, for odd shapes
(partial tiles of rows, partial panels of columns, several groups of panels, k walked in blocks with a tail),
every thread count (bit-identical), and bit for bit against the AVX-512 level where the CPU has it (each
output lane is one multiply-add chain over k in order at both levels).
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml

from .helpers import assert_norm_close, bits_equal, rand
from .test_ops_matmul import TOL, reference

pytestmark = pytest.mark.skipif(ggml.simd_max_level() < 1, reason="this CPU has no AVX2")

# (M, K, T): M around the 6-row tiles, K around the 128-element k-blocks, T from the first panel size on
# (33) through partial panels and more than one group of 4 panels (100, 131)
SHAPES = [(1, 7, 33), (5, 128, 33), (7, 129, 47), (13, 300, 64), (19, 257, 100), (12, 33, 131), (6, 1, 40)]


def mul_mat_at(level: int, w: np.ndarray, x: np.ndarray, threads: int) -> np.ndarray:
    previous = ggml.simd_level()
    ggml.simd_select(level)
    try:
        with ggml.Context(64 << 20, threads=threads) as ctx:
            y = ctx.mul_mat(ctx.tensor(w), ctx.tensor(x))
            ctx.graph([y]).compute()
            return y.numpy().copy()
    finally:
        ggml.simd_select(previous)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{k}xT{t}" for m, k, t in SHAPES])
@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_avx2_float_panels_against_float64(shape: tuple[int, int, int], wtype: type, threads: int) -> None:
    m, k, t = shape
    w = rand((m, k), seed=m * 7 + k, dtype=wtype)
    x = rand((t, k), seed=t * 3 + k)
    got = mul_mat_at(1, w, x, threads)
    want, bound = reference(w, x)
    assert_norm_close(got, want, bound, tol=TOL, name="mul_mat/panel-avx2")
    assert bits_equal(got, mul_mat_at(1, w, x, 1)), "thread count changed the result"


@pytest.mark.skipif(ggml.simd_max_level() < 2, reason="no AVX-512 level to compare with")
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{k}xT{t}" for m, k, t in SHAPES])
@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_avx2_float_panels_equal_the_avx512_panels(shape: tuple[int, int, int], wtype: type) -> None:
    """The AVX2 kernel computes the same chains as the AVX-512 one (and not the f32 tiles' k-lane sums)."""
    m, k, t = shape
    w = rand((m, k), seed=m + k, dtype=wtype)
    x = rand((t, k), seed=t + 5 * k)
    assert bits_equal(mul_mat_at(1, w, x, 2), mul_mat_at(2, w, x, 2))
