"""The RWKV-6 "Finch" graph (architecture.md §2, §5, state layout §7), for T tokens at once.

New against v5: the token shift is data dependent (a low-rank "LoRA" projection of the shifted input
makes the five mixes), and so is the decay (a second LoRA, per token and channel); the WKV itself is
v5's, fed one decay column per token. The LoRA matrices are stored transposed by rwkv.cpp's converter,
so every product is a plain ``W·x``; ``time_maa_w2`` holds the five second-stage matrices as the planes
of one (D_m, C, 5) tensor and runs as one batched product.

Each step is written under the spec equation it implements.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..arch import Hyper
from ..ggml import Context, Tensor
from .common import (
    GraphIO,
    embed,
    flat,
    lerp_stacked,
    norm_and_shift,
    plane,
    stack_vectors,
    state_slice,
    write_state,
)

F32_BYTES = 4
MIX_ORDER = ("w", "k", "v", "r", "g")  # (V6.2): the order of the five LoRA chunks and of time_maa_w2's planes


def build(ctx: Context, w: Mapping[str, Tensor], hp: Hyper, io: GraphIO) -> Tensor:
    """Builds the layers; returns x (C, T), the residual stream after the last block (before ln_out).
    The state writes are appended to io.state_writes."""
    C, T, H, N = hp.n_embed, io.T, hp.n_head, hp.head_size
    x = embed(ctx, w, io)  # (S1)
    for layer in range(hp.n_layer):
        p = f"blocks.{layer}."
        base = (2 + N) * C * layer  # §7: ffn_x, att_x, S
        # ---- time mixing ----
        # (V6.1) a = LN(x); s = state.att_x; state.att_x <- a; d = s - a
        a, s = norm_and_shift(ctx, io, x, w[p + "ln1.weight"], w[p + "ln1.bias"], base + C)
        d = ctx.sub(s, a)
        # (V6.2) t = tanh(W1 (a + d*maa_x)), 5*D_m values per token
        t = ctx.tanh(ctx.mul_mat(w[p + "att.time_maa_w1"], ctx.add(ctx.mul(d, w[p + "att.time_maa_x"]), a)))
        # (V6.3) m_f = W2[f] t_f: t's 5 chunks as the planes of a (D_m, T, 5) operand, one batched product
        w2 = w[p + "att.time_maa_w2"]
        d_m = w2.ne[0]
        if T == 1:
            chunks = ctx.reshape(t, [d_m, 1, 5])
        else:
            chunks = ctx.permute(ctx.reshape(t, [d_m, 5, T]), [0, 2, 1])
        m = ctx.mul_mat(w2, chunks)  # (C, T, 5)
        # (V6.4) x_f = a + d*(maa_f + m_f), all five at once -> (C, T, 5)
        maa = stack_vectors(ctx, [w[p + "att.time_maa_" + f] for f in MIX_ORDER])
        xs = ctx.add(ctx.mul(ctx.add(m, maa), d), a)
        xw, xk, xv, xr, xg = (plane(ctx, xs, i) for i in range(5))
        # (V6.5) r, k, v = W x_f; g = silu(W_g x_g)
        r = ctx.mul_mat(w[p + "att.receptance.weight"], xr)
        k = ctx.mul_mat(w[p + "att.key.weight"], xk)
        v = ctx.mul_mat(w[p + "att.value.weight"], xv)
        g = ctx.silu(ctx.mul_mat(w[p + "att.gate.weight"], xg))
        # (V6.6) w_hat = time_decay + Wd2 tanh(Wd1 x_w); decay = exp(-exp(w_hat)) per token and channel
        lora = ctx.mul_mat(w[p + "att.time_decay_w2"], ctx.tanh(ctx.mul_mat(w[p + "att.time_decay_w1"], xw)))
        decay = ctx.exp(ctx.neg(ctx.exp(ctx.add(lora, flat(ctx, w[p + "att.time_decay"])))))
        # (V6.7) the v5 WKV scan with this token's decay and u = time_faaaa
        wkv = ctx.rwkv_wkv5(r, k, v, decay, w[p + "att.time_faaaa"],
                            state_slice(ctx, io.state_in, base + 2 * C, N * C))
        y = ctx.view(wkv, [C, T], [0, C * F32_BYTES], 0)
        write_state(ctx, io, ctx.view(wkv, [C, N], [0, C * F32_BYTES], T * C * F32_BYTES), base + 2 * C)
        # (V6.8) out = W_o (GN(y; ln_x, eps) * g)
        z = ctx.group_norm(y, H, w[p + "att.ln_x.weight"], w[p + "att.ln_x.bias"], hp.gn_eps)
        x = ctx.add(x, ctx.mul_mat(w[p + "att.output.weight"], ctx.mul(z, g)))
        # ---- channel mixing ----
        # (CM6.1) b = LN(x); s = state.ffn_x; state.ffn_x <- b
        b, s = norm_and_shift(ctx, io, x, w[p + "ln2.weight"], w[p + "ln2.bias"], base)
        # (CM6.2) x_k, x_r = b + (s - b)*maa'
        xs = lerp_stacked(ctx, b, s, stack_vectors(ctx, [w[p + "ffn.time_maa_k"], w[p + "ffn.time_maa_r"]]))
        # (CM6.3) out = sigmoid(W'_r x_r) * (W'_v relu(W'_k x_k)^2)
        rr = ctx.sigmoid(ctx.mul_mat(w[p + "ffn.receptance.weight"], plane(ctx, xs, 1)))
        kk = ctx.sqr(ctx.relu(ctx.mul_mat(w[p + "ffn.key.weight"], plane(ctx, xs, 0))))
        x = ctx.add(x, ctx.mul(rr, ctx.mul_mat(w[p + "ffn.value.weight"], kk)))
    return x
