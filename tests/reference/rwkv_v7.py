"""Float64 NumPy reference of RWKV v7 "Goose" (architecture.md §6), weights as in an rwkv.cpp file.

The six token-shift mixes are one tensor ``att.x_rwkvag`` (6, 1, C) in the order r, w, k, v, a, g;
the LoRA matrices are stored transposed so each product is a plain ``W·x`` (e.g. ``w1`` (D_w, C),
``w2`` (C, D_w)). Layer 0 has no ``v0/v1/v2``: it produces ``v_first``, which later layers mix
into their value. The state matrix is S[h][i=value][j=key] (transposed w.r.t. v5/v6).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rwkv_ggml.errors import ModelFormatError

from .common import F64, LayerState, ReferenceModel, group_norm, relu_squared, sigmoid

DEFAULT_GN_EPS_V7 = 64e-5  # §9.2
MIX_ORDER = ("r", "w", "k", "v", "a", "g")  # §6.1: slices of x_rwkvag
DECAY_SCALE = float(np.exp(-0.5))  # (V7.4): e^{-1/2} = 0.606531


def wkv7_step(S: F64, r: F64, decay: F64, k: F64, v: F64, a: F64, b: F64) -> tuple[F64, F64]:
    """(V7.10)-(V7.11): one generalised delta-rule step; returns (y (H, N), new S (H, N, N)).

    ``S[h, i, j]``: i = VALUE index, j = KEY index. Per head, in matrix form:
    ``S <- S·diag(decay) + (S·a) bᵀ + v kᵀ`` and ``y = S·r`` with the UPDATED state. The model
    passes ``a = -κ̂`` and ``b = κ̂ ⊙ α``; all vectors are (H, N).
    """
    sa = np.einsum("hij,hj->hi", S, a)  # (V7.10): sa[h,i] = Σ_j S[h,i,j]·a[h,j]
    new_S = S * decay[:, None, :] + sa[:, :, None] * b[:, None, :] + v[:, :, None] * k[:, None, :]
    y = np.einsum("hij,hj->hi", new_S, r)  # (V7.11): no bonus
    return y, new_S


class RwkvV7(ReferenceModel):
    """RWKV v7.0 (x070): generalised delta-rule state update, no bonus, v_first value residual."""

    version = "7"

    def __init__(self, weights: Mapping[str, Any], n_layer: int, *, gn_eps: float | None = None) -> None:
        super().__init__(weights, n_layer)
        self.gn_eps = DEFAULT_GN_EPS_V7 if gn_eps is None else float(gn_eps)
        C = self.n_embed
        r_k0 = self.w("blocks.0.att.r_k")
        if r_k0.ndim != 2 or r_k0.shape[0] * r_k0.shape[1] != C:
            raise ModelFormatError(
                f"tensor 'blocks.0.att.r_k' has shape {r_k0.shape}, expected (H, N) with H·N = C={C}"
            )
        self.n_head, self.head_size = int(r_k0.shape[0]), int(r_k0.shape[1])  # §1.1: (H, N) = r_k shape
        H, N = self.n_head, self.head_size
        for layer in range(n_layer):
            p = f"blocks.{layer}.att."
            self._expect(p + "x_rwkvag", (6, 1, C))
            loras = ["w", "a", "g"] + (["v"] if layer > 0 else [])
            for f in loras:
                rank = self.w(p + f + "1").shape[0]
                self._expect(p + f + "1", (rank, C))
                self._expect(p + f + "2", (C, rank))
            for name in ["w0", "a0", "k_k", "k_a"] + (["v0"] if layer > 0 else []):
                self._expect(p + name, (1, 1, C))
            self._expect(p + "r_k", (H, N))
            for name in ("key", "value", "receptance", "output"):
                self._expect(p + name + ".weight", (C, C))
            for name in ("ln_x.weight", "ln_x.bias"):
                self._expect(p + name, (C,))
            q = f"blocks.{layer}.ffn."
            F = self.w(q + "key.weight").shape[0]
            self._expect(q + "x_k", (1, 1, C))
            self._expect(q + "key.weight", (F, C))
            self._expect(q + "value.weight", (C, F))

    def _layer_state_size(self) -> int:
        return (2 + self.head_size) * self.n_embed  # §7: ffn_x, att_x, S (H·N·N = N·C)

    def _time_mix(self, layer: int, a: F64, st: LayerState, carry: dict[str, F64]) -> F64:
        H, N = self.n_head, self.head_size
        p = f"blocks.{layer}.att."

        def vec(name: str) -> F64:  # (1,1,C) parameters as C-vectors
            return self.w(p + name).reshape(-1)

        s = st.att_x.copy()  # (V7.1)
        st.att_x[:] = a
        d = s - a
        mix = self.w(p + "x_rwkvag").reshape(6, -1)
        x = {f: a + d * mix[idx] for idx, f in enumerate(MIX_ORDER)}  # (V7.2)

        r = self.w(p + "receptance.weight") @ x["r"]  # (V7.3)
        k = self.w(p + "key.weight") @ x["k"]
        v = self.w(p + "value.weight") @ x["v"]

        w_hat = vec("w0") + self.w(p + "w2") @ np.tanh(self.w(p + "w1") @ x["w"])  # (V7.4)
        decay = np.exp(-DECAY_SCALE * sigmoid(w_hat))
        alpha = sigmoid(vec("a0") + self.w(p + "a2") @ (self.w(p + "a1") @ x["a"]))  # (V7.5)
        g = self.w(p + "g2") @ sigmoid(self.w(p + "g1") @ x["g"])  # (V7.6)

        kappa = (k * vec("k_k")).reshape(H, N)  # (V7.7)
        kappa_hat = kappa / np.maximum(np.linalg.norm(kappa, axis=1, keepdims=True), 1e-12)
        k = k * (1.0 + (alpha - 1.0) * vec("k_a"))  # (V7.8)

        if layer == 0:  # (V7.9)
            carry["v_first"] = v
        else:
            gate = sigmoid(vec("v0") + self.w(p + "v2") @ (self.w(p + "v1") @ x["v"]))
            v = v + (carry["v_first"] - v) * gate

        rh, kh, vh = r.reshape(H, N), k.reshape(H, N), v.reshape(H, N)
        decay_h, alpha_h = decay.reshape(H, N), alpha.reshape(H, N)
        S = st.rest.reshape(H, N, N)  # view: S[h, i=value, j=key]
        y, new_S = wkv7_step(S, rh, decay_h, kh, vh, -kappa_hat, kappa_hat * alpha_h)  # (V7.10)-(V7.11)
        S[:] = new_S

        z = group_norm(
            y.reshape(-1), self.w(p + "ln_x.weight"), self.w(p + "ln_x.bias"), H, self.gn_eps
        )  # (V7.12)
        bonus = (rh * kh * self.w(p + "r_k")).sum(axis=1, keepdims=True)  # Σ_j r·k·r_k per head
        z = z + (bonus * vh).reshape(-1)
        return self.w(p + "output.weight") @ (z * g)  # (V7.13)

    def _channel_mix(self, layer: int, b: F64, st: LayerState) -> F64:
        p = f"blocks.{layer}.ffn."
        s = st.ffn_x.copy()  # (CM7.1)
        st.ffn_x[:] = b
        x_k = b + (s - b) * self.w(p + "x_k").reshape(-1)
        return self.w(p + "value.weight") @ relu_squared(self.w(p + "key.weight") @ x_k)  # (CM7.2)
