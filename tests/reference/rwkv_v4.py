"""Float64 NumPy reference of RWKV v4 (architecture.md §3), weights as in an rwkv.cpp file.

The file already holds ``time_decay = -exp(raw)`` (so w < 0) and the raw ``time_first``; the
WKV recurrence is the numerically stable (α, β, p) form of (V4.4)-(V4.5), in which every ``exp``
argument is <= 0. The channel mix (CM4.*) is shared with v5 and defined here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .common import F64, LayerState, ReferenceModel, relu_squared, sigmoid


def wkv4_step(aa: F64, bb: F64, pp: F64, w: F64, u: F64, k: F64, v: F64) -> tuple[F64, F64, F64, F64]:
    """(V4.4)-(V4.5): one stable WKV step; returns (wkv, new aa, new bb, new pp), inputs untouched.

    (aa, bb) are the numerator / denominator of the decayed average scaled by e^{-pp}; every
    ``exp`` argument is <= 0, so nothing overflows even for large k. ``w`` < 0 is the file's
    ``-exp(raw)`` decay, ``u`` the bonus of the current token. All arrays are C-vectors.
    """
    ww = u + k  # (V4.4): the output uses the bonus u for the current token
    q = np.maximum(pp, ww)
    e1, e2 = np.exp(pp - q), np.exp(ww - q)
    wkv = (e1 * aa + e2 * v) / (e1 * bb + e2)

    ww = pp + w  # (V4.5): decay the history one step, then add the current token
    q = np.maximum(ww, k)
    e1, e2 = np.exp(ww - q), np.exp(k - q)
    return wkv, e1 * aa + e2 * v, e1 * bb + e2, q


def channel_mix_v4(model: ReferenceModel, layer: int, b: F64, st: LayerState) -> F64:
    """(CM4.1)-(CM4.3): the v4 / v5.x channel mix with receptance gate and relu²."""
    p = f"blocks.{layer}.ffn."
    s = st.ffn_x.copy()  # (CM4.1)
    st.ffn_x[:] = b
    mu_k, mu_r = model.w(p + "time_mix_k"), model.w(p + "time_mix_r")
    x_k = b * mu_k + s * (1.0 - mu_k)  # (CM4.2)
    x_r = b * mu_r + s * (1.0 - mu_r)
    k = relu_squared(model.w(p + "key.weight") @ x_k)  # (CM4.3)
    return sigmoid(model.w(p + "receptance.weight") @ x_r) * (model.w(p + "value.weight") @ k)


def check_channel_mix_v4_shapes(model: ReferenceModel) -> None:
    """Shape checks of the v4 / v5.x channel-mix tensors; F is read from ffn.key.weight."""
    C = model.n_embed
    for layer in range(model.n_layer):
        p = f"blocks.{layer}.ffn."
        F = model.w(p + "key.weight").shape[0]
        model._expect(p + "time_mix_k", (C,))
        model._expect(p + "time_mix_r", (C,))
        model._expect(p + "key.weight", (F, C))
        model._expect(p + "value.weight", (C, F))
        model._expect(p + "receptance.weight", (C, C))


class RwkvV4(ReferenceModel):
    """RWKV v4. State per layer: ffn_x, att_x, aa (α), bb (β), pp (p), each C floats."""

    version = "4"

    def __init__(self, weights: Mapping[str, Any], n_layer: int) -> None:
        super().__init__(weights, n_layer)
        C = self.n_embed
        for layer in range(n_layer):
            p = f"blocks.{layer}.att."
            for name in ("time_mix_k", "time_mix_v", "time_mix_r", "time_first", "time_decay"):
                self._expect(p + name, (C,))
            for name in ("key", "value", "receptance", "output"):
                self._expect(p + name + ".weight", (C, C))
        check_channel_mix_v4_shapes(self)

    def _layer_state_size(self) -> int:
        return 5 * self.n_embed  # §7: ffn_x, att_x, aa, bb, pp

    def _init_layer_state(self, st: LayerState) -> None:
        C = self.n_embed
        st.rest[2 * C : 3 * C] = -1e30  # §3.4: pp = -1e30 so the empty history weighs exp(-1e30 - q) = 0

    def _time_mix(self, layer: int, a: F64, st: LayerState, carry: dict[str, F64]) -> F64:
        C = self.n_embed
        p = f"blocks.{layer}.att."
        aa, bb, pp = st.rest[0:C], st.rest[C : 2 * C], st.rest[2 * C : 3 * C]  # views into the state
        s = st.att_x.copy()  # (V4.1)
        st.att_x[:] = a
        mu_k, mu_v, mu_r = self.w(p + "time_mix_k"), self.w(p + "time_mix_v"), self.w(p + "time_mix_r")
        x_k = a * mu_k + s * (1.0 - mu_k)  # (V4.2)
        x_v = a * mu_v + s * (1.0 - mu_v)
        x_r = a * mu_r + s * (1.0 - mu_r)
        r = sigmoid(self.w(p + "receptance.weight") @ x_r)  # (V4.3)
        k = self.w(p + "key.weight") @ x_k
        v = self.w(p + "value.weight") @ x_v
        w, u = self.w(p + "time_decay"), self.w(p + "time_first")  # w = -exp(raw) already

        wkv, new_aa, new_bb, new_pp = wkv4_step(aa, bb, pp, w, u, k, v)  # (V4.4)-(V4.5)
        aa[:], bb[:], pp[:] = new_aa, new_bb, new_pp
        return self.w(p + "output.weight") @ (r * wkv)  # (V4.6)

    def _channel_mix(self, layer: int, b: F64, st: LayerState) -> F64:
        return channel_mix_v4(self, layer, b, st)
