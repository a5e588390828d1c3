"""mul_mat of the 32-element block types in narrow panels (AVX512_VNNI: the batched-decode route for 4 to
32 activation columns of Q8_0 and 10 to 16 of the others, whose one-row kernels take fewer): every column
equals the mat-vec of that column alone bit for bit, whatever the type, the column count (one to four
panels of 8, partly empty), the thread count, a partial group of 4 weight rows, or a partial last group of
16 blocks and an odd last block. On a CPU with AMX-INT8 the AMX route takes 6 to 32 columns of Q8_0, so AMX
is masked off here. Skipped on CPUs without AVX512_VNNI."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml.fileformat import DType

from .helpers import cpu_without
from .test_quant_engine import QIDS, QTYPES, run_mul_mat
from .test_quant_small_batch import K, M, extreme_columns, extreme_weights

pytestmark = pytest.mark.skipif(
    not ggml.cpu_features().get("avx512_vnni", False) or ggml.simd_max_level() < 2,
    reason="this CPU has no AVX512_VNNI",
)
NARROW_MIN_T, NARROW_MAX_T = 4, 32  # RG_QNARROW_MIN_T, RG_QNARROW_MAX_T in ops_matmul.c (Q8_0)
NARROW_4BIT_MAX_T = 16  # RG_QNARROW_4BIT_MAX_T: the 4- and 5-bit types
BLOCK_BYTES = {DType.Q4_0: 18, DType.Q4_1: 20, DType.Q5_0: 22, DType.Q5_1: 24, DType.Q8_0: 34}


@pytest.fixture(autouse=True)
def without_amx() -> Iterator[None]:
    previous = ggml.simd_level()
    with cpu_without("amx_int8"):
        ggml.simd_select(2)
        try:
            yield
        finally:
            ggml.simd_select(previous)


def widened(w: np.ndarray, k: int, dtype: DType) -> np.ndarray:
    """The rows' whole blocks repeated out to k elements (k / 32 blocks)."""
    return np.ascontiguousarray(np.concatenate([w] * (k // K + 1), axis=1)[:, : k // 32 * BLOCK_BYTES[dtype]])


# (type, columns): up to the route's end for each type (past it the column panels round differently:
# test_quant_small_batch.py), from below its start (the one-row kernels, exact too)
CASES = [
    (dtype, b)
    for dtype in QTYPES
    for b in (2, 3, NARROW_MIN_T, 5, 7, 8, 9, 10, 12, 16, 17, 24, 31, NARROW_MAX_T)
    if dtype == DType.Q8_0 or b <= NARROW_4BIT_MAX_T
]


@pytest.mark.parametrize("k", [32, 480, K, 2048 + 32])
@pytest.mark.parametrize(("dtype", "b"), CASES, ids=[f"{d.name}-B{b}" for d, b in CASES])
def test_columns_equal_mat_vec(dtype: DType, b: int, k: int) -> None:
    rng = np.random.default_rng(b)
    w = widened(extreme_weights(dtype, seed=13 * b), k, dtype)
    x = extreme_columns(b, seed=700 + b)[:, :k] if k <= K else rng.standard_normal((b, k)).astype(np.float32)
    together = run_mul_mat(w, dtype, k, M, x)
    for t in range(b):
        alone = run_mul_mat(w, dtype, k, M, x[t : t + 1])[0]
        assert np.array_equal(alone, together[t]), f"{dtype.name}, B={b}, K={k}, column {t}"


@pytest.mark.parametrize("b", [NARROW_MIN_T, 8, 13, NARROW_4BIT_MAX_T, NARROW_MAX_T])
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_thread_count_does_not_change_columns(dtype: DType, b: int) -> None:
    w = extreme_weights(dtype, seed=17 * b)
    x = extreme_columns(b, seed=800 + b)
    single = run_mul_mat(w, dtype, K, M, x, threads=1)
    for threads in (2, 3):
        np.testing.assert_array_equal(run_mul_mat(w, dtype, K, M, x, threads=threads), single)


@pytest.mark.parametrize("b", [NARROW_MIN_T, 12, NARROW_MAX_T])
def test_strided_activations_equal_contiguous(b: int) -> None:
    """Activation rows read through a transposed view (phase 0 loads each with its stride)."""
    w = extreme_weights(DType.Q8_0, seed=19 * b)
    x = extreme_columns(b, seed=900 + b)
    contiguous = run_mul_mat(w, DType.Q8_0, K, M, x, threads=2)
    strided = run_mul_mat(w, DType.Q8_0, K, M, x, threads=2, transposed_x=True)
    np.testing.assert_array_equal(strided, contiguous)
