"""The RWKV-7 "Goose" graph (architecture.md §2, §6, state layout §7), for T tokens at once.

New against v6: the state update is a generalised delta rule (the WKV7 op) driven by a normalised
"in-context learning" key and rate, the six token-shift mixes are one stored tensor ``x_rwkvag``, the
value of every layer after the first is mixed with layer 0's (``v_first``, row-aligned with the tokens),
and a per-head bonus term replaces v5's u. The state matrix is S[h][i=value][j=key].

Each step is written under the spec equation it implements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..arch import ONE_MINUS_K_A, Hyper, Layer
from ..ggml import Context, Tensor
from .common import (
    GraphIO,
    embed,
    flat,
    norm_and_shift,
    planes,
    wkv7,
)

L2_EPS = 1e-12  # (V7.7): F.normalize's eps
DECAY_SCALE = math.exp(-0.5)  # (V7.4): e^{-1/2}


def time_mix_v7(
    ctx: Context, hp: Hyper, layer: Layer[Tensor], x: Tensor, v_first: Tensor | None, io: GraphIO
) -> tuple[Tensor, Tensor]:
    """x + TimeMix(LN(x; ln1)) (V7.1)-(V7.13), and v_first (layer 0's value, made by layer 0)."""
    T, H, N = io.columns, hp.n_head, hp.head_size  # T: tokens, or sequences in batch mode
    C = x.ne[0]
    att = layer.att
    # (V7.1) a = LN(x); s = state.att_x; state.att_x <- a; d = s - a
    a, s = norm_and_shift(ctx, io, x, *layer.ln1, layer.state.att_x)
    d = ctx.sub(s, a)
    # (V7.2) x_f = a + d*x_f-param for f = r, w, k, v, a, g at once: x_rwkvag is (C, 1, 6) -> (C, T, 6)
    xs = ctx.add(ctx.mul(d, att["x_rwkvag"]), a)
    xr, xw, xk, xv, xa, xg = planes(ctx, xs, 6)
    # (V7.3) r, k, v = W x_f
    r = ctx.mul_mat(att["receptance.weight"], xr)
    k = ctx.mul_mat(att["key.weight"], xk)
    v = ctx.mul_mat(att["value.weight"], xv)
    # (V7.4) w_hat = w0 + w2 tanh(w1 x_w); decay = exp(-e^{-1/2} sigmoid(w_hat))
    lora_w = ctx.mul_mat(att["w2"], ctx.tanh(ctx.mul_mat(att["w1"], xw)))
    w_hat = ctx.add(lora_w, flat(ctx, att["w0"]))
    decay = ctx.exp(ctx.scale(ctx.sigmoid(w_hat), -DECAY_SCALE))
    # (V7.5) alpha = sigmoid(a0 + a2 (a1 x_a))
    lora_a = ctx.mul_mat(att["a2"], ctx.mul_mat(att["a1"], xa))
    alpha = ctx.sigmoid(ctx.add(lora_a, flat(ctx, att["a0"])))
    # (V7.6) g = g2 sigmoid(g1 x_g)
    g = ctx.mul_mat(att["g2"], ctx.sigmoid(ctx.mul_mat(att["g1"], xg)))
    # (V7.7) kappa = k*k_k; kappa_hat = kappa / max(||kappa||, 1e-12) per head
    kappa_hat = ctx.l2_norm(ctx.mul(k, flat(ctx, att["k_k"])), H, L2_EPS)
    # (V7.8) k <- k*(1 + (alpha - 1)*k_a), computed as k*((1 - k_a) + alpha*k_a); 1 - k_a is derived at load
    k_a = flat(ctx, att["k_a"])
    k = ctx.mul(k, ctx.add(ctx.mul(alpha, k_a), layer.block[ONE_MINUS_K_A]))
    # (V7.9) layer 0 makes v_first; later layers mix it in through a sigmoid gate
    if v_first is None:
        v_first = v
    else:
        lora_v = ctx.mul_mat(att["v2"], ctx.mul_mat(att["v1"], xv))
        gate = ctx.sigmoid(ctx.add(lora_v, flat(ctx, att["v0"])))
        v = ctx.add(v, ctx.mul(ctx.sub(v_first, v), gate))
    # (V7.10)-(V7.11) the WKV7 scan over the T tokens with a = -kappa_hat, b = kappa_hat*alpha
    y = wkv7(ctx, io, layer.state, r, decay, k, v, ctx.neg(kappa_hat), ctx.mul(kappa_hat, alpha))
    # (V7.12) z = GN(y; ln_x, eps) + (sum_j r k r_k)[h] * v, per head
    z = ctx.group_norm(y, H, att["ln_x.weight"], att["ln_x.bias"], hp.gn_eps)
    rkr = ctx.mul(ctx.mul(r, k), flat(ctx, att["r_k"]))
    per_head = ctx.sum_rows(ctx.reshape(rkr, [N, H, T]))  # (1, H, T)
    z = ctx.add(z, ctx.reshape(ctx.mul(ctx.reshape(v, [N, H, T]), per_head), [C, T]))
    # (V7.13) out = W_o (z * g)
    return ctx.add(x, ctx.mul_mat(att["output.weight"], ctx.mul(z, g))), v_first


def channel_mix_v7(ctx: Context, layer: Layer[Tensor], x: Tensor, io: GraphIO) -> Tensor:
    """x + ChannelMix(LN(x; ln2)) (CM7.1)-(CM7.2)."""
    # (CM7.1) b = LN(x); s = state.ffn_x; state.ffn_x <- b; d = s - b
    b, s = norm_and_shift(ctx, io, x, *layer.ln2, layer.state.ffn_x)
    # (CM7.2) out = W'_v relu(W'_k (b + d*x'_k))^2
    xk = ctx.add(ctx.mul(ctx.sub(s, b), flat(ctx, layer.ffn["x_k"])), b)
    kk = ctx.sqr(ctx.relu(ctx.mul_mat(layer.ffn["key.weight"], xk)))
    return ctx.add(x, ctx.mul_mat(layer.ffn["value.weight"], kk))


def build(ctx: Context, w: Mapping[str, Tensor], hp: Hyper, io: GraphIO) -> Tensor:
    """Builds the layers; returns x (C, T), the residual stream after the last block (before ln_out).
    The state writes are appended to io.state_writes."""
    x = embed(ctx, w, io)  # (S1)
    v_first: Tensor | None = None
    for layer in hp.layers(w):
        x, v_first = time_mix_v7(ctx, hp, layer, x, v_first, io)
        x = channel_mix_v7(ctx, layer, x, io)
    return x
