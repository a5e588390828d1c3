"""The RWKV-4 graph (architecture.md §2-§3, state layout §7), for T tokens at once (T = 1: RNN mode).

Each step is written under the spec equation it implements.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..arch import Hyper
from ..ggml import Context, Tensor
from .common import (
    GraphIO,
    channel_mix_v4,
    embed,
    lerp_stacked,
    norm_and_shift,
    plane,
    stack_vectors,
    state_slice,
    write_state,
)


def build(ctx: Context, w: Mapping[str, Tensor], hp: Hyper, io: GraphIO) -> Tensor:
    """Builds the layers; returns x (C, T), the residual stream after the last block (before ln_out).
    The state writes are appended to io.state_writes."""
    C, T = hp.n_embed, io.T
    x = embed(ctx, w, io)  # (S1)
    for layer in range(hp.n_layer):
        p = f"blocks.{layer}."
        base = 5 * C * layer  # §7: ffn_x, att_x, aa, bb, pp
        # ---- time mixing ----
        # (V4.1) a = LN(x); s = state.att_x; state.att_x <- a
        a, s = norm_and_shift(ctx, io, x, w[p + "ln1.weight"], w[p + "ln1.bias"], base + C)
        # (V4.2) x_f = a*mu_f + s*(1-mu_f) = s + (a - s)*mu_f, for f = r, k, v at once -> (C, T, 3)
        xs = lerp_stacked(ctx, s, a, stack_vectors(ctx, [w[p + "att.time_mix_" + f] for f in ("r", "k", "v")]))
        # (V4.3) r = sigmoid(W_r x_r); k = W_k x_k; v = W_v x_v
        r = ctx.sigmoid(ctx.mul_mat(w[p + "att.receptance.weight"], plane(ctx, xs, 0)))
        k = ctx.mul_mat(w[p + "att.key.weight"], plane(ctx, xs, 1))
        v = ctx.mul_mat(w[p + "att.value.weight"], plane(ctx, xs, 2))
        # (V4.4-V4.5) the WKV scan over the T tokens, state (aa, bb, pp) in and out
        wkv_all = ctx.rwkv_wkv4(k, v, w[p + "att.time_first"], w[p + "att.time_decay"],
                                state_slice(ctx, io.state_in, base + 2 * C, C, 3))
        wkv = ctx.view(wkv_all, [C, T], [0, C * 4], 0)
        write_state(ctx, io, ctx.view(wkv_all, [C, 3], [0, C * 4], T * C * 4), base + 2 * C)
        # (V4.6) out = W_o (r * wkv)
        x = ctx.add(x, ctx.mul_mat(w[p + "att.output.weight"], ctx.mul(r, wkv)))
        # ---- channel mixing (CM4.1-CM4.3) ----
        x = channel_mix_v4(ctx, w, io, x, p, base)
    return x
