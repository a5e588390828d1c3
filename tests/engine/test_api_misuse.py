"""Misuse of the engine binding ends in a typed exception naming the problem, never a crash or corruption.

Each case was a SIGSEGV, a silently modified immutable buffer or an untyped/empty error before (issue 13,
items 1-4). A case that used to crash runs in a child interpreter, so that a SIGSEGV fails its test
instead of killing pytest; the child prints the name of the exception it caught.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rwkv_ggml
from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib
from rwkv_ggml.errors import ClosedError, EngineArgumentError, ShapeError

REPO = Path(rwkv_ggml.__file__).resolve().parents[1]


def run_child(body: str) -> str:
    """Runs ``body`` (which defines ``main()``) in a fresh interpreter; returns what it printed. The
    child prints the class name of the exception main() raised, or "no error"."""
    code = (
        "import numpy as np\nfrom rwkv_ggml import ggml\n"
        + textwrap.dedent(body)
        + textwrap.dedent("""
        try:
            main()
            print("no error")
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, f"child died with status {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout.strip()


@pytest.fixture
def ctx() -> Iterator[ggml.Context]:
    c = ggml.Context(1 << 20)
    yield c
    c.close()


def ones(n: int = 3) -> np.ndarray:
    return np.ones(n, np.float32)


# ---- item 1: a graph or tensor of a closed context ----


def test_compute_after_close_with_a_shared_pool_raises_closed_error() -> None:
    out = run_child("""
        def main():
            p = ggml.Pool(2)
            ctx = ggml.Context(1 << 20, pool=p)
            y = ctx.exp(ctx.tensor(np.ones(1000, np.float32)))
            g = ctx.graph([y])
            ctx.close()
            g.compute()
    """)
    assert out.startswith("ClosedError")


def test_every_use_of_a_closed_context_raises_closed_error() -> None:
    pool = ggml.Pool(2)
    ctx = ggml.Context(1 << 20, pool=pool)
    x = ctx.tensor(ones())
    y = ctx.exp(x)
    g = ctx.graph([y])
    ctx.close()
    # (g.compute is the case above: in-process it would crash pytest before the fix)
    uses: list[Callable[[], Any]] = [
        lambda: g.n_nodes,
        lambda: g.n_barriers,
        g.node_ops,
        lambda: g.node_indices([y]),
        y.numpy,
        lambda: y.ne,
        lambda: x.set_data(ones()),
        lambda: ctx.exp(x),
        lambda: ctx.graph([y]),
    ]
    for use in uses:
        with pytest.raises(ClosedError):
            use()
    pool.close()


# ---- item 2: tensors of another context ----


def test_compute_after_closing_a_foreign_operand_context_cannot_crash() -> None:
    out = run_child("""
        def main():
            a, b = ggml.Context(1 << 20), ggml.Context(1 << 20)
            y = a.add(a.tensor(np.ones(3, np.float32)), b.tensor(np.ones(3, np.float32)))
            g = a.graph([y])
            b.close()
            g.compute()
    """)
    assert out.startswith("EngineArgumentError") and "another context" in out


def _every_builder(c: ggml.Context, t: ggml.Tensor, own: ggml.Tensor) -> list[tuple[str, Callable[[], Any]]]:
    """Every public entry point that takes a tensor, called with ``t`` in one operand slot (``own`` of the
    calling context elsewhere)."""

    def fn(dst: np.ndarray, src: np.ndarray) -> None:
        pass

    return [
        ("view", lambda: c.view(t, [3])),
        ("reshape", lambda: c.reshape(t, [3])),
        ("permute", lambda: c.permute(t, [0, 1])),
        ("transpose", lambda: c.transpose(t)),
        ("cont", lambda: c.cont(t)),
        ("cpy src", lambda: c.cpy(t, own)),
        ("cpy dst", lambda: c.cpy(own, t)),
        *[(name, partial(getattr(c, name), own, t)) for name in ("add", "sub", "mul", "div", "max")],
        ("scale", lambda: c.scale(t, 2.0)),
        *[
            (name, partial(getattr(c, name), t))
            for name in (
                "neg",
                "exp",
                "one_minus_x",
                "sigmoid",
                "silu",
                "relu",
                "sqr",
                "sqrt",
                "tanh",
                "sum_rows",
            )
        ],
        ("layer_norm x", lambda: c.layer_norm(t)),
        ("layer_norm w", lambda: c.layer_norm(own, t)),
        ("layer_norm b", lambda: c.layer_norm(own, None, t)),
        ("group_norm", lambda: c.group_norm(own, 1, t)),
        ("mul_mat", lambda: c.mul_mat(t, own)),
        ("get_rows", lambda: c.get_rows(own, t)),
        ("concat", lambda: c.concat(own, t, 0)),
        ("map_unary", lambda: c.map_unary(t, fn)),
        ("map_binary", lambda: c.map_binary(own, t, fn)),
        ("rwkv_wkv4", lambda: c.rwkv_wkv4(own, own, own, own, t)),
        ("rwkv_wkv5", lambda: c.rwkv_wkv5(own, own, own, own, own, t)),
        ("rwkv_wkv7", lambda: c.rwkv_wkv7(own, own, own, own, own, own, t)),
        ("l2_norm", lambda: c.l2_norm(t, 1)),
        ("graph", lambda: c.graph([own, t])),
    ]


