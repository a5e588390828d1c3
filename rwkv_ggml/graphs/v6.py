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

from ..arch import ATT_MIX, FFN_MIX, V6_MIX_ORDER, Hyper, Layer
from ..ggml import Context, Tensor
from .common import (
    GraphIO,
    embed,
    flat,
    lerp_stacked,
    norm_and_shift,
    planes,
    wkv5,
)

MIX_ORDER = (
    V6_MIX_ORDER  # (V6.2): w, k, v, r, g: the five LoRA chunks, time_maa_w2's planes, ATT_MIX's planes
)


def time_mix_v6(ctx: Context, hp: Hyper, layer: Layer[Tensor], x: Tensor, io: GraphIO) -> Tensor:
    """x + TimeMix(LN(x; ln1)) (V6.1)-(V6.8); the recurrent slot holds the H matrices N x N."""
    T = io.columns  # tokens, or sequences in batch mode
    att = layer.att
    # (V6.1) a = LN(x); s = state.att_x; state.att_x <- a; d = s - a
    a, s = norm_and_shift(ctx, io, x, *layer.ln1, layer.state.att_x)
    d = ctx.sub(s, a)
    # (V6.2) t = tanh(W1 (a + d*maa_x)), 5*D_m values per token
    t = ctx.tanh(ctx.mul_mat(att["time_maa_w1"], ctx.add(ctx.mul(d, att["time_maa_x"]), a)))
    # (V6.3) m_f = W2[f] t_f: t's 5 chunks as the planes of a (D_m, T, 5) operand, one batched product
    w2 = att["time_maa_w2"]
    d_m = w2.ne[0]
    if T == 1:
        chunks = ctx.reshape(t, [d_m, 1, 5])
    else:
        chunks = ctx.permute(ctx.reshape(t, [d_m, 5, T]), [0, 2, 1])
    m = ctx.mul_mat(w2, chunks)  # (C, T, 5)
    # (V6.4) x_f = a + d*(maa_f + m_f), all five at once -> (C, T, 5)
    xs = ctx.add(ctx.mul(ctx.add(m, layer.block[ATT_MIX]), d), a)
    xw, xk, xv, xr, xg = planes(ctx, xs, 5)
    # (V6.5) r, k, v = W x_f; g = silu(W_g x_g)
    r = ctx.mul_mat(att["receptance.weight"], xr)
    k = ctx.mul_mat(att["key.weight"], xk)
    v = ctx.mul_mat(att["value.weight"], xv)
    g = ctx.silu(ctx.mul_mat(att["gate.weight"], xg))
    # (V6.6) w_hat = time_decay + Wd2 tanh(Wd1 x_w); decay = exp(-exp(w_hat)) per token and channel
    lora = ctx.mul_mat(att["time_decay_w2"], ctx.tanh(ctx.mul_mat(att["time_decay_w1"], xw)))
    decay = ctx.exp(ctx.neg(ctx.exp(ctx.add(lora, flat(ctx, att["time_decay"])))))
    # (V6.7) the v5 WKV scan with this token's decay and u = time_faaaa
    y = wkv5(ctx, io, layer.state, r, k, v, decay, att["time_faaaa"])
    # (V6.8) out = W_o (GN(y; ln_x, eps) * g)
    z = ctx.group_norm(y, hp.n_head, att["ln_x.weight"], att["ln_x.bias"], hp.gn_eps)
    return ctx.add(x, ctx.mul_mat(att["output.weight"], ctx.mul(z, g)))


def channel_mix_v6(ctx: Context, layer: Layer[Tensor], x: Tensor, io: GraphIO) -> Tensor:
    """x + ChannelMix(LN(x; ln2)) (CM6.1)-(CM6.3)."""
    # (CM6.1) b = LN(x); s = state.ffn_x; state.ffn_x <- b
    b, s = norm_and_shift(ctx, io, x, *layer.ln2, layer.state.ffn_x)
    # (CM6.2) x_k, x_r = b + (s - b)*maa'
    xk, xr = planes(ctx, lerp_stacked(ctx, b, s, layer.block[FFN_MIX]), 2)
    # (CM6.3) out = sigmoid(W'_r x_r) * (W'_v relu(W'_k x_k)^2)
    rr = ctx.sigmoid(ctx.mul_mat(layer.ffn["receptance.weight"], xr))
    kk = ctx.sqr(ctx.relu(ctx.mul_mat(layer.ffn["key.weight"], xk)))
    return ctx.add(x, ctx.mul(rr, ctx.mul_mat(layer.ffn["value.weight"], kk)))


def build(ctx: Context, w: Mapping[str, Tensor], hp: Hyper, io: GraphIO) -> Tensor:
    """Builds the layers; returns x (C, T), the residual stream after the last block (before ln_out).
    The state writes are appended to io.state_writes."""
    x = embed(ctx, w, io)  # (S1)
    for layer in hp.layers(w):
        x = time_mix_v6(ctx, hp, layer, x, io)
        x = channel_mix_v6(ctx, layer, x, io)
    return x
