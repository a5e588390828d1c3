"""Barrier elision (graph_sync.c): threads meet between two nodes only where one depends on memory the
other writes, so these tests try to catch a missing barrier.

* Random graphs in planned memory (no_alloc: intermediates share regions once their readers have run),
  mixing nodes small enough to run solo on thread 0 with nodes split across threads, views and a copy
  into a caller buffer: 2 and 4 threads, computed many times, must equal 1 thread bit for bit. A missing
  barrier shows up as a thread reading a region before it was written (or after it was reused).
* A caller buffer passed as both input and output of one compute (an in-place state update): a node
  that reads the input after the output was written must see the new values.
* Independent products run back to back: fewer barriers than nodes.
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib

from .helpers import bits_equal

C = 64
BIG_T = 600  # C x 600 elements: above the solo limit, so split across threads
SMALL_T = 1  # a C-vector: computed solo by thread 0


def _random_graph(ctx: ggml.Context, seed: int, state: ggml.Tensor) -> list[ggml.Tensor]:
    r = np.random.default_rng(seed)
    weights = [
        ctx.external((r.standard_normal((C, C)) / 8).astype(np.float32), constant=True) for _ in range(3)
    ]
    big = [ctx.external(r.standard_normal((BIG_T, C)).astype(np.float32), constant=True)]
    small = [ctx.external(r.standard_normal((SMALL_T, C)).astype(np.float32), constant=True), state]
    for _ in range(60):
        kind = r.integers(0, 7)
        if kind == 0:  # unary, either size
            pool = big if r.random() < 0.5 else small
            pool.append(ctx.tanh(pool[r.integers(len(pool))]))
        elif kind == 1:  # binary within a size
            pool = big if r.random() < 0.5 else small
            a, b = pool[r.integers(len(pool))], pool[r.integers(len(pool))]
            pool.append(ctx.mul(ctx.add(a, b), ctx.tanh(b)))
        elif kind == 2:  # a product (never solo), either size
            pool = big if r.random() < 0.5 else small
            pool.append(ctx.scale(ctx.mul_mat(weights[r.integers(3)], pool[r.integers(len(pool))]), 0.5))
        elif kind == 3:  # small from big: a view of one column
            src = big[r.integers(len(big))]
            col = int(r.integers(BIG_T))
            small.append(ctx.sigmoid(ctx.view(src, [C, 1], [4, C * 4], offset=col * C * 4)))
        elif kind == 4:  # big from small: broadcast
            big.append(ctx.add(big[r.integers(len(big))], small[r.integers(len(small))]))
        elif kind == 5:  # a transposed copy round trip (strided reads)
            src = big[r.integers(len(big))]
            big.append(ctx.cont(ctx.transpose(ctx.cont(ctx.transpose(src)))))
        else:  # a norm over rows
            pool = big if r.random() < 0.5 else small
            pool.append(ctx.layer_norm(pool[r.integers(len(pool))], None, None, 1e-5))
    # the new state (a caller buffer, also read above) and two outputs
    write = ctx.cpy(ctx.tanh(small[-1]), state)
    return [ctx.sum_rows(big[-1]), ctx.sum_rows(small[-1]), write]


@pytest.mark.parametrize("seed", range(6))
def test_random_graphs_match_one_thread_bit_for_bit(seed: int) -> None:
    results = {}
    for threads in (1, 2, 4):
        state = np.zeros((1, C), dtype=np.float32)
        with ggml.Context(16 << 20, threads=threads, no_alloc=True) as ctx:
            outs = _random_graph(ctx, seed, ctx.external(state))
            g = ctx.graph(outs)
            assert g.n_barriers < g.n_nodes
            runs = []
            for _ in range(1 if threads == 1 else 25):
                state[:] = 0.25
                g.compute()
                runs.append((outs[0].numpy().copy(), outs[1].numpy().copy(), state.copy()))
            results[threads] = runs
    want = results[1][0]
    assert all(np.isfinite(a).all() for a in want)
    for threads in (2, 4):
        for i, got in enumerate(results[threads]):
            for a, b in zip(got, want, strict=True):
                assert bits_equal(a, b), f"seed {seed}: {threads} threads differ from 1 thread on compute {i}"


def test_a_buffer_both_read_and_written_is_ordered() -> None:
    """in -> out where out is the same memory as in (eval(state, state_out=state)): the graph reads in,
    writes out, then reads in again; the second read must see the written values on every thread."""
    x = np.random.default_rng(1).standard_normal((4096, C)).astype(np.float32)
    for threads in (2, 4):
        with ggml.Context(64 << 20, threads=threads, no_alloc=True) as ctx:
            buf_in = ctx.external(np.zeros_like(x))
            buf_out = ctx.external(np.zeros_like(x))
            doubled = ctx.scale(buf_in, 2.0)
            write = ctx.cpy(doubled, buf_out)  # out = 2 in, rows split across threads
            after = ctx.cont(ctx.transpose(buf_in))  # reads in again, each thread across all rows
            # doubled stays alive (an output), so `after` cannot reuse its memory: only the aliasing of
            # the two caller buffers orders `after` behind the write
            g = ctx.graph([write, after, doubled])
            for _ in range(30):
                shared = x.copy()
                buf_in.set_data(shared)
                buf_out.set_data(shared)
                g.compute()
                assert bits_equal(after.numpy(), 2 * x.T), (
                    f"{threads} threads: a read of the input overtook the write"
                )


def test_independent_products_need_no_barrier_between_them() -> None:
    r = np.random.default_rng(2)
    x = r.standard_normal((1, 512)).astype(np.float32)
    ws = [r.standard_normal((256, 512)).astype(np.float32) for _ in range(6)]
    with ggml.Context(16 << 20, threads=2) as ctx:
        xt = ctx.tensor(x)
        outs = [ctx.mul_mat(ctx.external(w, constant=True), xt) for w in ws]
        total = outs[0]
        for o in outs[1:]:
            total = ctx.add(total, o)  # each add reads a product: a barrier before the first add only
        g = ctx.graph([*outs, total])  # the products first, then the adds
        assert g.n_nodes == 11
        assert g.n_barriers == 1
        g.compute()
        want = sum(w.astype(np.float64) @ x[0].astype(np.float64) for w in ws)
        np.testing.assert_allclose(total.numpy()[0], want, rtol=1e-4, atol=1e-4)


def test_constant_is_only_for_external_tensors() -> None:
    with ggml.Context(1 << 20) as ctx:
        t = ctx.new_tensor(ggml.F32, (4,))
        assert lib.rg_tensor_set_constant(ctx.ptr, t.ptr) == lib.RG_E_ARG
        assert "was not made by new_tensor_ext" in ffi.string(lib.rg_ctx_error(ctx.ptr)).decode()


def test_independent_chains_run_side_by_side() -> None:
    """Four chains product -> tanh -> product from one input (an RWKV layer's LoRA halves): the dependency
    order walks them one after the other (a barrier before every node but the first), the schedule
    runs the four first products, then the four tanh, then the four second products: two barriers.
    Results equal one thread bit for bit."""
    r = np.random.default_rng(3)
    x = r.standard_normal((1, 256)).astype(np.float32)
    downs = [(r.standard_normal((32, 256)) / 16).astype(np.float32) for _ in range(4)]
    ups = [(r.standard_normal((256, 32)) / 6).astype(np.float32) for _ in range(4)]
    results = {}
    for threads in (1, 2):
        with ggml.Context(16 << 20, threads=threads, no_alloc=True) as ctx:
            xt = ctx.external(x, constant=True)
            outs = []
            for d, u in zip(downs, ups, strict=True):
                h = ctx.tanh(ctx.mul_mat(ctx.external(d, constant=True), xt))
                outs.append(ctx.mul_mat(ctx.external(u, constant=True), h))
            g = ctx.graph(outs)
            assert g.n_nodes == 12
            assert g.node_ops() == ["mul_mat"] * 4 + ["tanh"] * 4 + ["mul_mat"] * 4
            assert g.n_barriers == 2
            g.compute()
            results[threads] = [o.numpy().copy() for o in outs]
    for a, b in zip(results[1], results[2], strict=True):
        assert bits_equal(a, b)
    want = [
        u.astype(np.float64) @ np.tanh(d.astype(np.float64) @ x[0]) for d, u in zip(downs, ups, strict=True)
    ]
    for got, w in zip(results[2], want, strict=True):
        np.testing.assert_allclose(got[0], w, rtol=1e-4, atol=1e-5)
