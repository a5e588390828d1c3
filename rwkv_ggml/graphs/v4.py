"""The RWKV-4 graph (architecture.md §2-§3, state layout §7), for T tokens at once (T = 1: RNN mode).

Each step is written under the spec equation it implements.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..arch import Hyper
from ..ggml import Context, Tensor
from .common import GraphIO, column, mix, state_slice, token_shift, write_state

LN_EPS = 1e-5


def build(ctx: Context, w: Mapping[str, Tensor], hp: Hyper, io: GraphIO) -> Tensor:
    """Builds the layers; returns x (C, T), the residual stream after the last block (before ln_out).
    The state writes are appended to io.state_writes."""
    C, T = hp.n_embed, io.T
    # (S1) x = LN(emb[tok]; ln0)
    x = ctx.get_rows(w["emb.weight"], io.ids)
    x = ctx.layer_norm(x, w["blocks.0.ln0.weight"], w["blocks.0.ln0.bias"], LN_EPS)
    for layer in range(hp.n_layer):
        p = f"blocks.{layer}."
        base = 5 * C * layer  # §7: ffn_x, att_x, aa, bb, pp
        # ---- time mixing ----
        a = ctx.layer_norm(x, w[p + "ln1.weight"], w[p + "ln1.bias"], LN_EPS)
        # (V4.1) s = state.att_x; state.att_x <- a
        s = token_shift(ctx, a, state_slice(ctx, io.state_in, base + C, C), T)
        write_state(ctx, io, column(ctx, a, T - 1), base + C)
        # (V4.2) x_f = a*mu_f + s*(1-mu_f)
        xk = mix(ctx, a, s, w[p + "att.time_mix_k"])
        xv = mix(ctx, a, s, w[p + "att.time_mix_v"])
        xr = mix(ctx, a, s, w[p + "att.time_mix_r"])
        # (V4.3) r = sigmoid(W_r x_r); k = W_k x_k; v = W_v x_v
        r = ctx.sigmoid(ctx.mul_mat(w[p + "att.receptance.weight"], xr))
        k = ctx.mul_mat(w[p + "att.key.weight"], xk)
        v = ctx.mul_mat(w[p + "att.value.weight"], xv)
        # (V4.4-V4.5) the WKV scan over the T tokens, state (aa, bb, pp) in and out
        wkv_all = ctx.rwkv_wkv4(k, v, w[p + "att.time_first"], w[p + "att.time_decay"],
                                state_slice(ctx, io.state_in, base + 2 * C, C, 3))
        wkv = ctx.view(wkv_all, [C, T], [0, C * 4], 0)
        write_state(ctx, io, ctx.view(wkv_all, [C, 3], [0, C * 4], T * C * 4), base + 2 * C)
        # (V4.6) out = W_o (r * wkv)
        x = ctx.add(x, ctx.mul_mat(w[p + "att.output.weight"], ctx.mul(r, wkv)))
        # ---- channel mixing ----
        b = ctx.layer_norm(x, w[p + "ln2.weight"], w[p + "ln2.bias"], LN_EPS)
        # (CM4.1) s = state.ffn_x; state.ffn_x <- b
        s = token_shift(ctx, b, state_slice(ctx, io.state_in, base, C), T)
        write_state(ctx, io, column(ctx, b, T - 1), base)
        # (CM4.2)
        xk = mix(ctx, b, s, w[p + "ffn.time_mix_k"])
        xr = mix(ctx, b, s, w[p + "ffn.time_mix_r"])
        # (CM4.3) out = sigmoid(W'_r x_r) * (W'_v relu(W'_k x_k)^2)
        r = ctx.sigmoid(ctx.mul_mat(w[p + "ffn.receptance.weight"], xr))
        kk = ctx.sqr(ctx.relu(ctx.mul_mat(w[p + "ffn.key.weight"], xk)))
        x = ctx.add(x, ctx.mul(r, ctx.mul_mat(w[p + "ffn.value.weight"], kk)))
    return x
