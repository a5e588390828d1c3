"""Graphs, arenas, threads and dispatch (graph.c, context.c, pool.c, simd/cpu.c).

A graph of a few hundred nodes (every op kind, views and a cpy into a caller-owned state buffer) is
built once and computed many times: results must be identical each time, no arena memory may be taken
by a compute, and 1, 2 and 4 threads must give bit-identical results. A no_alloc context measures what a
graph needs (``required``); a real context of exactly that size must then hold it. Also covered: a busy
graph (compute re-entered from a callback), closed contexts, bad thread counts, and the
RWKV_GGML_FORCE_SCALAR switch in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rwkv_ggml import ggml
from rwkv_ggml.errors import BusyError, ClosedError, EngineArgumentError, OutOfMemoryError

from .helpers import assert_close, bits_equal, rand

REPO_ROOT = Path(__file__).resolve().parents[2]
C, T, LAYERS = 48, 3, 12


def _weights(seed: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {"x": r.standard_normal((T, C)).astype(np.float32)}
    for i in range(LAYERS):
        w[f"ln_w{i}"] = r.uniform(0.5, 1.5, C).astype(np.float32)
        w[f"ln_b{i}"] = r.uniform(-0.2, 0.2, C).astype(np.float32)
        w[f"k{i}"] = (r.standard_normal((2 * C, C)) / np.sqrt(C)).astype(np.float16)
        w[f"v{i}"] = (r.standard_normal((C, 2 * C)) / np.sqrt(2 * C)).astype(np.float32)
        w[f"mix{i}"] = r.uniform(0, 1, C).astype(np.float32)
    return w


def _build_model(ctx: ggml.Context, w: dict[str, np.ndarray], state: ggml.Tensor) -> list[ggml.Tensor]:
    """A small RWKV-like stack: ~35 nodes per layer, 12 layers. Returns [output, state write].
    (Weights are zero-copy: a no_alloc context has no memory to copy them into.)"""
    t = {k: ctx.external(v) for k, v in w.items()}
    x = t["x"]
    for i in range(LAYERS):
        h = ctx.layer_norm(x, t[f"ln_w{i}"], t[f"ln_b{i}"], 1e-5)
        # token shift: previous row (the state row for the first token) mixed with the current one
        prev = ctx.concat(state, ctx.view(h, [C, T - 1], [4, C * 4]), 1)
        mixed = ctx.add(ctx.mul(h, t[f"mix{i}"]), ctx.mul(prev, ctx.one_minus_x(t[f"mix{i}"])))
        k = ctx.sqr(ctx.relu(ctx.mul_mat(t[f"k{i}"], mixed)))
        v = ctx.mul_mat(t[f"v{i}"], ctx.cont(ctx.transpose(ctx.cont(ctx.transpose(k)))))
        gate = ctx.sigmoid(ctx.scale(ctx.sum_rows(ctx.tanh(h)), 0.1))
        g = ctx.group_norm(ctx.add(v, ctx.silu(h)), 4, None, None, 64e-5)
        x = ctx.add(x, ctx.mul(g, gate))
        x = ctx.sub(x, ctx.scale(ctx.max(x, ctx.neg(x)), 0.01))
        x = ctx.div(
            x,
            ctx.add(ctx.sqrt(ctx.add(ctx.sqr(x), ctx.exp(ctx.neg(ctx.sqr(x))))), ctx.exp(ctx.scale(x, 0.0))),
        )
    last = ctx.view(x, [C], [4], offset=(T - 1) * C * 4)
    write = ctx.cpy(last, state)
    return [x, write]


def _torch_model(w: dict[str, np.ndarray], state0: np.ndarray) -> np.ndarray:
    tw = {k: torch.from_numpy(v.astype(np.float64)) for k, v in w.items()}
    x = tw["x"]
    state = torch.from_numpy(state0.astype(np.float64))
    for i in range(LAYERS):
        h = F.layer_norm(x, (C,), tw[f"ln_w{i}"], tw[f"ln_b{i}"], 1e-5)
        prev = torch.cat([state[None, :], h[:-1]], 0)
        mixed = h * tw[f"mix{i}"] + prev * (1 - tw[f"mix{i}"])
        k = torch.relu(mixed @ tw[f"k{i}"].T) ** 2
        v = k @ tw[f"v{i}"].T
        gate = torch.sigmoid(torch.tanh(h).sum(-1, keepdim=True) * 0.1)
        g = F.group_norm(v + F.silu(h), 4, None, None, 64e-5)
        x = x + g * gate
        x = x - torch.maximum(x, -x) * 0.01
        x = x / (torch.sqrt(x * x + torch.exp(-(x * x))) + 1.0)
    return x.numpy()


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return _weights(2024)


def test_big_graph_repeated_computes_are_identical_and_allocation_free(
    weights: dict[str, np.ndarray],
) -> None:
    state = np.zeros(C, dtype=np.float32)
    with ggml.Context(8 << 20, threads=2) as ctx:
        out, write = _build_model(ctx, weights, ctx.external(state))
        g = ctx.graph([out, write])
        assert g.n_nodes >= 300, f"the test graph should have a few hundred nodes, has {g.n_nodes}"
        used = ctx.used
        g.compute()
        first = out.numpy()
        state_after_first = state.copy()
        assert not np.array_equal(state_after_first, 0), "the cpy into the caller-owned state did not happen"
        # the model's first pass ran with a zero state: compare with PyTorch
        assert_close(
            first,
            _torch_model(weights, np.zeros(C, np.float32)).astype(np.float32),
            rtol=1e-4,
            atol=1e-4,
            name="graph/model",
        )
        # the state now differs, so the next compute differs; reset it to repeat the first one exactly
        for _ in range(5):
            state[:] = 0
            g.compute()
            assert bits_equal(out.numpy(), first)
            assert bits_equal(state, state_after_first)
            assert ctx.used == used, "compute took memory from the arena"
        # with the state carried over, the result follows the reference fed that state
        g.compute()
        assert_close(
            out.numpy(),
            _torch_model(weights, state_after_first).astype(np.float32),
            rtol=1e-4,
            atol=1e-4,
            name="graph/model",
        )


def test_thread_counts_are_bit_identical(weights: dict[str, np.ndarray]) -> None:
    results = {}
    state = np.zeros(C, dtype=np.float32)
    with ggml.Context(8 << 20, threads=4) as ctx:
        out, write = _build_model(ctx, weights, ctx.external(state))
        g = ctx.graph([out, write])
        for n in (1, 2, 4, 3, 1):
            state[:] = 0
            g.compute(threads=n)
            results[n] = (out.numpy(), state.copy())
    for n in (2, 3, 4):
        assert bits_equal(results[n][0], results[1][0]), f"{n} threads differ from 1 thread"
        assert bits_equal(results[n][1], results[1][1])


def test_no_alloc_measures_the_exact_size(weights: dict[str, np.ndarray]) -> None:
    state = np.zeros(C, dtype=np.float32)
    with ggml.Context(8 << 20, threads=2, no_alloc=True) as measure:
        leaf = measure.new_tensor(ggml.F32, (4,))
        with pytest.raises(EngineArgumentError, match="no data"):
            leaf.numpy()
        out, write = _build_model(measure, weights, measure.external(state))
        measure.graph([out, write])
        required = measure.required
        assert measure.used < required, "a no_alloc context must not hold tensor data in its arena"
    with ggml.Context(required, threads=2) as ctx:
        out, write = _build_model(ctx, weights, ctx.external(state))
        g = ctx.graph([out, write])
        assert ctx.size == required
        assert required - ctx.used <= 4096, f"required overestimates by {required - ctx.used} bytes"
        g.compute()
        assert np.isfinite(out.numpy()).all()
    # and a context much smaller than that cannot hold it: the arena reports exhaustion, never overflows
    with (
        ggml.Context(required // 2, threads=2) as small,
        pytest.raises(OutOfMemoryError, match="arena exhausted"),
    ):
        out, write = _build_model(small, weights, small.external(state))
        small.graph([out, write])


def test_no_alloc_graph_computes_in_planned_memory(weights: dict[str, np.ndarray]) -> None:
    """A graph built in a no_alloc context places its tensors in one planned buffer (reusing memory of
    intermediates no longer read) and computes exactly what a fully allocated context computes."""
    state = np.zeros(C, dtype=np.float32)
    with ggml.Context(8 << 20, threads=2) as ctx:
        out, write = _build_model(ctx, weights, ctx.external(state))
        ctx.graph([out, write]).compute()
        want, want_state = out.numpy(), state.copy()
    for threads in (1, 2):
        state[:] = 0
        with ggml.Context(8 << 20, threads=threads, no_alloc=True) as ctx:
            out, write = _build_model(ctx, weights, ctx.external(state))
            g = ctx.graph([out, write])
            used = ctx.used
            for _ in range(3):
                state[:] = 0
                g.compute()
                assert bits_equal(out.numpy(), want), f"planned memory changed the result ({threads} threads)"
                assert bits_equal(state, want_state)
            assert ctx.used == used
            with pytest.raises(EngineArgumentError, match="already belongs to another planned graph"):
                ctx.graph([ctx.neg(out)])


def test_partial_compute_of_a_prefix() -> None:
    x = rand((3, 9), 3)
    with ggml.Context(1 << 20, threads=2) as ctx:
        a = ctx.exp(ctx.tensor(x))
        b = ctx.tanh(ctx.mul(a, a))
        g = ctx.graph([a, b])
        (ia,) = g.node_indices([a])
        b_before = b.numpy()
        g.compute(n_nodes=ia + 1)
        np.testing.assert_allclose(a.numpy(), np.exp(x), rtol=1e-6)
        assert bits_equal(b.numpy(), b_before), "b must not be computed by the prefix"
        g.compute()
        np.testing.assert_allclose(b.numpy(), np.tanh(np.exp(x) ** 2), rtol=1e-5)
        with pytest.raises(EngineArgumentError, match="cannot compute 99 nodes"):
            g.compute(n_nodes=99)


def test_external_inputs_can_be_repointed_between_computes() -> None:
    """One built graph reads different caller buffers on each compute (set_data), views included."""
    a1, a2 = rand((3, 8), 1), rand((3, 8), 2)
    with ggml.Context(1 << 20) as ctx:
        t = ctx.external(a1)
        y = ctx.cont(ctx.transpose(ctx.view(t, [4, 3], [4, 32], offset=16)))  # columns 4..7, transposed
        g = ctx.graph([ctx.neg(y)])
        out = g.outputs[0]
        g.compute()
        np.testing.assert_array_equal(out.numpy(), -a1[:, 4:].T)
        t.set_data(a2)
        g.compute()
        np.testing.assert_array_equal(out.numpy(), -a2[:, 4:].T)


def test_graph_with_several_outputs_shares_nodes() -> None:
    x = rand((2, 5), 3)
    with ggml.Context(1 << 20) as ctx:
        h = ctx.exp(ctx.tensor(x))
        a, b = ctx.neg(h), ctx.sqr(h)
        g = ctx.graph([a, b, a])
        assert g.node_ops().count("exp") == 1, "a shared node must be computed once"
        g.compute()
        np.testing.assert_allclose(a.numpy(), -np.exp(x), rtol=1e-6)
        np.testing.assert_allclose(b.numpy(), np.exp(x) ** 2, rtol=1e-6)


def test_busy_graph_is_refused() -> None:
    """A graph computed while it is already being computed (here: re-entered from a callback) reports
    BusyError instead of racing."""
    errors: list[BaseException] = []
    holder: dict[str, ggml.Graph] = {}

    def fn(dst: np.ndarray, src: np.ndarray) -> None:
        try:
            holder["g"].compute(threads=1)
        except BaseException as exc:
            errors.append(exc)
        dst[:] = src

    with ggml.Context(1 << 20) as ctx:
        out = ctx.map_unary(ctx.tensor(rand((1, 4), 4)), fn)
        holder["g"] = ctx.graph([out])
        holder["g"].compute(threads=1)
        assert len(errors) == 1 and isinstance(errors[0], BusyError), errors
        # once the outer compute is over the graph is usable again
        errors.clear()
        holder["g"].compute(threads=1)
        assert len(errors) == 1 and isinstance(errors[0], BusyError)


@pytest.mark.parametrize("n", [0, 3, 9])
def test_compute_with_a_bad_thread_count(n: int) -> None:
    with ggml.Context(1 << 20, threads=2) as ctx:
        g = ctx.graph([ctx.neg(ctx.tensor(rand((4,), 5)))])
        with pytest.raises(EngineArgumentError, match=f"cannot compute with {n} threads"):
            g.compute(threads=n)


def test_alternating_thread_counts_on_one_pool() -> None:
    """Runs that use part of the pool alternate with runs that use all of it, with pauses that let idle
    workers fall asleep: a worker that wakes late for a run it is not part of must not join (or repeat)
    the next one. (This is a regression guard; the race it guards against needs an unlucky preemption.)"""
    x = rand((8, 16), 7)
    with ggml.Context(1 << 20, threads=4) as ctx:
        y = ctx.tensor(x)
        for _ in range(3):
            y = ctx.tanh(ctx.add(y, y))
        g = ctx.graph([y])
        g.compute(threads=1)
        ref = y.numpy()
        for i in range(150):
            if i % 10 == 0:
                time.sleep(0.001)
            for n in (2, 4, 3):
                g.compute(threads=n)
                assert bits_equal(y.numpy(), ref), f"run {i} with {n} threads"


def test_graph_built_for_fewer_threads_than_the_pool() -> None:
    with ggml.Context(1 << 20, threads=4) as ctx:
        g = ctx.graph([ctx.neg(ctx.tensor(rand((4,), 6)))], max_threads=2)
        g.compute(threads=2)
        with pytest.raises(EngineArgumentError, match="graph built for up to 2"):
            g.compute(threads=4)


def test_closed_context() -> None:
    ctx = ggml.Context(1 << 20)
    x = ctx.tensor(rand((4,), 7))
    y = ctx.neg(x)
    g = ctx.graph([y])
    ctx.close()
    ctx.close()  # idempotent
    with pytest.raises(ClosedError):
        ctx.neg(x)
    with pytest.raises(ClosedError):
        y.numpy()
    with pytest.raises(ClosedError):
        g.compute()
    with pytest.raises(ClosedError):
        ctx.tensor(rand((2,), 1))
    with pytest.raises(ClosedError):
        _ = ctx.used
    assert "closed" in repr(y)


def test_many_contexts_and_pools_come_and_go() -> None:
    """Pools are created with the context and joined at close: no thread or memory left behind."""
    x = rand((64, 33), 8)
    for i in range(30):
        with ggml.Context(1 << 20, threads=1 + i % 4) as ctx:
            y = ctx.tanh(ctx.tensor(x))
            ctx.graph([y]).compute()
            np.testing.assert_allclose(y.numpy(), np.tanh(x), rtol=1e-5, atol=1e-7)


# ---- SIMD dispatch ----


def test_simd_select_clamps() -> None:
    top = ggml.simd_max_level()
    before = ggml.simd_level()
    try:
        assert ggml.simd_select(99) == top
        assert ggml.simd_select(-5) == 0
        assert ggml.simd_level() == 0
    finally:
        ggml.simd_select(before)


def _run_child(code: str, env_extra: dict[str, str]) -> str:
    env = dict(os.environ)
    env.pop("RWKV_GGML_FORCE_SCALAR", None)
    env.update(env_extra)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


CHILD = """
    import numpy as np
    from rwkv_ggml import ggml
    r = np.random.default_rng(1)
    a = r.standard_normal((9, 4097)).astype(np.float16)
    b = r.standard_normal((3, 4097)).astype(np.float32)
    with ggml.Context(1 << 22) as ctx:
        y = ctx.mul_mat(ctx.tensor(a), ctx.tensor(b))
        ctx.graph([y]).compute()
        print(ggml.simd_level(), ggml.simd_max_level(), y.numpy().tobytes().hex())
