"""The RWKV-5 graph, every v5 family (architecture.md §2, §4, state layout §7), for T tokens at once.

One builder serves rwkv.cpp's 5.1 (no gate, per-head decay and ``time_first``), the official 5.1 (gate,
per-head decay) and 5.2 (gate, per-channel decay, ``time_faaaa``): the features present decide (§1.3).
Per-head decay/bonus tensors (H floats) are broadcast to the head's N key channels inside the WKV op.
The GroupNorm epsilon comes from ``hp.gn_eps`` (the official 64e-5 unless the model overrides it, §9.2).

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
    wkv5,
)


def time_mix_v5(ctx: Context, hp: Hyper, layer: Layer[Tensor], x: Tensor, io: GraphIO) -> Tensor:
    """x + TimeMix(LN(x; ln1)) (V5.1)-(V5.7); the recurrent slot holds the H matrices N x N."""
    # (V5.1) a = LN(x); s = state.att_x; state.att_x <- a
    a, s = norm_and_shift(ctx, io, x, *layer.ln1, layer.state.att_x)
    # (V5.2) x_f = a*mu_f + s*(1 - mu_f) = s + (a - s)*mu_f, for all f at once -> (C, T, 3 or 4)
    xs = planes(ctx, lerp_stacked(ctx, s, a, layer.block[ATT_MIX]), 4 if hp.gated else 3)
    xr, xk, xv = xs[:3]
    # (V5.3) r, k, v = W x_f (one column per token; viewed per head as H x N inside the WKV op)
    r = ctx.mul_mat(layer.att["receptance.weight"], xr)
    k = ctx.mul_mat(layer.att["key.weight"], xk)
    v = ctx.mul_mat(layer.att["value.weight"], xv)
    # (V5.4)-(V5.5) the multi-head WKV scan over the T tokens; decay exp(-exp(.)) and bonus as stored
    y = wkv5(ctx, io, layer.state, r, k, v, layer.att["time_decay"], layer.att[hp.bonus])
    # (V5.6) z = GN(y; ln_x, eps) (* g if gated), g = silu(W_g x_g) of (V5.3)
    z = ctx.group_norm(y, hp.n_head, layer.att["ln_x.weight"], layer.att["ln_x.bias"], hp.gn_eps)
    if hp.gated:
        xg = xs[3]
        z = ctx.mul(z, ctx.silu(ctx.mul_mat(layer.att["gate.weight"], xg)))
    # (V5.7) out = W_o z
    return ctx.add(x, ctx.mul_mat(layer.att["output.weight"], z))


def build(ctx: Context, w: Mapping[str, Tensor], hp: Hyper, io: GraphIO) -> Tensor:
    """Builds the layers; returns x (C, T), the residual stream after the last block (before ln_out).
    The state writes are appended to io.state_writes."""
    x = embed(ctx, w, io)  # (S1)
    for layer in hp.layers(w):
        x = time_mix_v5(ctx, hp, layer, x, io)
        x = channel_mix_v4(ctx, layer, x, io)  # as v4 (CM4.1-CM4.3)
    return x