def test_every_builder_refuses_a_tensor_of_another_context(ctx: ggml.Context) -> None:
    with ggml.Context(1 << 20) as other:
        foreign, own = other.tensor(ones()), ctx.tensor(ones())
        for name, call in _every_builder(ctx, foreign, own):
            with pytest.raises(EngineArgumentError, match="belongs to another context"):
                call()
            assert ctx.used > 0, name
        y = ctx.exp(own)
        with pytest.raises(EngineArgumentError, match="another context"):
            ctx.graph([y]).node_indices([foreign])


def test_every_builder_refuses_what_is_not_a_tensor(ctx: ggml.Context) -> None:
    own = ctx.tensor(ones())
    for name, call in _every_builder(ctx, 5, own):  # type: ignore[arg-type]
        with pytest.raises(EngineArgumentError, match="must be a Tensor, got int"):
            call()
        assert name


def test_a_context_may_read_the_tensors_of_the_contexts_it_names() -> None:
    weights = ggml.Context(1 << 20)
    w = weights.external(np.full(3, 2.0, np.float32), constant=True)
    ctx = ggml.Context(1 << 20, reads=[weights])
    y = ctx.mul(ctx.tensor(ones()), w)
    g = ctx.graph([y])
    g.compute()
    np.testing.assert_array_equal(y.numpy(), np.full(3, 2.0, np.float32))
    weights.close()
    with pytest.raises(ClosedError, match="reads"):
        g.compute()
    with pytest.raises(ClosedError):
        y.numpy()
    ctx.close()
    with pytest.raises(ClosedError):
        ggml.Context(1 << 20, reads=[weights])
    # through a chain of contexts: c reads b, whose tensor views one of a
    a = ggml.Context(1 << 20)
    b = ggml.Context(1 << 20, reads=[a])
    c = ggml.Context(1 << 20, reads=[b])
    v = b.view(a.tensor(ones(4)), [2])
    g = c.graph([c.exp(v)])
    g.compute()
    a.close()
    with pytest.raises(ClosedError, match="reads"):
        g.compute()
    b.close()
    c.close()
    with pytest.raises(EngineArgumentError, match="reads"):
        ggml.Context(1 << 20, reads=[5])  # type: ignore[list-item]


# ---- item 3: read-only memory ----


def test_cpy_into_an_immutable_bytes_object_is_refused(ctx: ggml.Context) -> None:
    raw = bytes(16)
    dst = ctx.external(np.frombuffer(raw, np.float32))
    assert dst.is_readonly()
    with pytest.raises(EngineArgumentError, match="read-only"):
        ctx.cpy(ctx.tensor(np.ones(4, np.float32)), dst)
    with pytest.raises(EngineArgumentError, match="read-only"):
        ctx.cpy(ctx.tensor(np.ones(2, np.float32)), ctx.view(dst, [2], None, 8))  # through a view
    assert raw == bytes(16)
    # still a fine input
    y = ctx.add(dst, ctx.tensor(np.ones(4, np.float32)))
    ctx.graph([y]).compute()
    np.testing.assert_array_equal(y.numpy(), np.ones(4, np.float32))
    assert not dst.data_view().flags.writeable


def test_cpy_into_a_read_only_mmap_cannot_crash(tmp_path: Path) -> None:
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(4096))
    out = run_child(f"""
        import mmap
        def main():
            with open({str(path)!r}, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            ctx = ggml.Context(1 << 20)
            dst = ctx.external(np.frombuffer(m, np.float32))
            y = ctx.cpy(ctx.tensor(np.ones(1024, np.float32)), dst)
            ctx.graph([y]).compute()
    """)
    assert out.startswith("EngineArgumentError") and "read-only" in out
    assert path.read_bytes() == bytes(4096)


