"""Pieces shared by the per-version graph builders.

Conventions: activations are F32 tensors of ne (C, T), one column per token; the recurrent state is
one flat F32 vector read from ``io.state_in`` and written to ``io.state_out`` (two distinct buffers,
repointed before every compute, so one built graph serves any caller state).

Batch mode (``io.slots`` set): one token for each of B sequences, activations (C, B), one column per
sequence. The state is a bank of whole model states, ``io.state_in`` (which is ``io.state_out``) of ne
(state_size, capacity), and sequence b's state is row ``slots[b]``: the token shifts gather and scatter
the rows' att_x/ffn_x slots (get_rows / set_rows) and the batched WKV ops update the rows' recurrent parts
in place, so a step moves no whole state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..arch import FFN_MIX, Layer
from ..ggml import Context, Tensor
from ..layout import LayerSlots

F32_BYTES = 4
LN_EPS = 1e-5  # every LayerNorm of every version (E1)


@dataclass
class GraphIO:
    """The graph's inputs and outputs, and the nodes that write the new state."""

    T: int
    ids: Tensor  # I32 (T,) or in batch mode (B,): the token ids
    # batch mode: state_in is the bank, ne (state_size, capacity), and state_out is state_in
    state_in: Tensor  # F32 (state_size,): external, repointed per eval
    state_out: Tensor  # F32 (state_size,): external, repointed per eval
    state_writes: list[Tensor] = field(default_factory=list)
    # The nodes that read a token-shift slot of state_in (each slot has one). A graph whose outputs list
    # them before state_writes orders every read of the old state before every write of the new one
    # (the WKV ops' state writes depend on the op that reads that slot anyway), so state_in and
    # state_out may then be one buffer.
    state_reads: list[Tensor] = field(default_factory=list)
    B: int = 1  # sequences (batch mode: T = 1 each)
    slots: Tensor | None = None  # batch mode: I32 (B,), the bank row of each sequence

    @property
    def columns(self) -> int:
        """Columns of the activations: T tokens of one sequence, or one token of each of B sequences."""
        return self.T * self.B


def state_rows(ctx: Context, io: GraphIO, offset_floats: int, n_floats: int) -> Tensor:
    """Batch mode: the n_floats at offset_floats of every state of the bank, as a table
    (n_floats, capacity)."""
    bank = io.state_in
    return ctx.view(bank, [n_floats, bank.ne[1]], [0, bank.ne[0] * F32_BYTES], offset_floats * F32_BYTES)


def state_slice(ctx: Context, state: Tensor, offset_floats: int, n_floats: int, cols: int = 1) -> Tensor:
    """A view of n_floats * cols consecutive floats of the flat state, as ne (n_floats, cols)."""
    return ctx.view(state, [n_floats, cols], [0, n_floats * F32_BYTES], offset_floats * F32_BYTES)


def column(ctx: Context, x: Tensor, t: int) -> Tensor:
    """Column t of a (C, T) activation, as (C, 1)."""
    C = x.ne[0]
    return ctx.view(x, [C, 1], [0, C * F32_BYTES], t * C * F32_BYTES)


def token_shift(ctx: Context, x: Tensor, prev: Tensor, T: int) -> Tensor:
    """The previous token's value for each column of x (C, T): the state's value for column 0, then
    columns 0..T-2 of x (architecture.md §8 step 2)."""
    if T == 1:
        return prev
    C = x.ne[0]
    head = ctx.view(x, [C, T - 1], [0, C * F32_BYTES], 0)
    return ctx.concat(prev, head, 1)


def embed(ctx: Context, w: Mapping[str, Tensor], io: GraphIO) -> Tensor:
    """(S1) x = LN(emb[tok]; ln0) for the graph's tokens: (C, T)."""
    x = ctx.get_rows(w["emb.weight"], io.ids)
    return ctx.layer_norm(x, w["blocks.0.ln0.weight"], w["blocks.0.ln0.bias"], LN_EPS)


def norm_and_shift(
    ctx: Context, io: GraphIO, x: Tensor, weight: Tensor, bias: Tensor, state_offset: int
) -> tuple[Tensor, Tensor]:
    """The input of a mixing block and its token shift: a = LN(x), s = the previous token's a (from the
    state at ``state_offset`` for the first token), and state <- a of the last token (V4.1, CM4.1, ...).
    Returns (a, s)."""
    C, T = x.ne[0], io.T
    a = ctx.layer_norm(x, weight, bias, LN_EPS)
    if io.slots is not None:  # batch mode: each sequence's own slot, gathered, then a scattered back
        rows = state_rows(ctx, io, state_offset, C)
        s = ctx.get_rows(rows, io.slots)
        io.state_reads.append(s)
        io.state_writes.append(ctx.set_rows(rows, a, io.slots))
        return a, s
    s = token_shift(ctx, a, state_slice(ctx, io.state_in, state_offset, C), T)
    if T == 1:
        s = ctx.cont(s)  # one node reads the state slot, whatever uses s (see GraphIO.state_reads)
    io.state_reads.append(s)
    write_state(ctx, io, column(ctx, a, T - 1), state_offset)
    return a, s


