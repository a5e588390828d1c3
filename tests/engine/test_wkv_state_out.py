"""The single-sequence WKV ops writing their new state straight into ``state_out`` (the model's graphs do,
so no copy node follows each layer's recurrence).

For v4, v5/v6 and v7, T in {1, 2, 9} and 1, 2 and 4 threads: with state_out a separate buffer, the same
buffer as the incoming state (two external tensors on one array, as an in-place eval has them) or the
state tensor itself, the output columns and the new state are bit-identical to the op without state_out
(output columns followed by the state in its result), and a separate incoming state is left untouched.
Bad state_out arguments (wrong size, partial overlap, read-only memory) are refused when the node is
built, and a partial overlap that only appears when caller buffers are repointed is a compute error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml.errors import EngineArgumentError, RwkvGgmlError, ShapeError

from .helpers import THREAD_COUNTS

F32 = np.float32
Op = Callable[..., ggml.Tensor]


def _v4(g: np.random.Generator, T: int) -> tuple[Op, list[np.ndarray], np.ndarray, int]:
    C = 70  # more than one 64-channel block
    dense = [
        g.uniform(-2, 2, (T, C)).astype(F32),
        g.uniform(-2, 2, (T, C)).astype(F32),
        g.uniform(-1, 1, C).astype(F32),
        -np.exp(g.uniform(-2, 1, C)).astype(F32),
    ]
    state = g.uniform(-1, 1, (3, C)).astype(F32)
    state[2] = g.uniform(-3, 3, C)  # pp, a running max exponent
    return (lambda ctx, *t, **kw: ctx.rwkv_wkv4(*t, **kw)), dense, state, C


def _v5(g: np.random.Generator, T: int) -> tuple[Op, list[np.ndarray], np.ndarray, int]:
    H, N = 3, 13
    C = H * N
    dense = [g.uniform(-1, 1, (T, C)).astype(F32) for _ in range(3)] + [
        g.uniform(0.3, 0.999, (T, C) if T > 1 else C).astype(F32),  # per channel and token (v6)
        g.uniform(-1, 1, C).astype(F32),
    ]
    return (lambda ctx, *t, **kw: ctx.rwkv_wkv5(*t, **kw)), dense, g.uniform(-1, 1, C * N).astype(F32), C


def _v7(g: np.random.Generator, T: int) -> tuple[Op, list[np.ndarray], np.ndarray, int]:
    H, N = 2, 16
    C = H * N
    r, k, v = (g.uniform(-1, 1, (T, C)).astype(F32) for _ in range(3))
    w = g.uniform(0.3, 0.999, (T, C)).astype(F32)
    kappa = g.uniform(-1, 1, (T, C)).astype(F32) / F32(N)
    alpha = g.uniform(0, 1, (T, C)).astype(F32)
    dense = [r, w, k, v, -kappa, kappa * alpha]
    return (lambda ctx, *t, **kw: ctx.rwkv_wkv7(*t, **kw)), dense, g.uniform(-1, 1, C * N).astype(F32), C


VERSIONS = {"v4": _v4, "v5": _v5, "v7": _v7}


def _appended(op: Op, dense: list[np.ndarray], state: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """The op without state_out: (y (T, C), new state flat)."""
    with ggml.Context(16 << 20, threads=1) as ctx:
        out = op(ctx, *[ctx.tensor(a) for a in dense], ctx.tensor(state))
        ctx.graph([out]).compute(1)
        res = out.numpy().copy()
    return res[:T], res[T:].reshape(-1)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("T", [1, 2, 9])
@pytest.mark.parametrize("threads", THREAD_COUNTS)
@pytest.mark.parametrize("where", ["apart", "same buffer", "state itself"])
def test_state_out_equals_the_appended_state(version: str, T: int, threads: int, where: str) -> None:
    g = np.random.default_rng(hash((version, T, threads, where)) % 2**32)
    op, dense, state, C = VERSIONS[version](g, T)
    y_want, s_want = _appended(op, dense, state, T)
    s_in = state.copy()
    s_out = np.full(state.size, np.nan, F32) if where == "apart" else s_in
    with ggml.Context(16 << 20, threads=threads) as ctx:
        st = ctx.external(s_in)
        if where == "state itself":
            dst = st
        else:  # a flat vector, as the model's state_out slot; on one array with st when "same buffer"
            dst = ctx.external(s_out, ne=[state.size])
        out = op(ctx, *[ctx.tensor(a) for a in dense], st, state_out=dst)
        assert tuple(out.ne[:2]) == (C, T)
        ctx.graph([out]).compute(threads)
        np.testing.assert_array_equal(out.numpy(), y_want)
    np.testing.assert_array_equal(s_out.reshape(-1), s_want)
    if where == "apart":
        np.testing.assert_array_equal(s_in, state)  # the incoming state is only read


@pytest.mark.parametrize("version", VERSIONS)
def test_bad_state_out_is_refused_when_built(version: str) -> None:
    g = np.random.default_rng(1)
    op, dense, state, _ = VERSIONS[version](g, 2)
    n = state.size
    with ggml.Context(16 << 20) as ctx:
        ins = [ctx.tensor(a) for a in dense]
        st = ctx.tensor(state)
        with pytest.raises(ShapeError, match="state_out"):
            op(ctx, *ins, st, state_out=ctx.tensor(np.zeros(n + 1, F32)))
        with pytest.raises(ShapeError, match="state_out"):
            op(ctx, *ins, st, state_out=ctx.tensor(np.zeros(n, np.float16)))
        both = ctx.tensor(np.zeros(2 * n, F32))
        ne = list(reversed(state.shape))  # v4's state is (C, 3), the others flat
        nb = [0] + [4 * ne[0]] * (len(ne) - 1)
        first, shifted = ctx.view(both, ne, nb, 0), ctx.view(both, [n], None, 4 * 4)
        with pytest.raises(EngineArgumentError, match="partly overlaps"):
            op(ctx, *ins, first, state_out=shifted)
        constant = ctx.external(np.zeros(n, F32), constant=True)
        with pytest.raises(EngineArgumentError, match="constant"):
            op(ctx, *ins, st, state_out=constant)
        # apart within one tensor is fine
        second = ctx.view(both, [n], None, n * 4)
        assert op(ctx, *ins, first, state_out=second) is not None


@pytest.mark.parametrize("version", VERSIONS)
def test_partial_overlap_of_repointed_buffers_is_a_compute_error(version: str) -> None:
    g = np.random.default_rng(2)
    op, dense, state, _ = VERSIONS[version](g, 3)
    n = state.size
    memory = np.zeros(2 * n, F32)
    memory[:n] = state.reshape(-1)
    with ggml.Context(16 << 20, threads=2) as ctx:
        st = ctx.external(memory[:n].reshape(state.shape))
        dst = ctx.external(np.zeros(n, F32))
        out = op(ctx, *[ctx.tensor(a) for a in dense], st, state_out=dst)
        graph = ctx.graph([out])
        graph.compute(2)  # apart: fine
        dst.set_data(memory[3 : 3 + n])  # now it overlaps the incoming state, shifted by 3 floats
        with pytest.raises(RwkvGgmlError, match="partly overlaps"):
            graph.compute(2)
