"""The RWKV-5 graph, every v5 family (architecture.md §2, §4, state layout §7), for T tokens at once.

One builder serves rwkv.cpp's 5.1 (no gate, per-head decay and ``time_first``), the official 5.1 (gate,
per-head decay) and 5.2 (gate, per-channel decay, ``time_faaaa``): the features present decide (§1.3).
Per-head decay/bonus tensors (H floats) are broadcast to the head's N key channels inside the WKV op.
The GroupNorm epsilon comes from ``hp.gn_eps`` (rwkv.cpp's 1e-5 unless the model overrides it, §9.2).

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

F32_BYTES = 4


def build(ctx: Context, w: Mapping[str, Tensor], hp: Hyper, io: GraphIO) -> Tensor:
    """Builds the layers; returns x (C, T), the residual stream after the last block (before ln_out).
    The state writes are appended to io.state_writes."""
    C, T, H, N = hp.n_embed, io.T, hp.n_head, hp.head_size
    gated = "blocks.0.att.gate.weight" in w
    bonus = "att.time_faaaa" if "blocks.0.att.time_faaaa" in w else "att.time_first"
    mix_names = ("r", "k", "v", "g") if gated else ("r", "k", "v")
    x = embed(ctx, w, io)  # (S1)
    for layer in range(hp.n_layer):
        p = f"blocks.{layer}."
        base = (2 + N) * C * layer  # §7: ffn_x, att_x, S
        # ---- time mixing ----
        # (V5.1) a = LN(x); s = state.att_x; state.att_x <- a
        a, s = norm_and_shift(ctx, io, x, w[p + "ln1.weight"], w[p + "ln1.bias"], base + C)
        # (V5.2) x_f = a*mu_f + s*(1 - mu_f) = s + (a - s)*mu_f, for all f at once -> (C, T, 3 or 4)
        mus = stack_vectors(ctx, [w[p + "att.time_mix_" + f] for f in mix_names])
        xs = lerp_stacked(ctx, s, a, mus)
        # (V5.3) r, k, v = W x_f (one column per token; viewed per head as H x N inside the WKV op)
        r = ctx.mul_mat(w[p + "att.receptance.weight"], plane(ctx, xs, 0))
        k = ctx.mul_mat(w[p + "att.key.weight"], plane(ctx, xs, 1))
        v = ctx.mul_mat(w[p + "att.value.weight"], plane(ctx, xs, 2))
        # (V5.4)-(V5.5) the multi-head WKV scan over the T tokens; decay exp(-exp(.)) and bonus as stored
        wkv = ctx.rwkv_wkv5(r, k, v, w[p + "att.time_decay"], w[p + bonus],
                            state_slice(ctx, io.state_in, base + 2 * C, N * C))
        y = ctx.view(wkv, [C, T], [0, C * F32_BYTES], 0)
        write_state(ctx, io, ctx.view(wkv, [C, N], [0, C * F32_BYTES], T * C * F32_BYTES), base + 2 * C)
        # (V5.6) z = GN(y; ln_x, eps) (* g if gated), g = silu(W_g x_g) of (V5.3)
        z = ctx.group_norm(y, H, w[p + "att.ln_x.weight"], w[p + "att.ln_x.bias"], hp.gn_eps)
        if gated:
            z = ctx.mul(z, ctx.silu(ctx.mul_mat(w[p + "att.gate.weight"], plane(ctx, xs, 3))))
        # (V5.7) out = W_o z
        x = ctx.add(x, ctx.mul_mat(w[p + "att.output.weight"], z))
        # ---- channel mixing (as v4) ----
        x = channel_mix_v4(ctx, w, io, x, p, base)
    return x
