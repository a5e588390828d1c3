"""Pieces shared by the per-version graph builders.

Conventions: activations are F32 tensors of ne (C, T), one column per token; the recurrent state is
one flat F32 vector read from ``io.state_in`` and written to ``io.state_out`` (two distinct buffers,
repointed before every compute, so one built graph serves any caller state).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ggml import Context, Tensor

F32_BYTES = 4


@dataclass
class GraphIO:
    """The graph's inputs and outputs, and the nodes that write the new state."""

    T: int
    ids: Tensor          # I32 (T,): the token ids
    state_in: Tensor     # F32 (state_size,): external, repointed per eval
    state_out: Tensor    # F32 (state_size,): external, repointed per eval
    state_writes: list[Tensor] = field(default_factory=list)


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


def write_state(ctx: Context, io: GraphIO, value: Tensor, offset_floats: int) -> None:
    """Schedules value (n, k) to be written into state_out at offset_floats."""
    n = value.ne[0] * (value.ne[1] if len(value.ne) > 1 else 1)
    dst = ctx.view(io.state_out, [n], None, offset_floats * F32_BYTES)
    src = value if value.is_contiguous() else ctx.cont(value)
    io.state_writes.append(ctx.cpy(ctx.reshape(src, [n]), dst))


def mix(ctx: Context, a: Tensor, prev: Tensor, mu: Tensor) -> Tensor:
    """a ⊙ μ + prev ⊙ (1 − μ): the token-shift interpolation of v4/v5 (V4.2, V5.2)."""
    return ctx.add(ctx.mul(a, mu), ctx.mul(prev, ctx.one_minus_x(mu)))
