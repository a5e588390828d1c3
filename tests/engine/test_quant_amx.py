"""Q8_0 mul_mat on AMX (the batched-decode route for 6 to 32 activation columns): every column equals the
mat-vec of that column alone bit for bit, whatever the column count, the thread count, a partial group of
16 weight rows or a partial last group of 16 blocks. Skipped on CPUs without AMX-INT8."""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml.fileformat import DType

from .helpers import cpu_without
from .test_quant_engine import run_mul_mat
from .test_quant_small_batch import K, M, extreme_columns, extreme_weights

pytestmark = pytest.mark.skipif(
    not ggml.cpu_features().get("amx_int8", False) or ggml.simd_max_level() < 2,
    reason="this CPU has no AMX-INT8",
)
AMX_MIN_T, AMX_MAX_T = 6, 32  # RG_QAMX_MIN_T, RG_QAMX_MAX_T in simd/kernels.h
Q8_0_BLOCK_BYTES = 34


@pytest.mark.parametrize("b", [2, 3, 7, 8, 9, 10, 15, 16, 17, 24, 31, 32])
@pytest.mark.parametrize("k", [K, 2048 + 32])
def test_columns_equal_mat_vec(b: int, k: int) -> None:
    rng = np.random.default_rng(b)
    w = extreme_weights(DType.Q8_0, seed=11 * b)
    if k != K:  # more than one group of 16 blocks and a partial one (nb = 65): whole blocks repeated
        w = np.ascontiguousarray(np.concatenate([w] * (k // K + 1), axis=1)[:, : k // 32 * Q8_0_BLOCK_BYTES])
    x = extreme_columns(b, seed=400 + b) if k == K else rng.standard_normal((b, k)).astype(np.float32)
    together = run_mul_mat(w, DType.Q8_0, k, M, x)
    for t in range(b):
        alone = run_mul_mat(w, DType.Q8_0, k, M, x[t : t + 1])[0]
        assert np.array_equal(alone, together[t]), f"B={b}, K={k}, column {t}"


@pytest.mark.parametrize("b", [AMX_MIN_T, 8, 9])
def test_amx_equals_the_one_row_kernels(b: int) -> None:
    """Below 10 columns the route without AMX is the one-row kernel, exact too: both give the same bits."""
    w = extreme_weights(DType.Q8_0, seed=5 * b)
    x = extreme_columns(b, seed=500 + b)
    amx = run_mul_mat(w, DType.Q8_0, K, M, x)
    with cpu_without("amx_int8"):
        vnni = run_mul_mat(w, DType.Q8_0, K, M, x)
    np.testing.assert_array_equal(amx, vnni)


@pytest.mark.parametrize("b", [AMX_MIN_T, 16, AMX_MAX_T])
def test_thread_count_does_not_change_columns(b: int) -> None:
    w = extreme_weights(DType.Q8_0, seed=9 * b)
    x = extreme_columns(b, seed=600 + b)
    single = run_mul_mat(w, DType.Q8_0, K, M, x, threads=1)
    for threads in (2, 3):
        np.testing.assert_array_equal(run_mul_mat(w, DType.Q8_0, K, M, x, threads=threads), single)