def test_a_written_tensor_cannot_be_repointed_at_read_only_memory(ctx: ggml.Context, tmp_path: Path) -> None:
    src_in = ctx.external(np.zeros(4, np.float32))
    dst = ctx.external(np.zeros(4, np.float32))
    y = ctx.cpy(ctx.exp(src_in), dst)
    g = ctx.graph([y])
    raw = bytes(16)
    with pytest.raises(EngineArgumentError, match="writable"):
        dst.set_data(np.frombuffer(raw, np.float32))
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(16))
    with open(path, "rb") as f:
        view = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.float32)
    with pytest.raises(EngineArgumentError, match="writable"):
        dst.set_data(view)
    src_in.set_data(view)  # a tensor the graph only reads may use it
    g.compute()
    np.testing.assert_array_equal(dst.numpy(), np.ones(4, np.float32))
    assert raw == bytes(16)


def test_cpy_into_constant_memory_is_refused(ctx: ggml.Context) -> None:
    w = ctx.external(np.zeros(4, np.float32), constant=True)
    with pytest.raises(EngineArgumentError, match="constant"):
        ctx.cpy(ctx.tensor(np.ones(4, np.float32)), w)
    dst = ctx.external(np.zeros(4, np.float32))
    ctx.cpy(ctx.tensor(np.ones(4, np.float32)), dst)
    # nor can a tensor that a graph writes be declared constant afterwards (raw C API)
    assert lib.rg_tensor_set_constant(ctx.ptr, dst.ptr) == lib.RG_E_ARG
    assert "cpy destination" in ffi.string(lib.rg_ctx_error(ctx.ptr)).decode()
    lib.rg_ctx_clear_error(ctx.ptr)


# ---- item 4: untyped or empty errors ----


def test_bad_argument_types_name_the_argument(ctx: ggml.Context) -> None:
    t = ctx.tensor(np.ones((4, 4), np.float32))
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: ctx.add(t, 5), "add: b must be a Tensor, got int"),  # type: ignore[arg-type]
        (lambda: ctx.view(t, [4, 4], [4, -16]), r"view: nb\[1\] must be >= 0, got -16"),
        (lambda: ctx.view(t, [4, 4], [4, 2**64]), r"view: nb\[1\] must be <= "),
        (lambda: ctx.view(t, [4.0, 4]), r"view: ne\[0\] must be an int, got float"),  # type: ignore[list-item]
        (lambda: ctx.view(t, [16], offset=-4), "view: offset must be >= 0"),
        (lambda: ctx.view(t, 16), "view: ne must be a sequence of ints, got int"),  # type: ignore[arg-type]
        (lambda: ctx.reshape(t, [2**70]), r"reshape: ne\[0\] must be <= "),
        (lambda: ctx.permute(t, [0, 1, 2, 3, 4]), "permute: axes has 5 entries"),
        (lambda: ctx.scale(t, "2"), "scale: s must be a number, got str"),  # type: ignore[arg-type]
        (lambda: ctx.group_norm(t, 2.5), "group_norm: n_groups must be an int, got float"),  # type: ignore[arg-type]
        (lambda: ctx.l2_norm(t, None), "l2_norm: n_groups must be an int"),  # type: ignore[arg-type]
        (lambda: ctx.concat(t, t, "0"), "concat: dim must be an int, got str"),  # type: ignore[arg-type]
        (lambda: ctx.layer_norm(t, eps=None), "layer_norm: eps must be a number"),  # type: ignore[arg-type]
        (lambda: ctx.new_tensor("F32", (2,)), "new_tensor: engine_type must be an int"),  # type: ignore[arg-type]
        (lambda: ctx.new_tensor(ggml.F32, (2.5,)), r"new_tensor: shape\[0\] must be an int"),  # type: ignore[arg-type]
        (lambda: ctx.new_tensor(ggml.F32, 3), "new_tensor: shape must be a sequence"),  # type: ignore[arg-type]
        (lambda: ctx.tensor([1.0, 2.0]), "expected a numpy array, got list"),  # type: ignore[arg-type]
        (lambda: ctx.external(b"1234", engine_type=ggml.F32, ne=[1]), "expected a numpy array"),  # type: ignore[arg-type]
        (lambda: ctx.external(np.zeros(4, np.uint8), engine_type=ggml.F32), "engine_type needs ne"),
        (lambda: ctx.graph(t), "graph: outputs must be a sequence of Tensors"),  # type: ignore[arg-type]
        (lambda: ctx.graph([t], max_threads="2"), "graph: max_threads must be an int"),  # type: ignore[arg-type]
        (lambda: ctx.graph([t]).compute(threads=1.5), "compute: threads must be an int"),  # type: ignore[arg-type]
        (lambda: ctx.graph([t]).compute(n_nodes=2**40), "compute: n_nodes must be <= "),
        (lambda: ctx.map_unary(t, lib_fn(), userdata=3), "userdata of a C callback"),
        (lambda: ggml.Context(1 << 20, pool=2), "pool must be a Pool"),  # type: ignore[arg-type]
        (lambda: ggml.simd_select("1"), "simd_select: max_level must be an int"),  # type: ignore[arg-type]
        (lambda: ggml.Context(2**70), "context size .* is not plausible"),
        (lambda: ggml.type_name("F32"), "type_name: type id must be an int"),  # type: ignore[arg-type]
        (lambda: ggml.block_size(2**40), "block_size: type id must be <= "),
    ]
    for call, message in cases:
        with pytest.raises(EngineArgumentError, match=message):
            call()
    with pytest.raises(EngineArgumentError, match="a tensor name must be a str, got int"):
        t.name = 5  # type: ignore[assignment]
    with pytest.raises(EngineArgumentError, match="NUL"):
        t.name = "a\0b"


