"""Q8_0 mul_mat in narrow panels (AVX512_VNNI without AMX: the batched-decode route for 4 to 32 activation
columns): every column equals the mat-vec of that column alone bit for bit, whatever the column count (one
to four panels of 8, partly empty), the thread count, a partial group of 4 weight rows, or a partial last
group of 16 blocks and an odd last block. On a CPU with AMX-INT8 the AMX route takes 6 to 32 columns, so
AMX is masked off here. Skipped on CPUs without AVX512_VNNI."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml.fileformat import DType

from .helpers import cpu_without
from .test_quant_engine import run_mul_mat
from .test_quant_small_batch import K, M, extreme_columns, extreme_weights

pytestmark = pytest.mark.skipif(
    not ggml.cpu_features().get("avx512_vnni", False) or ggml.simd_max_level() < 2,
    reason="this CPU has no AVX512_VNNI",
)
NARROW_MIN_T, NARROW_MAX_T = 4, 32  # RG_QNARROW_MIN_T, RG_QNARROW_MAX_T in ops_matmul.c
Q8_0_BLOCK_BYTES = 34


@pytest.fixture(autouse=True)
def without_amx() -> Iterator[None]:
    previous = ggml.simd_level()
    with cpu_without("amx_int8"):
        ggml.simd_select(2)
        try:
            yield
        finally:
            ggml.simd_select(previous)


def widened(w: np.ndarray, k: int) -> np.ndarray:
    """The rows' whole blocks repeated out to k elements (k / 32 blocks)."""
    return np.ascontiguousarray(np.concatenate([w] * (k // K + 1), axis=1)[:, : k // 32 * Q8_0_BLOCK_BYTES])


@pytest.mark.parametrize("b", [2, 3, NARROW_MIN_T, 5, 7, 8, 9, 12, 16, 17, 24, 31, NARROW_MAX_T])
@pytest.mark.parametrize("k", [32, 480, K, 2048 + 32])
def test_columns_equal_mat_vec(b: int, k: int) -> None:
    rng = np.random.default_rng(b)
    w = widened(extreme_weights(DType.Q8_0, seed=13 * b), k)
    x = extreme_columns(b, seed=700 + b)[:, :k] if k <= K else rng.standard_normal((b, k)).astype(np.float32)
    together = run_mul_mat(w, DType.Q8_0, k, M, x)
    for t in range(b):
        alone = run_mul_mat(w, DType.Q8_0, k, M, x[t : t + 1])[0]
        assert np.array_equal(alone, together[t]), f"B={b}, K={k}, column {t}"


@pytest.mark.parametrize("b", [NARROW_MIN_T, 8, 13, NARROW_MAX_T])
def test_thread_count_does_not_change_columns(b: int) -> None:
    w = extreme_weights(DType.Q8_0, seed=17 * b)
    x = extreme_columns(b, seed=800 + b)
    single = run_mul_mat(w, DType.Q8_0, K, M, x, threads=1)
    for threads in (2, 3):
        np.testing.assert_array_equal(run_mul_mat(w, DType.Q8_0, K, M, x, threads=threads), single)
