"""The batched WKV ops (B sequences of one token each, states in the rows of a bank) against the
single-sequence ops, and set_rows.

For v4, v5/v6 (every decay/bonus mode) and v7, B in {1, 2, 3, 8, 17} and 1, 2 and 4 threads: the bank holds
more rows than the step uses, each row a whole "model state" of which the op sees one layer's part through
a strided view, and the slots are a random subset in random order. Every sequence's output column and new
state row must be bit-identical to the single-sequence op run on that sequence alone (the batched kernels
do the same arithmetic in the same order), and the rows of the slots not in the step must be untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml.errors import EngineArgumentError, RwkvGgmlError, ShapeError

from .helpers import THREAD_COUNTS

B_VALUES = (1, 2, 3, 8, 17)
F32 = np.float32
PAD = 5  # floats of the bank row before the layer's part (the part is a strided view, not row 0)


Fill = Callable[[np.random.Generator, int], np.ndarray]


def _bank(capacity: int, S: int, g: np.random.Generator, fill: Fill) -> np.ndarray:
    bank = g.uniform(-1, 1, (capacity, PAD + S + 3)).astype(F32)
    for row in range(capacity):
        bank[row, PAD : PAD + S] = fill(g, S)
    return bank


def _slots(B: int, capacity: int, g: np.random.Generator) -> np.ndarray:
    return g.permutation(capacity)[:B].astype(np.int32)


def _run_batch(
    build: Callable[..., ggml.Tensor],
    dense: list[np.ndarray],
    bank: np.ndarray,
    S: int,
    slots: np.ndarray,
    threads: int,
) -> np.ndarray:
    """Runs build(ctx, *dense tensors, states view, slots) on the bank (updated in place); returns
    y (B, C)."""
    with ggml.Context(16 << 20, threads=threads) as ctx:
        tensors = [ctx.tensor(a) for a in dense]
        bank_t = ctx.external(bank)
        view = ctx.view(bank_t, [S, bank.shape[0]], [0, bank.shape[1] * 4], PAD * 4)
        out = build(ctx, *tensors, view, ctx.tensor(slots))
        ctx.graph([out]).compute(threads)
        return out.numpy().copy()


def _run_single(build: Callable[..., ggml.Tensor], dense: list[np.ndarray], state: np.ndarray) -> np.ndarray:
    with ggml.Context(16 << 20, threads=1) as ctx:
        out = build(ctx, *[ctx.tensor(a) for a in dense], ctx.tensor(state))
        ctx.graph([out]).compute(1)
        return out.numpy().copy()


def _check(
    B: int,
    threads: int,
    seed: int,
    C: int,
    S: int,
    fill: Fill,
    make_dense: Callable[[np.random.Generator], list[np.ndarray]],
    per_column: list[bool],
    batch_op: Callable[..., ggml.Tensor],
    single_op: Callable[..., ggml.Tensor],
    state_shape: tuple[int, ...],
) -> None:
    g = np.random.default_rng(seed)
    capacity = 2 * B + 3
    bank = _bank(capacity, S, g, fill)
    before = bank.copy()
    slots = _slots(B, capacity, g)
    dense = make_dense(g)
    y = _run_batch(batch_op, dense, bank, S, slots, threads)
    assert y.shape == (B, C)
    for b, slot in enumerate(slots):
        column = [a[b : b + 1] if col else a for a, col in zip(dense, per_column, strict=True)]
        single = _run_single(single_op, column, before[slot, PAD : PAD + S].reshape(state_shape))
        np.testing.assert_array_equal(y[b], single[0], err_msg=f"output of sequence {b} (slot {slot})")
        np.testing.assert_array_equal(
            bank[slot, PAD : PAD + S], single[1:].reshape(-1), err_msg=f"state of sequence {b} (slot {slot})"
        )
        # the floats around the layer's part belong to other layers: untouched
        np.testing.assert_array_equal(bank[slot, :PAD], before[slot, :PAD])
        np.testing.assert_array_equal(bank[slot, PAD + S :], before[slot, PAD + S :])
    untouched = np.setdiff1d(np.arange(capacity), slots)
    np.testing.assert_array_equal(bank[untouched], before[untouched])


def _v4_state(g: np.random.Generator, S: int) -> np.ndarray:
    C = S // 3
    st = g.uniform(-1, 1, S).astype(F32)
    st[2 * C :] = g.uniform(-3, 3, C)  # pp, a running max exponent
    return st


@pytest.mark.parametrize("B", B_VALUES)
@pytest.mark.parametrize("threads", THREAD_COUNTS)
def test_wkv4_batch_equals_single_sequence_op(B: int, threads: int) -> None:
    C = 150  # not a multiple of the 64-channel blocks

    def dense(g: np.random.Generator) -> list[np.ndarray]:
        return [
            g.uniform(-2, 2, (B, C)).astype(F32),
            g.uniform(-2, 2, (B, C)).astype(F32),
            g.uniform(-1, 1, C).astype(F32),
            -np.exp(g.uniform(-2, 1, C)).astype(F32),
        ]

    _check(
        B,
        threads,
        10 + B,
        C,
        3 * C,
        _v4_state,
        dense,
        [True, True, False, False],
        lambda ctx, *t: ctx.rwkv_wkv4_batch(*t),
        lambda ctx, *t: ctx.rwkv_wkv4(*t),
        (3, C),
    )


def _matrix_state(g: np.random.Generator, S: int) -> np.ndarray:
    return g.uniform(-1, 1, S).astype(F32)


@pytest.mark.parametrize("B", B_VALUES)
@pytest.mark.parametrize("threads", THREAD_COUNTS)
@pytest.mark.parametrize("modes", [("head", "head"), ("channel", "channel"), ("token", "channel")])
def test_wkv5_batch_equals_single_sequence_op(
    B: int, threads: int, modes: tuple[str, str], simd_level: int
) -> None:
    H, N = 3, 13
    C = H * N
    w_mode, u_mode = modes
    if w_mode == "token" and B == 1:
        w_mode = "channel"  # one column of decays is the per-channel mode

    def dense(g: np.random.Generator) -> list[np.ndarray]:
        w_shape = {"head": (H,), "channel": (C,), "token": (B, C)}[w_mode]
        u_shape = (H,) if u_mode == "head" else (C,)
        return [g.uniform(-1, 1, (B, C)).astype(F32) for _ in range(3)] + [
            g.uniform(0.3, 0.999, w_shape).astype(F32),
            g.uniform(-1, 1, u_shape).astype(F32),
        ]

    _check(
        B,
        threads,
        20 + B,
        C,
        C * N,
        _matrix_state,
        dense,
        [True, True, True, w_mode == "token", False],
        lambda ctx, *t: ctx.rwkv_wkv5_batch(*t),
        lambda ctx, *t: ctx.rwkv_wkv5(*t),
        (C * N,),
    )


@pytest.mark.parametrize("B", B_VALUES)
@pytest.mark.parametrize("threads", THREAD_COUNTS)
@pytest.mark.parametrize("H, N", [(2, 16), (3, 13), (1, 64)])
def test_wkv7_batch_equals_single_sequence_op(B: int, threads: int, H: int, N: int, simd_level: int) -> None:
    C = H * N

    def dense(g: np.random.Generator) -> list[np.ndarray]:
        r, k, v = (g.uniform(-1, 1, (B, C)).astype(F32) for _ in range(3))
        w = g.uniform(0.3, 0.999, (B, C)).astype(F32)
        kappa = g.uniform(-1, 1, (B, C)).astype(F32) / np.float32(N)
        alpha = g.uniform(0, 1, (B, C)).astype(F32)
        return [r, w, k, v, -kappa, kappa * alpha]

    _check(
        B,
        threads,
        30 + B,
        C,
        C * N,
        _matrix_state,
        dense,
        [True] * 6,
        lambda ctx, *t: ctx.rwkv_wkv7_batch(*t),
        lambda ctx, *t: ctx.rwkv_wkv7(*t),
        (C * N,),
    )


def test_set_rows_scatters_columns_into_strided_rows() -> None:
    g = np.random.default_rng(5)
    bank = g.uniform(-1, 1, (7, 12)).astype(F32)
    before = bank.copy()
    src = g.uniform(-1, 1, (3, 4)).astype(F32)
    slots = np.array([5, 0, 2], dtype=np.int32)
    for threads in THREAD_COUNTS:
        bank[...] = before
        with ggml.Context(1 << 20, threads=threads) as ctx:
            view = ctx.view(ctx.external(bank), [4, 7], [0, 12 * 4], 3 * 4)
            ctx.graph([ctx.set_rows(view, ctx.tensor(src), ctx.tensor(slots))]).compute(threads)
        want = before.copy()
        want[slots, 3:7] = src
        np.testing.assert_array_equal(bank, want)


def test_batch_builders_reject_bad_operands() -> None:
    with ggml.Context(1 << 20) as ctx:
        k = ctx.tensor(np.zeros((2, 8), F32))
        u = ctx.tensor(np.zeros(8, F32))
        states = ctx.tensor(np.zeros((4, 24), F32))
        slots = ctx.tensor(np.zeros(2, np.int32))
        with pytest.raises(ShapeError, match="slots"):
            ctx.rwkv_wkv4_batch(k, k, u, u, states, ctx.tensor(np.zeros(3, np.int32)))
        with pytest.raises(ShapeError, match="states"):
            ctx.rwkv_wkv4_batch(k, k, u, u, ctx.tensor(np.zeros((4, 23), F32)), slots)
        with pytest.raises(ShapeError, match="C\\*N"):
            ctx.rwkv_wkv7_batch(k, k, k, k, k, k, ctx.tensor(np.zeros((4, 20), F32)), slots)
        with pytest.raises(ShapeError, match="decay w"):
            five = ctx.tensor(np.zeros(5, F32))
            ctx.rwkv_wkv5_batch(k, k, k, five, u, ctx.tensor(np.zeros((4, 64), F32)), slots)
        with pytest.raises(EngineArgumentError):
            ctx.rwkv_wkv5_batch(k, k, k, u, u, None, slots)  # type: ignore[arg-type]


def test_out_of_range_slot_is_a_compute_error() -> None:
    with ggml.Context(1 << 20) as ctx:
        k = ctx.tensor(np.zeros((2, 8), F32))
        u = ctx.tensor(np.zeros(8, F32))
        states = ctx.tensor(np.zeros((4, 24), F32))
        out = ctx.rwkv_wkv4_batch(k, k, u, u, states, ctx.tensor(np.array([1, 4], np.int32)))
        with pytest.raises(RwkvGgmlError, match="slot 4"):
            ctx.graph([out]).compute()


def test_in_place_state_update_is_ordered_before_later_readers() -> None:
    """A node that reads the bank rows after a batched WKV op updated them in place (nothing else links the
    two) must see the new rows: the op declares the table it writes, so barrier elision keeps a barrier
    between them. Sizes above the solo threshold, so both nodes are split across threads."""
    H, N, B = 4, 64, 3
    C, S = H * N, H * N * N
    g = np.random.default_rng(9)
    bank = g.uniform(-1, 1, (B + 1, S)).astype(F32)
    slots = np.array([2, 0, 3], np.int32)
    dense = [g.uniform(-1, 1, (B, C)).astype(F32) for _ in range(6)]
    before = bank.copy()
    with ggml.Context(16 << 20, threads=4) as ctx:
        view = ctx.view(ctx.external(bank), [S, B + 1], [0, S * 4], 0)
        slots_t = ctx.tensor(slots)
        y = ctx.rwkv_wkv7_batch(*[ctx.tensor(a) for a in dense], view, slots_t)
        after = ctx.get_rows(view, slots_t)
        graph = ctx.graph([y, after])
        assert graph.n_barriers >= 1
        graph.compute(4)
        got = after.numpy().copy()
    np.testing.assert_array_equal(got, bank[slots])
    assert not np.array_equal(bank[slots], before[slots])
