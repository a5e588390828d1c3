"""The float column-panel route (ops_matmul_panel.c, from 33 activation columns) against a float64
reference, with shapes that exercise its structure: several blocks of tiles per thread, a partial last
tile, row lengths that end in a partial k-block, and column counts that leave a partial panel and a
partial group of panels. Each output is one f32 multiply-add chain over k, so it must lie within the
recursive-summation bound k * 2^-24 * sum |w x| of the exact dot product, and the result must not depend
on the thread count (bit for bit).
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml

from .helpers import bits_equal, rand, run_engine

# 389 rows: 64 full 6-row tiles and a partial one, more than one block of 32 tiles per thread
ROWS = 389
# row lengths: one partial k-block, one full and a partial one, several full and a partial one
KS = [97, 129, 300]
# 33: the route's first column count; 70: a partial panel and a partial group of 4 panels
COLUMNS = [33, 70]


def _mul_mat(c: ggml.Context, a: ggml.Tensor, b: ggml.Tensor) -> ggml.Tensor:
    return c.mul_mat(a, b)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("t", COLUMNS)
@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_panels_match_float64_at_every_thread_count(k: int, t: int, wtype: type, simd_level: int) -> None:
    a = rand((ROWS, k), seed=k + t, dtype=wtype)
    b = rand((t, k), seed=k * t + 1)
    wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
    exact = wide_b @ wide_a.T
    bound = k * 2.0**-24 * (np.abs(wide_b) @ np.abs(wide_a).T)
    results = {threads: run_engine(_mul_mat, [a, b], threads=threads) for threads in (1, 2, 4)}
    got = results[1]
    assert got.shape == (t, ROWS)
    err = np.abs(got.astype(np.float64) - exact)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (
        f"column {worst[0]}, row {worst[1]}: error {err[worst]:.3g} > bound {bound[worst]:.3g}"
    )
    for threads in (2, 4):
        assert bits_equal(results[threads], got), f"{threads} threads differ from 1"
