"""layer_norm and group_norm (ops_norm.c) against PyTorch's F.layer_norm / F.group_norm.

The reference runs in f64 on the same f32 (or f16-rounded) inputs and is rounded to f32 once, so it is the
ideal f32 answer. Tolerance: rtol 1e-5 plus atol 1e-5 (outputs are O(1) normalised values times O(1)
weights; an error of 1e-5 is ~100 f32 ulp of such values, while the engine, accumulating the statistics in
f64, is within a few ulp). Rows with a large common offset (mean 300, std 0.1) check that the statistics do
not lose the small variation under the offset.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rwkv_ggml import ggml

from .helpers import check_op, rand, randn

RTOL = 1e-5
ATOL = 1e-5


def _ln_build(eps: float, has_w: bool, has_b: bool) -> Callable[..., ggml.Tensor]:
    def build(c: ggml.Context, x: ggml.Tensor, *wb: ggml.Tensor) -> ggml.Tensor:
        it = iter(wb)
        w = next(it) if has_w else None
        b = next(it) if has_b else None
        return c.layer_norm(x, w, b, eps)

    return build


def _ln_ref(eps: float, has_w: bool, has_b: bool) -> Callable[..., torch.Tensor]:
    def ref(x: torch.Tensor, *wb: torch.Tensor) -> torch.Tensor:
        it = iter(wb)
        w = next(it) if has_w else None
        b = next(it) if has_b else None
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    return ref


def _affine(n: int, has_w: bool, has_b: bool, seed: int) -> list[np.ndarray]:
    out = []
    if has_w:
        out.append(rand((n,), seed, low=0.5, high=1.5))
    if has_b:
        out.append(rand((n,), seed + 1, low=-1.0, high=1.0))
    return out


AFFINE = [(False, False), (True, False), (False, True), (True, True)]
AFFINE_IDS = ["plain", "w", "b", "wb"]


@pytest.mark.parametrize("n", [1, 7, 33, 4097])
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("affine", AFFINE, ids=AFFINE_IDS)
def test_layer_norm(n: int, rows: int, affine: tuple[bool, bool], threads: int) -> None:
    has_w, has_b = affine
    x = randn((rows, n), seed=n + rows, scale=2.0, offset=0.5)
    eps = 1e-5
    check_op(
        "layer_norm",
        _ln_build(eps, has_w, has_b),
        _ln_ref(eps, has_w, has_b),
        [x, *_affine(n, has_w, has_b, seed=n)],
        rtol=RTOL,
        atol=ATOL,
        threads=threads,
        ref_dtype=torch.float64,
    )


@pytest.mark.parametrize("shape", [(2, 3, 33), (2, 2, 3, 7)], ids=["3d", "4d"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_layer_norm_batched(shape: tuple[int, ...], dtype: type, threads: int) -> None:
    x = randn(shape, seed=3, dtype=dtype)
    n = shape[-1]
    check_op(
        "layer_norm",
        _ln_build(1e-5, True, True),
        _ln_ref(1e-5, True, True),
        [x, *_affine(n, True, True, seed=4)],
        rtol=RTOL,
        atol=ATOL,
        threads=threads,
        ref_dtype=torch.float64,
    )


@pytest.mark.parametrize("layout", ["transposed", "permuted", "padded"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_layer_norm_non_contiguous(layout: str, dtype: type) -> None:
    x = randn((3, 5, 33), seed=8, dtype=dtype)
    check_op(
        "layer_norm",
        _ln_build(1e-5, True, True),
        _ln_ref(1e-5, True, True),
        [x, *_affine(33, True, True, seed=9)],
        rtol=RTOL,
        atol=ATOL,
        threads=2,
        layouts=[layout, "contiguous", "contiguous"],
        ref_dtype=torch.float64,
    )


def test_layer_norm_f16_every_simd_level(simd_level: int) -> None:
    for n in (15, 16, 17, 4097):
        x = randn((3, n), seed=n, dtype=np.float16)
        check_op(
            "layer_norm/f16",
            _ln_build(1e-5, True, False),
            _ln_ref(1e-5, True, False),
            [x, *_affine(n, True, False, seed=1)],
            rtol=RTOL,
            atol=ATOL,
            threads=2,
            ref_dtype=torch.float64,
        )


@pytest.mark.parametrize("eps", [0.0, 1e-5, 64e-5, 0.1])
def test_layer_norm_eps(eps: float) -> None:
    x = randn((4, 33), seed=21, scale=0.05)
    check_op(
        "layer_norm",
        _ln_build(eps, False, False),
        _ln_ref(eps, False, False),
        [x],
        rtol=RTOL,
        atol=ATOL,
        ref_dtype=torch.float64,
    )


def test_layer_norm_large_offset() -> None:
    """Rows of mean 300 and std 0.1: a norm that rounds the mean to f32 before subtracting it loses up to
    ulp(300)/2 / 0.1 = 1.5e-4 of every output."""
    x = randn((4, 1024), seed=22, scale=0.1, offset=300.0)
    check_op(
        "layer_norm/offset",
        _ln_build(1e-5, False, False),
        _ln_ref(1e-5, False, False),
        [x],
        rtol=RTOL,
        atol=ATOL,
        ref_dtype=torch.float64,
    )


def test_layer_norm_constant_row() -> None:
    """A constant row has zero variance: the output is exactly the bias (0 without one), never NaN."""
    x = np.full((2, 16), 3.25, dtype=np.float32)
    b = rand((16,), 1)
    check_op(
        "layer_norm/constant",
        _ln_build(1e-5, False, True),
        _ln_ref(1e-5, False, True),
        [x, b],
        rtol=0.0,
        atol=0.0,
        ref_dtype=torch.float64,
    )


# ---- group_norm ----


def _gn_build(groups: int, eps: float, affine: bool) -> Callable[..., ggml.Tensor]:
    def build(c: ggml.Context, x: ggml.Tensor, *wb: ggml.Tensor) -> ggml.Tensor:
        return c.group_norm(x, groups, *(wb if affine else (None, None)), eps=eps)

    return build


def _gn_ref(groups: int, eps: float, affine: bool) -> Callable[..., torch.Tensor]:
    def ref(x: torch.Tensor, *wb: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        w, b = wb if affine else (None, None)
        return F.group_norm(flat, groups, w, b, eps).reshape(x.shape)

    return ref


@pytest.mark.parametrize("groups", [1, 4, 8])
@pytest.mark.parametrize("group_size", [1, 7, 33])
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "wb"])
def test_group_norm(groups: int, group_size: int, affine: bool, threads: int) -> None:
    n = groups * group_size
    x = randn((3, n), seed=n, scale=1.5, offset=-0.25)
    inputs = [x, *_affine(n, affine, affine, seed=groups)]
    # RWKV-5/6 use eps = 64e-5 for their per-head group norm
    check_op(
        "group_norm",
        _gn_build(groups, 64e-5, affine),
        _gn_ref(groups, 64e-5, affine),
        inputs,
        rtol=RTOL,
        atol=ATOL,
        threads=threads,
        ref_dtype=torch.float64,
    )


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "permuted", "padded"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_group_norm_layouts(layout: str, dtype: type) -> None:
    x = randn((2, 5, 32), seed=31, dtype=dtype)
    check_op(
        "group_norm",
        _gn_build(4, 1e-5, True),
        _gn_ref(4, 1e-5, True),
        [x, *_affine(32, True, True, seed=2)],
        rtol=RTOL,
        atol=ATOL,
        threads=2,
        layouts=[layout, "contiguous", "contiguous"],
        ref_dtype=torch.float64,
    )


def test_group_norm_large_sizes(simd_level: int) -> None:
    x = randn((2, 4096), seed=41, dtype=np.float16, scale=3.0)
    check_op(
        "group_norm/f16",
        _gn_build(64, 64e-5, True),
        _gn_ref(64, 64e-5, True),
        [x, *_affine(4096, True, True, seed=3)],
        rtol=RTOL,
        atol=ATOL,
        threads=2,
        ref_dtype=torch.float64,
    )