"""


def test_force_scalar_environment_variable() -> None:
    level, top, forced_hex = _run_child(CHILD, {"RWKV_GGML_FORCE_SCALAR": "1"}).split()
    assert int(level) == 0, "RWKV_GGML_FORCE_SCALAR=1 must select the scalar kernels"
    assert int(top) == ggml.simd_max_level(), "the detected maximum is still reported"
    level_default, _, _ = _run_child(CHILD, {}).split()
    assert int(level_default) == ggml.simd_max_level()
    level_zero, _, _ = _run_child(CHILD, {"RWKV_GGML_FORCE_SCALAR": "0"}).split()
    assert int(level_zero) == ggml.simd_max_level(), "RWKV_GGML_FORCE_SCALAR=0 must not force anything"
    # the forced-scalar process computes what simd_select(0) computes here
    before = ggml.simd_level()
    try:
        ggml.simd_select(0)
        r = np.random.default_rng(1)
        a = r.standard_normal((9, 4097)).astype(np.float16)
        b = r.standard_normal((3, 4097)).astype(np.float32)
        with ggml.Context(1 << 22) as ctx:
            y = ctx.mul_mat(ctx.tensor(a), ctx.tensor(b))
            ctx.graph([y]).compute()
            assert y.numpy().tobytes().hex() == forced_hex
    finally:
        ggml.simd_select(before)
