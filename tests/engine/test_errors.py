"""Every error path of the engine raises the rwkv_ggml.errors class of its status, with a message.

Builders record a status and a message on the context and return NULL; the Python layer turns that into
an exception and clears the error, so the context stays usable after a failed call. Compute-time errors
(an id out of range for get_rows) come back from compute() with the graph's message, and the graph can be
computed again once the input is fixed. The raw C API is also checked with NULL arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib
from rwkv_ggml.errors import (
    ClosedError,
    DTypeError,
    EngineArgumentError,
    OutOfMemoryError,
    RwkvGgmlError,
    ShapeError,
    UnsupportedError,
)

from .helpers import rand


@pytest.fixture
def ctx() -> Iterator[ggml.Context]:
    c = ggml.Context(1 << 20, threads=2)
    yield c
    c.close()


def f32(c: ggml.Context, *shape: int) -> ggml.Tensor:
    return c.tensor(rand(shape, sum(shape)))


def i32(c: ggml.Context, *values: int) -> ggml.Tensor:
    return c.tensor(np.array(values, dtype=np.int32))


def q8(c: ggml.Context, rows: int = 2, k: int = 32) -> ggml.Tensor:
    """A Q8_0 tensor from raw bytes (34 bytes per block of 32)."""
    raw = np.zeros(rows * (k // 32) * 34, dtype=np.uint8)
    return c.external(raw, engine_type=ggml.Q8_0, ne=[k, rows])


def raises(
    cls: type[RwkvGgmlError], match: str
) -> AbstractContextManager[pytest.ExceptionInfo[RwkvGgmlError]]:
    return pytest.raises(cls, match=match)


# ---- shapes ----


def test_binary_shapes_that_do_not_broadcast(ctx: ggml.Context) -> None:
    with raises(ShapeError, r"add: shapes \(5, 3, 1, 1\) and \(4, 3, 1, 1\) do not broadcast \(dim 0\)"):
        ctx.add(f32(ctx, 3, 5), f32(ctx, 3, 4))
    with raises(ShapeError, "mul: .* do not broadcast"):
        ctx.mul(f32(ctx, 2, 3, 5), f32(ctx, 3, 3, 5))


def test_error_is_cleared_after_raising(ctx: ggml.Context) -> None:
    with pytest.raises(ShapeError):
        ctx.sub(f32(ctx, 3, 5), f32(ctx, 3, 4))
    assert lib.rg_ctx_status(ctx.ptr) == lib.RG_OK
    y = ctx.sub(f32(ctx, 3, 5), f32(ctx, 5))
    assert y.shape == (3, 5)


def test_norm_errors(ctx: ggml.Context) -> None:
    x = f32(ctx, 3, 8)
    with raises(ShapeError, "layer_norm: weight .* must be a contiguous F32 vector of 8 elements"):
        ctx.layer_norm(x, f32(ctx, 7))
    with raises(ShapeError, "layer_norm: bias .* must be a contiguous F32 vector of 8 elements"):
        ctx.layer_norm(x, None, ctx.tensor(np.zeros(8, np.float16)))
    column = ctx.transpose(ctx.view(f32(ctx, 8, 2), [1, 8], [4, 8]))  # 8 elements with a stride of 2
    with raises(ShapeError, "weight .* contiguous"):
        ctx.layer_norm(x, column)
    with raises(ShapeError, "group_norm: row length 8 cannot be split into 3 groups"):
        ctx.group_norm(x, 3)
    with raises(ShapeError, "cannot be split into 0 groups"):
        ctx.group_norm(x, 0)
    with raises(EngineArgumentError, "layer_norm: eps must be >= 0"):
        ctx.layer_norm(x, eps=-1e-5)
    with raises(EngineArgumentError, "eps must be >= 0"):
        ctx.group_norm(x, 2, eps=float("nan"))


def test_mul_mat_errors(ctx: ggml.Context) -> None:
    with raises(ShapeError, "mul_mat: a .* has rows of 8, b .* has rows of 9"):
        ctx.mul_mat(f32(ctx, 4, 8), f32(ctx, 2, 9))
    with raises(DTypeError, "mul_mat: b .* must be F32, got F16"):
        ctx.mul_mat(f32(ctx, 4, 8), ctx.tensor(np.zeros((2, 8), np.float16)))
    with raises(ShapeError, r"mul_mat: dim 2: a has 2, b has 3 \(a broadcasts only from 1\)"):
        ctx.mul_mat(f32(ctx, 2, 4, 8), f32(ctx, 3, 2, 8))
    with raises(ShapeError, "mul_mat: the rows of a .* must be contiguous"):
        ctx.mul_mat(ctx.transpose(f32(ctx, 8, 4)), f32(ctx, 2, 8))
    with raises(UnsupportedError, "mul_mat: weight type I32 is not supported"):
        ctx.mul_mat(ctx.tensor(np.zeros((4, 8), np.int32)), f32(ctx, 2, 8))


def test_concat_errors(ctx: ggml.Context) -> None:
    with raises(ShapeError, r"concat: dim 1 differs \(3 vs 4\)"):
        ctx.concat(f32(ctx, 3, 5), f32(ctx, 4, 5), 0)
    with raises(EngineArgumentError, "concat: dim must be 0..3, got 4"):
        ctx.concat(f32(ctx, 3, 5), f32(ctx, 3, 5), 4)
    with raises(EngineArgumentError, "dim must be 0..3, got -1"):
        ctx.concat(f32(ctx, 3, 5), f32(ctx, 3, 5), -1)
    with raises(DTypeError, "concat: b .* is I32"):
        ctx.concat(f32(ctx, 3), i32(ctx, 1, 2, 3), 0)


def test_view_and_reshape_errors(ctx: ggml.Context) -> None:
    t = f32(ctx, 4, 6)  # 96 bytes
    with raises(ShapeError, "view: view of .* reaches byte 100, past its 96 bytes"):
        ctx.view(t, [6, 4], [4, 24], offset=4)
    with raises(ShapeError, "view: .* past its 96 bytes"):
        ctx.view(t, [25], [4])
    with raises(ShapeError, "view: dimension 1 has size 0"):
        ctx.view(t, [6, 0], [4, 24])
    with raises(EngineArgumentError, "view: n_dims must be 1..4"):
        ctx.view(t, [1, 1, 1, 1, 1], [4, 4, 4, 4, 4])
    with raises(ShapeError, "reshape: 24 elements cannot become 25"):
        ctx.reshape(t, [5, 5])
    with raises(ShapeError, "reshape: dimension 0 has size 0"):
        ctx.reshape(t, [0, 24])
    with raises(EngineArgumentError, "reshape: .* is not contiguous"):
        ctx.reshape(ctx.transpose(t), [24])
    with raises(EngineArgumentError, r"permute: \(0, 0, 1, 2\) is not a permutation of 0..3"):
        ctx.permute(t, [0, 0, 1, 2])
    with raises(EngineArgumentError, "not a permutation"):
        ctx.permute(t, [0, 1, 2, 4])


@pytest.mark.parametrize(
    ("ne", "nb", "offset"),
    [
        ([1, 3], [4, 1 << 63], 0),  # (3 - 1) * 2^63 wraps to 0
        ([2, 2], [4, (1 << 64) - 4], 0),  # a "negative" stride
        ([4], [4], (1 << 64) - 8),  # an offset that wraps the end back into bounds
        ([1, 1 << 41], [4, 0], 0),  # more elements than any tensor may have
    ],
    ids=["stride-wraps", "negative-stride", "offset-wraps", "too-many-elements"],
)
def test_view_with_wrapping_strides_or_offset(
    ctx: ggml.Context, ne: list[int], nb: list[int], offset: int
) -> None:
    """Sizes, strides and offsets come from the caller: arithmetic that wraps around must not slip a view
    that reaches outside its tensor past the bounds check (reading it would crash or leak memory)."""
    t = f32(ctx, 4, 6)
    with pytest.raises(ShapeError, match="view"):
        ctx.view(t, ne, nb, offset=offset)
    # a wrapped offset stacked on a valid view's offset is caught too
    v = ctx.view(t, [4], [4], offset=8)
    with pytest.raises(ShapeError, match="view"):
        ctx.view(v, [2], [4], offset=(1 << 64) - 4)


def test_quantized_layout_errors(ctx: ggml.Context) -> None:
    q = q8(ctx)
    with raises(DTypeError, "permute: cannot move the row axis of a block-quantized tensor"):
        ctx.transpose(q)
    with raises(ShapeError, "view: row length 16 not a multiple of the block length"):
        ctx.view(q, [16], [34])
    with raises(ShapeError, "reshape: row length 16 not a multiple of the block length"):
        ctx.reshape(q, [16, 4])
    with raises(ShapeError, "new_tensor: row length 33 is not a multiple of the Q8_0 block length 32"):
        ctx.new_tensor(ggml.Q8_0, (2, 33))


def test_cpy_errors(ctx: ggml.Context) -> None:
    with raises(ShapeError, "cpy: src has 12 elements, dst 10"):
        ctx.cpy(f32(ctx, 3, 4), ctx.new_tensor(ggml.F32, (2, 5)))
    with raises(DTypeError, "cpy: cannot write into a I32 tensor"):
        ctx.cpy(f32(ctx, 3), i32(ctx, 1, 2, 3))
    with raises(DTypeError, "cpy: src .* is I32"):
        ctx.cpy(i32(ctx, 1, 2, 3), ctx.new_tensor(ggml.F32, (3,)))
    with raises(ShapeError, "cpy: shapes differ, so src and dst must both be contiguous"):
        ctx.cpy(ctx.transpose(f32(ctx, 4, 3)), ctx.new_tensor(ggml.F32, (2, 6)))


def test_map_errors(ctx: ggml.Context) -> None:
    with raises(ShapeError, r"map_binary: a and b must have the same shape \(dim 0: 5 vs 1\)"):
        ctx.map_binary(f32(ctx, 3, 5), f32(ctx, 3, 1), ffi.addressof(lib, "rg_test_map_hypot"))
    with raises(EngineArgumentError, "fn must be a C function pointer or a Python callable"):
        ctx.map_unary(f32(ctx, 3), 42)
    with raises(EngineArgumentError, "map_unary: NULL function"):
        ctx.map_unary(f32(ctx, 3), ffi.cast("rg_map_unary_fn", 0))
    with raises(EngineArgumentError, "map_binary: NULL function"):
        ctx.map_binary(f32(ctx, 3), f32(ctx, 3), ffi.cast("rg_map_binary_fn", 0))
    with raises(DTypeError, "map_unary: input .* is I32"):
        ctx.map_unary(i32(ctx, 1), ffi.addressof(lib, "rg_test_map_affine"), ffi.new("float[2]"))


# ---- types ----


@pytest.mark.parametrize("op", ["neg", "exp", "sigmoid", "tanh", "sqrt", "layer_norm", "sum_rows"])
def test_integer_tensor_in_a_float_op(ctx: ggml.Context, op: str) -> None:
    with raises(DTypeError, f"{op}: input .* is I32; element-wise ops take F32 or F16"):
        getattr(ctx, op)(i32(ctx, 1, 2, 3))


def test_quantized_tensor_in_element_wise_op(ctx: ggml.Context) -> None:
    with raises(DTypeError, "add: a .* is Q8_0"):
        ctx.add(q8(ctx), f32(ctx, 2, 32))


def test_unsupported_types(ctx: ggml.Context) -> None:
    with raises(UnsupportedError, "cont: type I32 is not supported"):
        ctx.cont(i32(ctx, 1, 2))
    with raises(UnsupportedError, "get_rows: table type I32 is not supported"):
        ctx.get_rows(ctx.tensor(np.zeros((3, 4), np.int32)), i32(ctx, 0))
    # a quantized type whose codec is not built yet must be refused, not read as garbage
    if (
        not lib.rg_type_is_quantized(ggml.Q8_0)
        or lib.rg_type_to_f32(ggml.Q8_0, ffi.NULL, ffi.NULL, 0) != lib.RG_OK
    ):
        with raises(UnsupportedError, "mul_mat: weight type Q8_0 is not supported"):
            ctx.mul_mat(q8(ctx), f32(ctx, 1, 32))
        with raises(UnsupportedError, "cont: type Q8_0 is not supported"):
            ctx.cont(q8(ctx))


def test_bad_tensor_types(ctx: ggml.Context) -> None:
    with raises(DTypeError, "new_tensor: unknown tensor type 5"):
        ctx.new_tensor(5, (4,))
    with raises(DTypeError, "unknown tensor type -1"):
        ctx.new_tensor(-1, (4,))
    with raises(EngineArgumentError, "unsupported dtype float64"):
        ctx.tensor(np.zeros(4))
    with raises(EngineArgumentError, "unsupported dtype int64"):
        ctx.tensor(np.zeros(4, np.int64))
    with raises(EngineArgumentError, "expected a numpy array"):
        ctx.external([1.0, 2.0])  # type: ignore[arg-type]


def test_get_rows_build_errors(ctx: ggml.Context) -> None:
    table = f32(ctx, 5, 4)
    with raises(DTypeError, "get_rows: ids must be an I32 vector"):
        ctx.get_rows(table, f32(ctx, 2))
    with raises(DTypeError, "ids must be an I32 vector"):
        ctx.get_rows(table, ctx.tensor(np.zeros((2, 2), np.int32)))
    with raises(ShapeError, "get_rows: table must be 2-D"):
        ctx.get_rows(f32(ctx, 2, 5, 4), i32(ctx, 0))


@pytest.mark.parametrize("bad_id", [5, -1, 2**31 - 1, -(2**31)])
def test_get_rows_id_out_of_range_at_compute(bad_id: int) -> None:
    table = rand((5, 4), 1)
    ids = np.array([1, bad_id, 4], dtype=np.int32)
    with ggml.Context(1 << 20, threads=2) as ctx:
        t_ids = ctx.external(ids)
        out = ctx.get_rows(ctx.tensor(table), t_ids)
        g = ctx.graph([out])
        with raises(EngineArgumentError, rf"get_rows: id {bad_id} at position 1 is outside 0..4"):
            g.compute()
        got = out.numpy()
        np.testing.assert_array_equal(got[1], np.zeros(4, np.float32))  # the bad row is zero-filled
        np.testing.assert_array_equal(got[[0, 2]], table[[1, 4]])
        ids[1] = 2  # fix the input in place: the same graph now computes cleanly
        g.compute()
        np.testing.assert_array_equal(out.numpy(), table[[1, 2, 4]])


# ---- arena, contexts, pools, graphs ----


def test_arena_exhausted() -> None:
    with ggml.Context(4096) as ctx:
        with raises(
            OutOfMemoryError, r"context arena exhausted: \d+ bytes requested, \d+ of 4096 bytes free"
        ):
            ctx.new_tensor(ggml.F32, (1024, 1024))
        # the failed request took nothing: small tensors still fit
        used = ctx.used
        ctx.new_tensor(ggml.F32, (8,))
        assert ctx.used > used
        with raises(OutOfMemoryError, "arena exhausted"):
            for _ in range(100):
                ctx.neg(ctx.new_tensor(ggml.F32, (16,)))


def test_arena_exhausted_while_building_a_graph() -> None:
    with ggml.Context(64 << 10) as ctx:
        y = ctx.new_tensor(ggml.F32, (16,))
        try:
            while True:
                y = ctx.neg(y)
        except OutOfMemoryError:
            pass
        with raises(OutOfMemoryError, "arena exhausted"):
            ctx.graph([y])


def test_bad_context_sizes() -> None:
    with raises(EngineArgumentError, "mem_size must be a positive int"):
        ggml.Context(0)
    with raises(EngineArgumentError, "mem_size must be a positive int"):
        ggml.Context(-5)
    with raises(EngineArgumentError, "context size .* is not plausible"):
        ggml.Context(1 << 50)


# A constructor that fails part-way must not leave a half-built object whose __del__ then fails (and, for
# a Context, leaks the arena allocated before the pool was refused).
NO_UNRAISABLE = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


@NO_UNRAISABLE
@pytest.mark.parametrize("n", [0, -1])
def test_bad_pool_sizes_in_python(n: int) -> None:
    with raises(EngineArgumentError, "threads must be a positive int"):
        ggml.Context(1 << 16, threads=n)


@NO_UNRAISABLE
def test_bad_pool_size_in_c() -> None:
    with raises(EngineArgumentError, "thread count must be 1..512, got 513"):
        ggml.Pool(513)


@pytest.mark.parametrize("max_threads", [0, 513])
def test_graph_build_thread_limits(ctx: ggml.Context, max_threads: int) -> None:
    with raises(EngineArgumentError, f"graph_build: max_threads must be 1..512, got {max_threads}"):
        ctx.graph([ctx.neg(f32(ctx, 2))], max_threads=max_threads)


def test_graph_without_outputs(ctx: ggml.Context) -> None:
    with raises(EngineArgumentError, "graph: no outputs"):
        ctx.graph([])


def test_graph_with_too_many_threads(ctx: ggml.Context) -> None:
    g = ctx.graph([ctx.neg(f32(ctx, 2))])
    with raises(
        EngineArgumentError, r"cannot compute with 8 threads \(graph built for up to 2, pool has 2\)"
    ):
        g.compute(threads=8)


def test_external_tensor_errors(ctx: ggml.Context) -> None:
    with raises(EngineArgumentError, "new_tensor_ext: buffer has 30 bytes, tensor needs 34"):
        ctx.external(np.zeros(30, np.uint8), engine_type=ggml.Q8_0, ne=[32])
    with raises(EngineArgumentError, "the array must be C-contiguous"):
        ctx.tensor(np.zeros((4, 4), np.float32)[:, ::2], copy=False)
    with raises(ShapeError, "tensors have at most 4 dimensions"):
        ctx.tensor(np.zeros((1, 1, 1, 1, 2), np.float32))
    t = ctx.external(np.zeros(8, np.float32))
    with raises(EngineArgumentError, "tensor_set_data: buffer has 16 bytes, tensor .* needs 32"):
        t.set_data(np.zeros(4, np.float32))
    with raises(EngineArgumentError, "array dtype float16 does not match the tensor type F32"):
        t.set_data(np.zeros(8, np.float16))


def test_set_data_errors_leave_the_context_usable(ctx: ggml.Context) -> None:
    """A failed set_data raises with its message and, like a failed builder, leaves no error behind that
    a later, valid call would then report."""
    owned = f32(ctx, 8)
    with raises(EngineArgumentError, "tensor_set_data: .* was not made by new_tensor_ext"):
        owned.set_data(np.zeros(8, np.float32))
    ext = ctx.external(np.zeros(8, np.float32))
    with raises(EngineArgumentError, "tensor_set_data: buffer has 16 bytes"):
        ext.set_data(np.zeros(4, np.float32))
    y = ctx.neg(ext)
    assert y.shape == (8,)


def test_copied_tensor_in_a_no_alloc_context_keeps_its_values() -> None:
    """``ctx.tensor(array)`` in a no_alloc context has no memory to copy into: it must either refuse
    with a clear error or still deliver the array's values to the graph, never silently compute on
    uninitialised memory."""
    x = rand((3, 5), 20)
    with ggml.Context(1 << 20, no_alloc=True) as c:
        try:
            t = c.tensor(x)
        except EngineArgumentError:
            return
        y = c.neg(t)
        c.graph([y]).compute()
        np.testing.assert_array_equal(y.numpy(), -x)


def test_numpy_of_tensors_without_numpy_form(ctx: ggml.Context) -> None:
    with raises(EngineArgumentError, "Q8_0 tensors have no numpy dtype"):
        q8(ctx).numpy()
    with ggml.Context(1 << 16, no_alloc=True) as m, raises(EngineArgumentError, "the tensor has no data"):
        m.new_tensor(ggml.F32, (4,)).numpy()


def test_new_tensor_shape_errors(ctx: ggml.Context) -> None:
    with raises(ShapeError, "new_tensor: dimension 0 has size 0"):
        ctx.new_tensor(ggml.F32, (4, 0))
    with raises(ShapeError, r"new_tensor: dimension 1 has size -3 \(must be 1..2\^40\)"):
        ctx.new_tensor(ggml.F32, (-3, 4))
    with raises(ShapeError, r"more than 2\^40 elements"):
        ctx.new_tensor(ggml.F32, (1 << 21, 1 << 21))
    with raises(EngineArgumentError, "new_tensor: n_dims must be 1..4, got 5"):
        ctx.new_tensor(ggml.F32, (1, 1, 1, 1, 2))


def test_closed_objects() -> None:
    c = ggml.Context(1 << 16)
    t = f32(c, 3)
    c.close()
    with raises(ClosedError, "the context was closed"):
        c.neg(t)
    with raises(ClosedError, "the context was closed"):
        _ = t.shape
    p = ggml.Pool(2)
    p.close()
    with raises(ClosedError, "the thread pool was closed"):
        _ = p.ptr


# ---- the raw C API with NULLs: statuses, never a crash ----


def test_c_api_null_arguments() -> None:
    assert lib.rg_ctx_status(ffi.NULL) == lib.RG_E_ARG
    assert ffi.string(lib.rg_ctx_error(ffi.NULL)) == b"NULL context"
    assert lib.rg_graph_compute(ffi.NULL, ffi.NULL, 1) == lib.RG_E_ARG
    assert ffi.string(lib.rg_graph_error(ffi.NULL)) == b"NULL graph"
    assert lib.rg_add(ffi.NULL, ffi.NULL, ffi.NULL) == ffi.NULL
    assert lib.rg_tensor_n_elements(ffi.NULL) == 0
    assert lib.rg_graph_n_nodes(ffi.NULL) == 0
    assert lib.rg_ctx_used(ffi.NULL) == 0
    lib.rg_ctx_free(ffi.NULL)
    lib.rg_pool_free(ffi.NULL)
    with ggml.Context(1 << 16) as c:
        p = c.ptr
        assert lib.rg_add(p, ffi.NULL, ffi.NULL) == ffi.NULL
        assert lib.rg_ctx_status(p) == lib.RG_E_ARG
        assert ffi.string(lib.rg_ctx_error(p)) == b"add: NULL operand"
        # the first error is kept: a later failing builder does not overwrite it
        assert lib.rg_neg(p, ffi.NULL) == ffi.NULL
        assert ffi.string(lib.rg_ctx_error(p)) == b"add: NULL operand"
        lib.rg_ctx_clear_error(p)
        assert lib.rg_graph_build(p, ffi.NULL, 1, 1) == ffi.NULL
        assert ffi.string(lib.rg_ctx_error(p)) == b"graph_build: no outputs"
        lib.rg_ctx_clear_error(p)
        outs = ffi.new("rg_tensor *[]", [ffi.NULL])
        assert lib.rg_graph_build(p, outs, 1, 1) == ffi.NULL
        assert ffi.string(lib.rg_ctx_error(p)) == b"graph_build: output 0 is NULL"
        lib.rg_ctx_clear_error(p)
        assert lib.rg_tensor_set_data(p, ffi.NULL, ffi.NULL, 0) == lib.RG_E_ARG
        lib.rg_ctx_clear_error(p)
        assert lib.rg_new_tensor_ext(p, ggml.F32, 1, ffi.new("int64_t[]", [4]), ffi.NULL, 16) == ffi.NULL
        assert b"data is NULL" in ffi.string(lib.rg_ctx_error(p))
        lib.rg_ctx_clear_error(p)
        assert lib.rg_new_tensor(p, ggml.F32, 1, ffi.NULL) == ffi.NULL
        assert lib.rg_ctx_status(p) == lib.RG_E_ARG


def test_c_api_type_conversion_errors() -> None:
    src = ffi.new("float[64]")
    dst = ffi.new("uint8_t[256]")
    assert lib.rg_type_from_f32(5, src, dst, 4) == lib.RG_E_TYPE
    assert lib.rg_type_from_f32(99, src, dst, 4) == lib.RG_E_TYPE
    assert lib.rg_type_from_f32(ggml.I32, src, dst, 4) == lib.RG_E_UNSUPPORTED
    assert lib.rg_type_from_f32(ggml.F16, src, dst, -1) == lib.RG_E_SHAPE
    assert lib.rg_type_from_f32(ggml.F16, ffi.NULL, dst, 4) == lib.RG_E_ARG
    assert lib.rg_type_to_f32(ggml.F16, dst, ffi.NULL, 4) == lib.RG_E_ARG
    assert lib.rg_type_to_f32(ggml.Q8_0, dst, src, 33) == lib.RG_E_SHAPE
    assert lib.rg_type_from_f32(ggml.F16, ffi.NULL, ffi.NULL, 0) == lib.RG_OK
    assert lib.rg_type_row_bytes(ggml.Q8_0, 33) == 0
    assert lib.rg_type_row_bytes(99, 4) == 0
    assert ffi.string(lib.rg_type_name(99)) == b"invalid"
