"""The f32 mat-mats of few columns sum in the mat-vec's order: every column of a product with 2..32
activation columns equals the mat-vec of that column bit for bit, for F32 and F16 weights, at every SIMD
level (the row streams of dot_*_rows4_cols at the AVX2 and AVX-512 levels, the tiles of
simd/k_gemm_tile.c at the scalar one), for row lengths around the kernels' lanes, 16/32-element chunks and
L1 blocks, and with row counts that leave partial 4-row groups. This is what makes a batch of B sequences
equal B single evals.

(From 33 columns the AVX-512 level takes the column panels, which sum in another order; the test stops at 32.)
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml

from .helpers import bits_equal, rand, run_engine

# lane and chunk boundaries (8, 16, 32), odd lengths, lengths past one and several L1 blocks of the tile
KS = [1, 7, 15, 17, 31, 33, 47, 63, 97, 225, 673, 1025, 2049]
COLUMNS = list(range(1, 33))


def _mul_mat(c: ggml.Context, a: ggml.Tensor, b: ggml.Tensor) -> ggml.Tensor:
    return c.mul_mat(a, b)


def _mat_vecs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row of b against a alone (the mat-vec kernels)."""
    return np.concatenate([run_engine(_mul_mat, [a, b[t : t + 1]], threads=1) for t in range(len(b))])


def _differing_columns(a: np.ndarray, b: np.ndarray, alone: np.ndarray) -> list[int]:
    """The columns of the product of a with all rows of b that differ from their mat-vecs (alone)."""
    together = run_engine(_mul_mat, [a, b], threads=2)
    return [t for t in range(len(b)) if not bits_equal(together[t], alone[t])]


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_every_column_count_equals_the_mat_vec(k: int, wtype: type, simd_level: int) -> None:
    a = rand((7, k), seed=k, dtype=wtype)  # 7 rows: one full tile of 4 and a partial one of 3
    b = rand((32, k), seed=k + 1)
    alone = _mat_vecs(a, b)
    for t in COLUMNS:
        differing = _differing_columns(a, b[:t], alone)
        assert not differing, f"k={k}, {t} columns: columns {differing} differ from their mat-vec"


@pytest.mark.parametrize("k", [97, 1100])
@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_many_rows_equal_the_mat_vec(k: int, wtype: type, simd_level: int) -> None:
    """Enough rows that a thread's claim holds several 4-row tiles, which the AVX-512 tile runs in sweeps
    sharing each block of the columns (and a partial tile at the end)."""
    a = rand((150, k), seed=k, dtype=wtype)
    b = rand((32, k), seed=k + 2)
    alone = _mat_vecs(a, b)
    for t in (2, 5, 8, 13, 16, 31, 32):
        differing = _differing_columns(a, b[:t], alone)
        assert not differing, f"k={k}, {t} columns: columns {differing} differ from their mat-vec"


@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_long_rows_equal_the_mat_vec(wtype: type, simd_level: int) -> None:
    """Rows of 16 KB and more take the mat-vec's four-row kernel (dot_*_rows4 with nr = 4) rather than
    one row at a time; the order is the same, and so must the tiles' be."""
    a = rand((5, 8195), seed=3, dtype=wtype)
    b = rand((9, 8195), seed=4)
    assert not _differing_columns(a, b, _mat_vecs(a, b))
