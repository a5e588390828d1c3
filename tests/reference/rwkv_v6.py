"""Float64 NumPy reference of RWKV v6 "Finch" (architecture.md §5), weights as in an rwkv.cpp file.

rwkv.cpp's converter transposes the LoRA matrices so that every product is a plain ``W·x`` on
the tensor as stored: ``time_maa_w1`` (5·D_m, C), ``time_maa_w2`` (5, C, D_m),
``time_decay_w1`` (D_w, C), ``time_decay_w2`` (C, D_w) in NumPy order. ``time_decay`` is stored
raw (H, N, 1) and turned into ``exp(-exp(ŵ))`` per token. State as v5: S[h][i=key][j=value].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rwkv_ggml.errors import ModelFormatError

from .common import F64, LayerState, ReferenceModel, group_norm, relu_squared, sigmoid, silu
from .rwkv_v5 import wkv5_step

DEFAULT_GN_EPS_V6 = 64e-5  # §9.2 (rwkv.cpp and the official package agree)
MIX_ORDER = ("w", "k", "v", "r", "g")  # (V6.2): order of the 5 chunks of the mix LoRA


class RwkvV6(ReferenceModel):
    """RWKV v6.0 with data-dependent token shift (mix LoRA) and data-dependent decay (decay LoRA)."""

    version = "6"

    def __init__(self, weights: Mapping[str, Any], n_layer: int, *, gn_eps: float | None = None) -> None:
        super().__init__(weights, n_layer)
        self.gn_eps = DEFAULT_GN_EPS_V6 if gn_eps is None else float(gn_eps)
        C = self.n_embed
        decay0 = self.w("blocks.0.att.time_decay")
        if decay0.ndim != 3 or decay0.shape[0] < 1 or C % decay0.shape[0] != 0:
            raise ModelFormatError(
                f"tensor 'blocks.0.att.time_decay' has shape {decay0.shape}, "
                f"expected (H, N, 1) with H·N = C={C}"
            )
        self.n_head = int(decay0.shape[0])  # §1.1: H = PyTorch dim 0 of the (H, N, 1) decay
        self.head_size = C // self.n_head
        H, N = self.n_head, self.head_size
        for layer in range(n_layer):
            p = f"blocks.{layer}.att."
            d_m = self.w(p + "time_maa_w2").shape[-1]
            d_w = self.w(p + "time_decay_w1").shape[0]
            for f in ("x", *MIX_ORDER):
                self._expect(p + "time_maa_" + f, (C,))
            self._expect(p + "time_maa_w1", (5 * d_m, C))
            self._expect(p + "time_maa_w2", (5, C, d_m))
            self._expect(p + "time_decay", (H, N, 1))
            self._expect(p + "time_decay_w1", (d_w, C))
            self._expect(p + "time_decay_w2", (C, d_w))
            self._expect(p + "time_faaaa", (H, N, 1))
            for name in ("key", "value", "receptance", "gate", "output"):
                self._expect(p + name + ".weight", (C, C))
            for name in ("ln_x.weight", "ln_x.bias"):
                self._expect(p + name, (C,))
            q = f"blocks.{layer}.ffn."
            F = self.w(q + "key.weight").shape[0]
            self._expect(q + "time_maa_k", (C,))
            self._expect(q + "time_maa_r", (C,))
            self._expect(q + "key.weight", (F, C))
            self._expect(q + "value.weight", (C, F))
            self._expect(q + "receptance.weight", (C, C))

    def _layer_state_size(self) -> int:
        return (2 + self.head_size) * self.n_embed  # §7: ffn_x, att_x, S (H·N·N = N·C)

    def _time_mix(self, layer: int, a: F64, st: LayerState, carry: dict[str, F64]) -> F64:
        H, N = self.n_head, self.head_size
        p = f"blocks.{layer}.att."
        s = st.att_x.copy()  # (V6.1)
        st.att_x[:] = a
        d = s - a

        w1, w2 = self.w(p + "time_maa_w1"), self.w(p + "time_maa_w2")
        d_m = w2.shape[-1]
        t = np.tanh(w1 @ (a + d * self.w(p + "time_maa_x")))  # (V6.2), 5·D_m values
        x: dict[str, F64] = {}
        for idx, f in enumerate(MIX_ORDER):
            m_f = w2[idx] @ t[idx * d_m : (idx + 1) * d_m]  # (V6.3)
            x[f] = a + d * (self.w(p + "time_maa_" + f) + m_f)  # (V6.4)

        r = (self.w(p + "receptance.weight") @ x["r"]).reshape(H, N)  # (V6.5)
        k = (self.w(p + "key.weight") @ x["k"]).reshape(H, N)
        v = (self.w(p + "value.weight") @ x["v"]).reshape(H, N)
        g = silu(self.w(p + "gate.weight") @ x["g"])

        w_hat = self.w(p + "time_decay").reshape(-1) + self.w(p + "time_decay_w2") @ np.tanh(
            self.w(p + "time_decay_w1") @ x["w"]
        )  # (V6.6)
        w = np.exp(-np.exp(w_hat)).reshape(H, N)
        u = self.w(p + "time_faaaa").reshape(H, N)

        S = st.rest.reshape(H, N, N)  # view: S[h, i=key, j=value]
        y, new_S = wkv5_step(S, r, k, v, w, u)  # (V6.7) = (V5.4)-(V5.5) with this token's w
        S[:] = new_S

        z = group_norm(y.reshape(-1), self.w(p + "ln_x.weight"), self.w(p + "ln_x.bias"), H, self.gn_eps)
        return self.w(p + "output.weight") @ (z * g)  # (V6.8)

    def _channel_mix(self, layer: int, b: F64, st: LayerState) -> F64:
        p = f"blocks.{layer}.ffn."
        s = st.ffn_x.copy()  # (CM6.1)
        st.ffn_x[:] = b
        d = s - b
        x_k = b + d * self.w(p + "time_maa_k")  # (CM6.2)
        x_r = b + d * self.w(p + "time_maa_r")
        k = relu_squared(self.w(p + "key.weight") @ x_k)  # (CM6.3)
        return sigmoid(self.w(p + "receptance.weight") @ x_r) * (self.w(p + "value.weight") @ k)
