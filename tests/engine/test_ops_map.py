"""map_unary / map_binary: user callbacks as graph nodes, called once per row with contiguous float rows.

The compiled callbacks of csrc/ggml/testing.c (``rg_test_map_affine``: dst = s * x + o with userdata
pointing at {s, o}; ``rg_test_map_hypot``: dst = sqrt(a^2 + b^2)) run without the GIL on every thread;
Python callables go through a cffi callback. Both are compared with PyTorch on F32/F16 inputs, strided
views (the engine hands the callback a contiguous copy of each row), odd row lengths and 1/2/4 threads.
Tolerance: the affine map is exact in f32 (rtol 1e-6); hypot is libm's sqrtf of an f32 sum (rtol 1e-6
against PyTorch computing the same expression in f32).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib

from .helpers import LAYOUTS, assert_close, check_op, engine_input, rand

RTOL = 1e-6
SCALE, OFFSET = 1.75, -0.5
SHAPES = [(1,), (7,), (5, 33), (2, 3, 4097)]


def _affine_ref(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(SCALE) + torch.tensor(OFFSET)


def _hypot_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(a * a + b * b)


def _affine_c(userdata: object) -> Callable[[ggml.Context, ggml.Tensor], ggml.Tensor]:
    def build(c: ggml.Context, x: ggml.Tensor) -> ggml.Tensor:
        return c.map_unary(x, ffi.addressof(lib, "rg_test_map_affine"), userdata)

    return build


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_map_unary_compiled_callback(shape: tuple[int, ...], dtype: type, threads: int) -> None:
    params = ffi.new("float[2]", [SCALE, OFFSET])
    check_op(
        "map_unary/c",
        _affine_c(params),
        _affine_ref,
        [rand(shape, 1, dtype=dtype)],
        rtol=RTOL,
        atol=0.0,
        threads=threads,
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_map_unary_strided_input(layout: str) -> None:
    params = ffi.new("float[2]", [SCALE, OFFSET])
    check_op(
        "map_unary/c",
        _affine_c(params),
        _affine_ref,
        [rand((3, 5, 33), 2)],
        rtol=RTOL,
        atol=0.0,
        threads=2,
        layouts=[layout],
    )


def test_map_unary_lib_function_directly() -> None:
    """``lib.rg_test_map_affine`` itself (not only its address) is accepted as the C callback, as the
    docstring of ``Context.map_unary`` promises."""
    params = ffi.new("float[2]", [SCALE, OFFSET])
    x = rand((4, 9), 3)
    check_op(
        "map_unary/c",
        lambda c, t: c.map_unary(t, lib.rg_test_map_affine, params),
        _affine_ref,
        [x],
        rtol=RTOL,
        atol=0.0,
    )


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(
    "dtypes", [(np.float32, np.float32), (np.float16, np.float32)], ids=["f32", "f16-f32"]
)
def test_map_binary_compiled_callback(
    shape: tuple[int, ...], dtypes: tuple[type, type], threads: int
) -> None:
    a = rand(shape, 4, dtype=dtypes[0])
    b = rand(shape, 5, dtype=dtypes[1])
    check_op(
        "map_binary/c",
        lambda c, x, y: c.map_binary(x, y, ffi.addressof(lib, "rg_test_map_hypot")),
        _hypot_ref,
        [a, b],
        rtol=RTOL,
        atol=0.0,
        threads=threads,
    )


@pytest.mark.parametrize(
    "layouts", [("transposed", "padded"), ("permuted", "contiguous")], ids=lambda ls: "-".join(ls)
)
def test_map_binary_strided_inputs(layouts: tuple[str, str]) -> None:
    a = rand((3, 5, 33), 6)
    b = rand((3, 5, 33), 7, dtype=np.float16)
    check_op(
        "map_binary/c",
        lambda c, x, y: c.map_binary(x, y, ffi.addressof(lib, "rg_test_map_hypot")),
        _hypot_ref,
        [a, b],
        rtol=RTOL,
        atol=0.0,
        threads=2,
        layouts=list(layouts),
    )


# ---- Python callables ----


@pytest.mark.parametrize("shape", [(1,), (5, 33), (2, 3, 7)], ids=str)
def test_map_unary_python_callable(shape: tuple[int, ...], threads: int) -> None:
    row_lengths: list[int] = []
    lock = threading.Lock()

    def fn(dst: np.ndarray, src: np.ndarray) -> None:
        with lock:
            row_lengths.append(len(src))
        dst[:] = np.tanh(src) * 2.0

    x = rand(shape, 8)
    check_op(
        "map_unary/py",
        lambda c, t: c.map_unary(t, fn),
        lambda t: torch.tanh(t) * 2.0,
        [x],
        rtol=RTOL,
        atol=1e-7,
        threads=threads,
        layouts=["transposed" if len(shape) > 1 else "contiguous"],
    )
    n_rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    assert row_lengths == [shape[-1]] * n_rows, "the callback must be called once per row with the row length"


def test_map_binary_python_callable(threads: int) -> None:
    def fn(dst: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        dst[:] = np.maximum(a, b) - a * b

    a = rand((4, 33), 9)
    b = rand((4, 33), 10, dtype=np.float16)
    check_op(
        "map_binary/py",
        lambda c, x, y: c.map_binary(x, y, fn),
        lambda x, y: torch.maximum(x, y) - x * y,
        [a, b],
        rtol=RTOL,
        atol=1e-7,
        threads=threads,
        layouts=["padded", "transposed"],
    )


def test_map_ops_compose_with_other_nodes() -> None:
    """A map node's output feeds ordinary ops and vice versa, in one graph."""
    params = ffi.new("float[2]", [2.0, 1.0])
    x = rand((3, 17), 11)
    y = rand((3, 17), 12)
    with ggml.Context(1 << 20, threads=2) as ctx:
        tx, ty = ctx.tensor(x), ctx.tensor(y)
        h = ctx.map_binary(
            ctx.map_unary(tx, ffi.addressof(lib, "rg_test_map_affine"), params),
            ctx.neg(ty),
            ffi.addressof(lib, "rg_test_map_hypot"),
        )
        out = ctx.sigmoid(h)
        ctx.graph([out]).compute()
        got = out.numpy()
    tx_, ty_ = torch.from_numpy(x), torch.from_numpy(y)
    want = torch.sigmoid(_hypot_ref(tx_ * 2.0 + 1.0, -ty_)).numpy()
    assert_close(got, want, rtol=1e-6, atol=0.0, name="map/composed")


def test_python_callback_exception_is_raised_by_compute() -> None:
    """An exception inside a Python map callback must surface from compute(), not leave a silently wrong
    (uninitialised) output behind."""

    def fn(dst: np.ndarray, src: np.ndarray) -> None:
        raise RuntimeError("callback failed on purpose")

    with ggml.Context(1 << 20) as ctx:
        out = ctx.map_unary(ctx.tensor(rand((2, 5), 13)), fn)
        g = ctx.graph([out])
        with pytest.raises(Exception, match="callback failed on purpose"):
            g.compute()


def test_map_view_input_sees_contiguous_rows() -> None:
    """The callback receives a contiguous copy of each strided row, never the padding around it."""
    seen_nan: list[bool] = []

    def fn(dst: np.ndarray, src: np.ndarray) -> None:
        seen_nan.append(bool(np.isnan(src).any()))
        dst[:] = src

    x = rand((4, 6), 14)
    with ggml.Context(1 << 20) as ctx:
        out = ctx.map_unary(engine_input(ctx, x, "padded"), fn)
        ctx.graph([out]).compute()
        np.testing.assert_array_equal(out.numpy(), x)
    assert seen_nan == [False] * 4
