"""The portable scalar level's f32/f16 dot products add their terms in the SIMD kernels' order.

Every element of a mat-vec or a mat-mat tile is one dot product. The scalar kernels (simd/k_vec_scalar.c)
follow the AVX2 kernels' tree: whole steps of 32 elements into 32 partial sums (element i into sum i % 32),
whole steps of 8 into sums 0..7, the sums folded as (s[j] + s[8+j]) + (s[16+j] + s[24+j]), then halved
three times, then the tail in order; each product is rounded to f32 (no FMA). The emulation below does
exactly that in numpy f32, so the scalar level must match it bit for bit. (It used four chains of n/4
terms, which rounded differently enough to fail the 6v0 Q5_0 tiny model's sum criterion on that level.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from rwkv_ggml import ggml

from .helpers import rand, run_engine

F32 = np.float32


def tree_dot(a: np.ndarray, b: np.ndarray) -> np.float32:
    prod = a.astype(F32) * b.astype(F32)  # rounded products, as without FMA
    n = prod.size
    s = np.zeros(32, dtype=F32)
    i = 0
    while i + 32 <= n:
        s += prod[i : i + 32]
        i += 32
    while i + 8 <= n:
        s[:8] += prod[i : i + 8]
        i += 8
    v = (s[:8] + s[8:16]) + (s[16:24] + s[24:])
    w = v[:4] + v[4:]
    total = (w[0] + w[2]) + (w[1] + w[3])
    for j in range(i, n):
        total = F32(total + prod[j])
    return F32(total)


@pytest.fixture
def scalar_level() -> Iterator[None]:
    previous = ggml.simd_level()
    assert ggml.simd_select(0) == 0
    try:
        yield
    finally:
        ggml.simd_select(previous)


@pytest.mark.parametrize("k", [1, 7, 8, 31, 32, 33, 40, 64, 100, 128, 1000])
@pytest.mark.parametrize("t", [1, 3])  # mat-vec (dot_f32 / dot_f16_f32) and the mat-mat tile
@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_scalar_dot_follows_the_simd_tree(scalar_level: None, k: int, t: int, wtype: type) -> None:
    a = rand((5, k), seed=k, dtype=wtype)
    b = rand((t, k), seed=k + 1)
    got = run_engine(lambda c, x, y: c.mul_mat(x, y), [a, b])
    want = np.array([[tree_dot(a[m], b[j]) for m in range(a.shape[0])] for j in range(t)], dtype=F32)
    np.testing.assert_array_equal(got.reshape(want.shape), want)
