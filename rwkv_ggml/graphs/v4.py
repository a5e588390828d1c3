"""The RWKV-4 graph (architecture.md §2-§3, state layout §7), for T tokens at once (T = 1: RNN mode).

Each step is written under the spec equation it implements.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..arch import ATT_MIX, Hyper, Layer
from ..ggml import Context, Tensor
from .common import (
    GraphIO,
    channel_mix_v4,
    embed,
    lerp_stacked,
    norm_and_shift,
    planes,
    wkv4,
)


def time_mix_v4(ctx: Context, layer: Layer[Tensor], x: Tensor, io: GraphIO) -> Tensor:
    """x + TimeMix(LN(x; ln1)) (V4.1)-(V4.6); the recurrent slot holds aa, bb, pp."""
    # (V4.1) a = LN(x); s = state.att_x; state.att_x <- a
    a, s = norm_and_shift(ctx, io, x, *layer.ln1, layer.state.att_x)
    # (V4.2) x_f = a*mu_f + s*(1-mu_f) = s + (a - s)*mu_f, for f = r, k, v at once -> (C, T, 3)
    xr, xk, xv = planes(ctx, lerp_stacked(ctx, s, a, layer.block[ATT_MIX]), 3)
    # (V4.3) r = sigmoid(W_r x_r); k = W_k x_k; v = W_v x_v
    r = ctx.sigmoid(ctx.mul_mat(layer.att["receptance.weight"], xr))
    k = ctx.mul_mat(layer.att["key.weight"], xk)
    v = ctx.mul_mat(layer.att["value.weight"], xv)
    # (V4.4-V4.5) the WKV scan over the T tokens, state (aa, bb, pp) in and out
    y = wkv4(ctx, io, layer.state, k, v, layer.att["time_first"], layer.att["time_decay"])
    # (V4.6) out = W_o (r * wkv)
    return ctx.add(x, ctx.mul_mat(layer.att["output.weight"], ctx.mul(r, y)))


def build(ctx: Context, w: Mapping[str, Tensor], hp: Hyper, io: GraphIO) -> Tensor:
    """Builds the layers; returns x (C, T), the residual stream after the last block (before ln_out).
    The state writes are appended to io.state_writes."""
    x = embed(ctx, w, io)  # (S1)
    for layer in hp.layers(w):
        x = time_mix_v4(ctx, layer, x, io)
        x = channel_mix_v4(ctx, layer, x, io)  # (CM4.1-CM4.3)
    return x