def lib_fn() -> Any:
    return lib.rg_test_map_affine


@pytest.mark.parametrize("shape", [(2**40, 2**40), (2**21, 2**21, 2**21), (2**62, 4)])
def test_sizes_whose_product_overflows_are_shape_errors(ctx: ggml.Context, shape: tuple[int, ...]) -> None:
    with pytest.raises(ShapeError, match="more than 2\\^40 elements|must be 1..2\\^40"):
        ctx.new_tensor(ggml.F32, shape)
    with pytest.raises(ShapeError, match="more than 2\\^40 elements|must be 1..2\\^40"):
        ctx.external(np.zeros(4, np.uint8), engine_type=ggml.F32, ne=list(shape)[::-1])
    t = ctx.tensor(np.ones(16, np.float32))
    with pytest.raises(ShapeError, match="view: (more than 2\\^40 elements|dimension)"):
        ctx.view(t, list(shape)[::-1], [0] + [4] * (len(shape) - 1))
    with pytest.raises(ShapeError, match="reshape: 16 elements cannot become"):
        ctx.reshape(t, [2**32, 2**32, 2**32][: max(2, len(shape))])
    ctx.new_tensor(ggml.F32, (4,))  # the context stays usable


def test_a_builder_failing_without_a_status_is_reported_as_a_bug(ctx: ggml.Context) -> None:
    from rwkv_ggml.errors import InternalError

    with pytest.raises(InternalError, match="without reporting why"):
        ctx._wrap(ffi.NULL)


def test_a_model_reads_read_only_weights_and_states() -> None:
    """The model's weights are read-only maps and a caller's input state may be read-only memory (an
    immutable bytes object here): both only ever read, so both keep working; the results equal those of
    a writable copy."""
    from rwkv_ggml.model import Model
    from tests.conftest import tiny_path

    with Model(tiny_path("tiny-rwkv-5v2-730K-FP32.bin")) as m:
        _, state = m.eval(1)
        frozen = np.frombuffer(state.tobytes(), np.float32)
        assert not frozen.flags.writeable
        for tokens in ([2], [2, 3, 4]):
            got_logits, got_state = m.eval_sequence(tokens, frozen)
            want_logits, want_state = m.eval_sequence(tokens, state.copy())
            assert got_logits is not None and want_logits is not None
            np.testing.assert_array_equal(got_logits, want_logits)
            np.testing.assert_array_equal(got_state, want_state)
        np.testing.assert_array_equal(frozen, state)


def test_a_copied_tensor_of_a_no_alloc_context_may_be_written() -> None:
    with ggml.Context(1 << 20, no_alloc=True) as c:
        dst = c.tensor(np.zeros(4, np.float32))
        y = c.cpy(c.exp(c.tensor(np.zeros(4, np.float32))), dst)
        c.graph([y]).compute()
        np.testing.assert_array_equal(dst.numpy(), np.ones(4, np.float32))


def test_quantize_matrix_checks_its_arguments() -> None:
    from rwkv_ggml.quantization import quantize_matrix

    with pytest.raises(EngineArgumentError, match="expected a numpy array, got list"):
        quantize_matrix([[1.0] * 32], "Q8_0")  # type: ignore[arg-type]
    with pytest.raises(EngineArgumentError, match="pool must be a Pool"):
        quantize_matrix(np.ones((1, 32), np.float32), "Q8_0", pool=2)  # type: ignore[arg-type]
    blocks = quantize_matrix(np.ones((2, 64), np.float32), "Q8_0")
    assert blocks.shape == (2, 2 * ggml.block_bytes(ggml.Q8_0))
