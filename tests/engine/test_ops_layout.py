"""Layout ops and data movement (tensor.c, ops_copy.c, ops_norm.c's sum_rows) against numpy / PyTorch.

Views, reshape, permute and transpose move no data, so after ``cont`` they must equal the numpy slice or
transpose exactly. ``cpy`` converts F32 -> F16 with round-to-nearest-even and must match numpy's
``astype(np.float16)`` bit for bit (overflow to inf and subnormals included); F16 -> F32 is exact.
concat and get_rows copy values, so they are exact too. sum_rows accumulates in f64: its error must be
within 1e-6 * sum(|x|) of the f64 sum (in practice half an f32 ulp of the result).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rwkv_ggml import ggml

from .helpers import LAYOUTS, assert_close, assert_norm_close, bits_equal, engine_input, rand, run_engine


def _compute(ctx: ggml.Context, out: ggml.Tensor, threads: int = 1) -> np.ndarray:
    ctx.graph([out]).compute(threads=threads)
    return out.numpy()


# ---- views, reshape, permute, transpose ----


def test_view_is_a_slice() -> None:
    base = rand((6, 10), 1)
    with ggml.Context(1 << 20) as ctx:
        t = ctx.tensor(base)
        # rows 1..3, columns 2..5
        v = ctx.view(t, [4, 3], [4, 10 * 4], offset=(1 * 10 + 2) * 4)
        assert v.shape == (3, 4) and not v.is_contiguous()
        np.testing.assert_array_equal(_compute(ctx, ctx.cont(v)), base[1:4, 2:6])
        # a view of a view: offsets add up
        vv = ctx.view(v, [2, 2], [4, 10 * 4], offset=(1 * 10 + 1) * 4)
        np.testing.assert_array_equal(_compute(ctx, ctx.cont(vv)), base[2:4, 3:5])
        # 3-D view with every other row as its own plane
        v3 = ctx.view(t, [5, 2, 3], [4, 10 * 4, 2 * 10 * 4], offset=4)
        np.testing.assert_array_equal(_compute(ctx, ctx.cont(v3)), base.reshape(3, 2, 10)[:, :, 1:6])


def test_view_of_an_op_result_as_graph_output() -> None:
    x = rand((4, 9), 2)
    with ggml.Context(1 << 20) as ctx:
        y = ctx.neg(ctx.tensor(x))
        v = ctx.view(y, [3, 2], [4, 9 * 4], offset=(2 * 9 + 4) * 4)  # rows 2..3, columns 4..6
        got = _compute(ctx, v)
        np.testing.assert_array_equal(got, -x[2:4, 4:7])


@pytest.mark.parametrize("new_shape", [(12, 5), (60,), (3, 4, 5), (1, 3, 1, 20)], ids=str)
def test_reshape(new_shape: tuple[int, ...]) -> None:
    x = rand((6, 10), 3)
    with ggml.Context(1 << 20) as ctx:
        r = ctx.reshape(ctx.neg(ctx.tensor(x)), list(reversed(new_shape)))
        assert r.shape == new_shape
        out = ctx.scale(r, 2.0)
        np.testing.assert_array_equal(_compute(ctx, out), (-x * 2).reshape(new_shape))


def _numpy_axes_of_ggml_perm(perm: tuple[int, ...]) -> list[int]:
    """numpy transpose axes equal to ``ctx.permute(src, perm)`` on a 4-D array (ggml axis k -> perm[k])."""
    inv = [0] * 4
    for k, p in enumerate(perm):
        inv[p] = k
    return [3 - inv[3 - a] for a in range(4)]


@pytest.mark.parametrize("perm", list(itertools.permutations(range(4))), ids=lambda p: "".join(map(str, p)))
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_permute_then_cont(perm: tuple[int, ...], dtype: type) -> None:
    x = rand((2, 3, 5, 7), 4, dtype=dtype)
    with ggml.Context(1 << 20, threads=2) as ctx:
        p = ctx.permute(ctx.tensor(x), perm)
        want = x.transpose(_numpy_axes_of_ggml_perm(perm))
        assert p.shape == want.shape
        c = ctx.cont(p)
        assert c.type == (ggml.F16 if dtype is np.float16 else ggml.F32) and c.is_contiguous()
        got = _compute(ctx, c, threads=2)
        assert got.dtype == dtype
        assert bits_equal(got, np.ascontiguousarray(want))


@pytest.mark.parametrize("shape", [(7,), (5, 33), (2, 3, 4)], ids=str)
def test_transpose(shape: tuple[int, ...]) -> None:
    x = rand(shape, 5)
    with ggml.Context(1 << 20) as ctx:
        t = ctx.transpose(ctx.tensor(x))
        want = x.reshape(1, -1).T if x.ndim == 1 else np.swapaxes(x, -1, -2)
        assert t.shape == want.shape
        np.testing.assert_array_equal(_compute(ctx, ctx.cont(t)), want)
        # transposing twice is the identity
        np.testing.assert_array_equal(
            _compute(ctx, ctx.cont(ctx.transpose(t))), x.reshape(t.shape[::-1]) if x.ndim == 1 else x
        )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_cont_of_every_layout(layout: str, dtype: type, threads: int, simd_level: int) -> None:
    x = rand((3, 5, 33), 6, dtype=dtype)
    with ggml.Context(1 << 20, threads=threads) as ctx:
        got = _compute(ctx, ctx.cont(engine_input(ctx, x, layout)), threads)
    assert bits_equal(got, x), f"cont of a {layout} {x.dtype} tensor changed values"


# ---- cpy with conversion ----


def _f16_edge_values() -> np.ndarray:
    v = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        -65504.0,
        65519.99,
        65520.0,
        -65520.0,
        1e6,
        np.inf,
        -np.inf,
        2.0**-14,
        2.0**-24,
        2.0**-25,
        1.5 * 2.0**-25,
        2.0**-26,
        3 * 2.0**-25,
        1e-40,
        -1e-40,
        1.0 + 2.0**-11,
        1.0 + 3 * 2.0**-11,
        2049.0,
        2051.0,
        0.1,
        1 / 3,
    ]
    return np.array(v, dtype=np.float32)


@pytest.mark.parametrize("n", [1, 7, 33, 4097])
def test_cpy_f32_to_f16_rounds_like_numpy(n: int, threads: int, simd_level: int) -> None:
    x = rand((3, n), n, low=-70000.0, high=70000.0)
    x.ravel()[: min(x.size, 26)] = _f16_edge_values()[: min(x.size, 26)]
    with ggml.Context(1 << 20, threads=threads) as ctx:
        dst = ctx.new_tensor(ggml.F16, x.shape)
        node = ctx.cpy(ctx.tensor(x), dst)
        got = _compute(ctx, node, threads)
        assert bits_equal(dst.numpy(), got)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    assert bits_equal(got, want), (
        f"F32 -> F16 differs from numpy at {np.flatnonzero(got.view(np.uint16) != want.view(np.uint16))[:10]}"
    )


@pytest.mark.parametrize("n", [1, 7, 33, 4097])
def test_cpy_f16_to_f32_is_exact(n: int, threads: int, simd_level: int) -> None:
    x = np.random.default_rng(n).integers(0, 0x7C00, size=(3, n), dtype=np.uint16).view(np.float16)
    x = np.where(np.random.default_rng(n + 1).random(x.shape) < 0.5, -x, x)
    with ggml.Context(1 << 20, threads=threads) as ctx:
        dst = ctx.new_tensor(ggml.F32, x.shape)
        got = _compute(ctx, ctx.cpy(ctx.tensor(x), dst), threads)
    assert bits_equal(got, x.astype(np.float32))


@pytest.mark.parametrize("src_layout", ["contiguous", "transposed", "padded"])
@pytest.mark.parametrize(
    "conv",
    [(np.float32, ggml.F32), (np.float32, ggml.F16), (np.float16, ggml.F32), (np.float16, ggml.F16)],
    ids=["f32-f32", "f32-f16", "f16-f32", "f16-f16"],
)
def test_cpy_into_a_strided_destination(src_layout: str, conv: tuple[type, int]) -> None:
    """Writing into a transposed view of a caller-owned buffer: the buffer ends up holding the transpose,
    and nothing outside the view is touched."""
    src_dtype, dst_type = conv
    x = rand((5, 33), 7, dtype=src_dtype)
    dst_np = np.dtype(np.float16 if dst_type == ggml.F16 else np.float32)
    buf = np.full((33 * 5 + 3,), 7.0, dtype=dst_np)
    with ggml.Context(1 << 20, threads=2) as ctx:
        whole = ctx.external(buf)
        # the buffer's first 165 elements as a (33, 5) matrix, transposed: a (5, 33) view with element
        # stride 5 * itemsize
        es = dst_np.itemsize
        dst = ctx.transpose(ctx.view(whole, [5, 33], [es, 5 * es], offset=0))
        assert dst.shape == (5, 33)
        _compute(ctx, ctx.cpy(engine_input(ctx, x, src_layout), dst), 2)
    np.testing.assert_array_equal(buf[: 5 * 33].reshape(33, 5), x.T.astype(dst_np))
    np.testing.assert_array_equal(buf[5 * 33 :], np.full(3, 7.0, dtype=dst_np))


def test_cpy_between_different_shapes() -> None:
    """Same element count, both contiguous: the flat sequence is copied (with conversion)."""
    x = rand((4, 15), 8)
    with ggml.Context(1 << 20) as ctx:
        dst = ctx.new_tensor(ggml.F16, (6, 10))
        got = _compute(ctx, ctx.cpy(ctx.tensor(x), dst))
        assert got.shape == (6, 10)
        assert bits_equal(got, x.reshape(6, 10).astype(np.float16))
        dst32 = ctx.new_tensor(ggml.F32, (3, 20))
        got32 = _compute(ctx, ctx.cpy(ctx.tensor(x.astype(np.float16)), dst32))
        assert bits_equal(got32, x.astype(np.float16).astype(np.float32).reshape(3, 20))


def test_cpy_orders_later_reads() -> None:
    """An op reading the cpy node sees the written values; the node stands for dst after the write."""
    x = rand((3, 8), 9)
    state = np.zeros((3, 8), dtype=np.float32)
    with ggml.Context(1 << 20) as ctx:
        dst = ctx.external(state)
        written = ctx.cpy(ctx.tensor(x), dst)
        out = ctx.add(written, written)
        got = _compute(ctx, out)
    np.testing.assert_array_equal(state, x)
    np.testing.assert_array_equal(got, 2 * x)


# ---- concat ----


@pytest.mark.parametrize("dim", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "dtypes",
    [(np.float32, np.float32), (np.float16, np.float32), (np.float32, np.float16)],
    ids=["f32", "f16-f32", "f32-f16"],
)
def test_concat(dim: int, dtypes: tuple[type, type], threads: int) -> None:
    shape_a = [2, 3, 5, 7]
    shape_b = list(shape_a)
    shape_a[3 - dim] = 4  # numpy axis of ggml dim `dim`
    shape_b[3 - dim] = 1
    a = rand(shape_a, dim, dtype=dtypes[0])
    b = rand(shape_b, dim + 10, dtype=dtypes[1])
    with ggml.Context(1 << 20, threads=threads) as ctx:
        got = _compute(ctx, ctx.concat(ctx.tensor(a), ctx.tensor(b), dim), threads)
    want = torch.cat(
        [torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32))], dim=3 - dim
    ).numpy()
    assert_close(got, want, rtol=0.0, atol=0.0, name="concat")


@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize(
    "layouts",
    [("transposed", "padded"), ("permuted", "contiguous"), ("padded", "permuted")],
    ids=lambda ls: "-".join(ls),
)
def test_concat_non_contiguous(dim: int, layouts: tuple[str, str]) -> None:
    a = rand((3, 5, 33), 1, dtype=np.float16)
    b = rand((3, 5, 33), 2)
    with ggml.Context(1 << 20, threads=2) as ctx:
        out = ctx.concat(engine_input(ctx, a, layouts[0]), engine_input(ctx, b, layouts[1]), dim)
        got = _compute(ctx, out, 2)
    want = np.concatenate([a.astype(np.float32), b], axis=2 - dim)
    assert_close(got, want, rtol=0.0, atol=0.0, name="concat")


@pytest.mark.parametrize("n", [1, 7, 4097])
def test_concat_row_lengths(n: int) -> None:
    a = rand((2, n), n)
    b = rand((2, 3), n + 1)
    with ggml.Context(1 << 20) as ctx:
        got = _compute(ctx, ctx.concat(ctx.tensor(a), ctx.tensor(b), 0))
    np.testing.assert_array_equal(got, np.concatenate([a, b], axis=1))


def test_concat_along_a_new_dimension() -> None:
    """Concatenating two 2-D tensors along dim 2 stacks them into a 3-D result."""
    a = rand((4, 6), 3)
    b = rand((4, 6), 4)
    with ggml.Context(1 << 20) as ctx:
        got = _compute(ctx, ctx.concat(ctx.tensor(a), ctx.tensor(b), 2))
    np.testing.assert_array_equal(got, np.stack([a, b]))


# ---- get_rows ----


@pytest.mark.parametrize("c", [1, 7, 33, 4097])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_get_rows(c: int, dtype: type, threads: int) -> None:
    v = 11
    table = rand((v, c), c, dtype=dtype)
    ids = np.array([0, 10, 3, 3, 7, 0, 1, 9, 10], dtype=np.int32)
    with ggml.Context(1 << 20, threads=threads) as ctx:
        got = _compute(ctx, ctx.get_rows(ctx.tensor(table), ctx.tensor(ids)), threads)
    want = torch.nn.functional.embedding(
        torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(table.astype(np.float32))
    ).numpy()
    assert_close(got, want, rtol=0.0, atol=0.0, name="get_rows")


@pytest.mark.parametrize("layout", ["transposed", "padded"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_get_rows_from_a_view(layout: str, dtype: type, simd_level: int) -> None:
    table = rand((13, 37), 5, dtype=dtype)
    ids = np.array([12, 0, 5, 5, 1], dtype=np.int32)
    with ggml.Context(1 << 20, threads=2) as ctx:
        got = _compute(ctx, ctx.get_rows(engine_input(ctx, table, layout), ctx.tensor(ids)), 2)
    np.testing.assert_array_equal(got, table[ids].astype(np.float32))


def test_get_rows_single_id() -> None:
    table = rand((4, 6), 6)
    with ggml.Context(1 << 20) as ctx:
        got = _compute(ctx, ctx.get_rows(ctx.tensor(table), ctx.tensor(np.array([2], dtype=np.int32))))
    np.testing.assert_array_equal(got, table[2:3])


# ---- sum_rows ----


@pytest.mark.parametrize("shape", [(1,), (7,), (5, 33), (2, 3, 4097), (2, 2, 3, 5)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_sum_rows(shape: tuple[int, ...], dtype: type, threads: int) -> None:
    x = rand(shape, sum(shape), dtype=dtype, low=-3.0, high=5.0)
    got = run_engine(lambda c, t: c.sum_rows(t), [x], threads=threads)
    x64 = torch.from_numpy(x.astype(np.float64))
    want = x64.sum(dim=-1, keepdim=True).numpy()
    bound = np.abs(x.astype(np.float64)).sum(axis=-1, keepdims=True)
    assert_norm_close(got, want, bound, tol=1e-6, name="sum_rows")


@pytest.mark.parametrize("layout", ["transposed", "permuted", "padded"])
def test_sum_rows_non_contiguous(layout: str) -> None:
    x = rand((3, 5, 33), 12)
    got = run_engine(lambda c, t: c.sum_rows(t), [x], threads=2, layouts=[layout])
    want = x.astype(np.float64).sum(axis=-1, keepdims=True)
    assert_norm_close(
        got, want, np.abs(x.astype(np.float64)).sum(axis=-1, keepdims=True), tol=1e-6, name="sum_rows"
    )


# ---- data at unaligned addresses (tensors mapped from a file sit at any byte offset) ----


def _misaligned(ctx: ggml.Context, arr: np.ndarray, shift: int = 1) -> ggml.Tensor:
    """An external tensor with ``arr``'s values whose data starts ``shift`` bytes past an aligned address."""
    raw = np.zeros(arr.nbytes + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + shift
    view = raw[start : start + arr.nbytes]
    view[:] = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8)
    engine_type = {np.dtype(np.float32): ggml.F32, np.dtype(np.float16): ggml.F16}[arr.dtype]
    return ctx.external(view, engine_type=engine_type, ne=list(reversed(arr.shape)))


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_unaligned_data(dtype: type, simd_level: int) -> None:
    x = rand((3, 37), 1, dtype=dtype)
    w = rand((5, 37), 2, dtype=dtype)
    b = rand((2, 37), 3)
    ln_w, ln_b = rand((37,), 4, low=0.5, high=1.5), rand((37,), 5)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    with ggml.Context(1 << 20, threads=2) as ctx:
        tx, tw = _misaligned(ctx, x, 1), _misaligned(ctx, w, 3)
        outs = {
            "neg": ctx.neg(tx),
            "add": ctx.add(tx, ctx.tensor(b[:1])),
            "layer_norm": ctx.layer_norm(tx, _misaligned(ctx, ln_w, 2), _misaligned(ctx, ln_b, 1)),
            "cont": ctx.cont(ctx.transpose(tx)),
            "get_rows": ctx.get_rows(tw, ctx.tensor(np.array([4, 0, 2], dtype=np.int32))),
            "mul_mat_vec": ctx.mul_mat(tw, ctx.tensor(b[:1])),
            "mul_mat": ctx.mul_mat(tw, ctx.tensor(b)),
        }
        ctx.graph(list(outs.values())).compute()
        got = {k: v.numpy() for k, v in outs.items()}
    np.testing.assert_array_equal(got["neg"], -x32)
    np.testing.assert_array_equal(got["add"], x32 + b[:1])
    mu = x32.astype(np.float64).mean(-1, keepdims=True)
    sd = np.sqrt(((x32 - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(got["layer_norm"], (x32 - mu) / sd * ln_w + ln_b, rtol=1e-5, atol=1e-5)
    assert bits_equal(got["cont"], np.ascontiguousarray(x.T))
    np.testing.assert_array_equal(got["get_rows"], w32[[4, 0, 2]])
    want = b.astype(np.float64) @ w32.T.astype(np.float64)
    bound = np.linalg.norm(b, axis=1)[:, None] * np.linalg.norm(w32, axis=1)[None, :]
    assert_norm_close(got["mul_mat"], want, bound, tol=1e-5, name="mul_mat/unaligned")
    assert_norm_close(got["mul_mat_vec"], want[:1], bound[:1], tol=1e-5, name="mul_mat/unaligned")