def write_state(ctx: Context, io: GraphIO, value: Tensor, offset_floats: int) -> None:
    """Schedules value (n, k) to be written into state_out at offset_floats."""
    n = value.ne[0] * (value.ne[1] if len(value.ne) > 1 else 1)
    dst = ctx.view(io.state_out, [n], None, offset_floats * F32_BYTES)
    src = value if value.is_contiguous() else ctx.cont(value)
    io.state_writes.append(ctx.cpy(ctx.reshape(src, [n]), dst))


def flat(ctx: Context, t: Tensor) -> Tensor:
    """A contiguous tensor viewed as one vector of all its elements (e.g. a (C, 1, 1) or (1, N, H)
    parameter as a C-vector that broadcasts over the columns of a (C, T) activation)."""
    n = 1
    for d in t.ne:
        n *= d
    return ctx.reshape(t, [n])


def lerp_stacked(ctx: Context, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """x0 + (x1 - x0) ⊙ t_f for every stacked vector t_f at once: x0, x1 (C, T), t (C, 1, n) -> (C, T, n).
    The token-shift mixes of v4-v6 are all of this form (with x0, x1 the current and previous token); the
    stacked vectors are derived weights (arch.derived_weights)."""
    return ctx.add(ctx.mul(ctx.sub(x1, x0), t), x0)


def planes(ctx: Context, x: Tensor, n: int) -> tuple[Tensor, ...]:
    """The n planes (dim 2) of a contiguous (C, T, n) tensor, each a contiguous (C, T) view."""
    C, T = x.ne[0], x.ne[1]
    return tuple(ctx.view(x, [C, T], [0, C * F32_BYTES], i * C * T * F32_BYTES) for i in range(n))


def recurrent_out(ctx: Context, io: GraphIO, slots: LayerSlots) -> Tensor:
    """The layer's recurrent slot of state_out, flat: a WKV op writes its new state there directly (no
    copy, no barrier for one)."""
    return state_slice(ctx, io.state_out, slots.recurrent, slots.recurrent_size)


def scan_wkv(io: GraphIO, wkv: Tensor) -> Tensor:
    """A single-sequence WKV op that writes state_out: listed with the state writes (so a state-only eval
    computes it, and it comes after every read of the old state); its result is the output y (C, T)."""
    io.state_writes.append(wkv)
    return wkv


def wkv4(
    ctx: Context, io: GraphIO, slots: LayerSlots, k: Tensor, v: Tensor, time_first: Tensor, time_decay: Tensor
) -> Tensor:
    """(V4.4-V4.5) over the graph's tokens (or sequences), the layer's aa, bb, pp in and out:
    y (C, columns)."""
    if io.slots is not None:
        states = state_rows(ctx, io, slots.recurrent, slots.recurrent_size)
        return ctx.rwkv_wkv4_batch(k, v, time_first, time_decay, states, io.slots)
    state = state_slice(ctx, io.state_in, slots.recurrent, k.ne[0], 3)
    return scan_wkv(io, ctx.rwkv_wkv4(k, v, time_first, time_decay, state, recurrent_out(ctx, io, slots)))


def wkv5(
    ctx: Context, io: GraphIO, slots: LayerSlots, r: Tensor, k: Tensor, v: Tensor, w: Tensor, u: Tensor
) -> Tensor:
    """(V5.4-V5.5) / (V6.7) over the graph's tokens (or sequences), the layer's WKV matrices in and out."""
    if io.slots is not None:
        states = state_rows(ctx, io, slots.recurrent, slots.recurrent_size)
        return ctx.rwkv_wkv5_batch(r, k, v, w, u, states, io.slots)
    state = state_slice(ctx, io.state_in, slots.recurrent, slots.recurrent_size)
    return scan_wkv(io, ctx.rwkv_wkv5(r, k, v, w, u, state, recurrent_out(ctx, io, slots)))


def wkv7(
    ctx: Context,
    io: GraphIO,
    slots: LayerSlots,
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
) -> Tensor:
    """(V7.10-V7.11) over the graph's tokens (or sequences), the layer's WKV matrices in and out."""
    if io.slots is not None:
        states = state_rows(ctx, io, slots.recurrent, slots.recurrent_size)
        return ctx.rwkv_wkv7_batch(r, w, k, v, a, b, states, io.slots)
    state = state_slice(ctx, io.state_in, slots.recurrent, slots.recurrent_size)
    return scan_wkv(io, ctx.rwkv_wkv7(r, w, k, v, a, b, state, recurrent_out(ctx, io, slots)))


def channel_mix_v4(ctx: Context, layer: Layer[Tensor], x: Tensor, io: GraphIO) -> Tensor:
    """x + ChannelMix(LN(x; ln2)) with the v4/v5 parameters (CM4.1)-(CM4.3)."""
    # (CM4.1) b = LN(x); s = state.ffn_x; state.ffn_x <- b
    b, s = norm_and_shift(ctx, io, x, *layer.ln2, layer.state.ffn_x)
    # (CM4.2) x_k, x_r = s + (b - s)*mu'
    xk, xr = planes(ctx, lerp_stacked(ctx, s, b, layer.block[FFN_MIX]), 2)
    # (CM4.3) out = sigmoid(W'_r x_r) * (W'_v relu(W'_k x_k)^2)
    r = ctx.sigmoid(ctx.mul_mat(layer.ffn["receptance.weight"], xr))
    kk = ctx.sqr(ctx.relu(ctx.mul_mat(layer.ffn["key.weight"], xk)))
    return ctx.add(x, ctx.mul(r, ctx.mul_mat(layer.ffn["value.weight"], kk)))
