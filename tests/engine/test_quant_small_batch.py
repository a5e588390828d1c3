"""mul_mat of block-quantized weights against a few activation columns (batched decode, B = 1..17).

Below ``RG_QPANEL_MIN_T`` (10) columns every level runs the one-row kernels ``vec_dot_*_xn``: a weight row
is read and unpacked once for up to 8 columns, and each output is bit-identical to the mat-vec of its
column alone. From 10 columns on, with AVX512_VNNI, the column-panel kernels take over and add the same
f32 terms in another order. (With AVX512_VNNI exact narrow panels take 10 to 16 columns instead, 4 to 32
for Q8_0, and AMX tiles 6 to 32 of Q8_0: test_quant_narrow.py, test_quant_amx.py.) Checked against the
float emulation of formats.md §5.4 (exact integer block sums, f32 scale products, f64 total) on blocks
with extreme scales, at every SIMD level (the dispatch override of ``simd_level``) and 1, 2 and 4 threads.
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml.fileformat import DType
from tests.reference.quant_ref import quantize_ref

from .helpers import quant_panel_kernels
from .test_quant_engine import QIDS, QTYPES, emulate_mul_mat, rounding_tol, run_mul_mat

F32 = np.float32
PANEL_MIN_T = 10  # RG_QPANEL_MIN_T in ops_matmul_panel.c
NARROW_MAX_T, NARROW_4BIT_MAX_T = 32, 16  # RG_QNARROW_MAX_T, RG_QNARROW_4BIT_MAX_T in ops_matmul.c
K = 1056  # 33 blocks: full groups of the SIMD kernels, a partial group and an odd last block
M = 19


def extreme_weights(dtype: DType, seed: int) -> np.ndarray:
    """Weight rows whose blocks span 1e-4 .. 1e4 in scale (f16 scales from near-subnormal to large), plus
    an all-zero block and a block of one repeated value."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((M, K)).astype(F32)
    w *= (10.0 ** rng.integers(-4, 5, size=(M, K // 32))).repeat(32, axis=1).astype(F32)
    w[0, :32] = 0.0
    w[1, 32:64] = 3.0
    if dtype in (DType.Q4_1, DType.Q5_1):
        w += rng.uniform(-1, 1, size=(M, 1)).astype(F32)
    return quantize_ref(w, dtype)


def extreme_columns(b: int, seed: int) -> np.ndarray:
    """Activation columns whose blocks span 1e-3 .. 1e3 (the Q8 activation scales stay finite in f16)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, K)).astype(F32)
    x *= (10.0 ** rng.integers(-3, 4, size=(b, K // 32))).repeat(32, axis=1).astype(F32)
    return x


def panel_route(b: int, dtype: DType) -> bool:
    """Whether B columns take the column panels, which add the f32 terms in another order. With
    AVX512_VNNI the narrow panels (or AMX tiles for Q8_0) take up to 32 columns of Q8_0 and up to 16 of
    the others instead, exact as the mat-vec."""
    if ggml.simd_level() == 2 and ggml.cpu_features()["avx512_vnni"]:
        return b > (NARROW_MAX_T if dtype == DType.Q8_0 else NARROW_4BIT_MAX_T)
    return b >= PANEL_MIN_T and quant_panel_kernels()


@pytest.mark.parametrize("b", range(1, 18))
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_columns_match_float_reference(simd_level: int, dtype: DType, b: int) -> None:
    w = extreme_weights(dtype, seed=b)
    x = extreme_columns(b, seed=100 + b)
    got = run_mul_mat(w, dtype, K, M, x)
    want, mag = emulate_mul_mat(w, dtype, K, x)
    err = np.abs(got.astype(np.float64) - want)
    tol = 2 * rounding_tol(K, mag)
    assert np.all(err <= tol), f"level {simd_level}, B={b}: max err/tol {np.max(err / tol):.3g}"


@pytest.mark.parametrize("b", range(2, 18))
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_columns_equal_mat_vec(simd_level: int, dtype: DType, b: int) -> None:
    """Each column of a B-column product against the mat-vec of that column alone: bit for bit on the
    one-row kernels, within the rounding bound on the panel kernels."""
    w = extreme_weights(dtype, seed=7 * b)
    x = extreme_columns(b, seed=200 + b)
    together = run_mul_mat(w, dtype, K, M, x)
    _, mag = emulate_mul_mat(w, dtype, K, x)
    for t in range(b):
        alone = run_mul_mat(w, dtype, K, M, x[t : t + 1])[0]
        if panel_route(b, dtype):
            assert np.all(np.abs(alone - together[t]) <= 2 * rounding_tol(K, mag[t])), f"column {t}"
        else:
            assert np.array_equal(alone, together[t]), f"level {simd_level}, B={b}, column {t}"


@pytest.mark.parametrize("b", [2, 3, 8, 9, 13, 17])
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_thread_count_does_not_change_columns(dtype: DType, b: int, threads: int) -> None:
    w = extreme_weights(dtype, seed=3 * b)
    x = extreme_columns(b, seed=300 + b)
    single = run_mul_mat(w, dtype, K, M, x, threads=1)
    assert np.array_equal(run_mul_mat(w, dtype, K, M, x, threads=threads), single)
