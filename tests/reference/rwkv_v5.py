"""Float64 NumPy reference of RWKV v5.x (architecture.md §4), weights as in an rwkv.cpp file.

One kernel covers every v5 family, selected by features rather than names (§1.3):

| version name | gate | bonus tensor | decay / bonus shape (file, NumPy order) |
|---|---|---|---|
| "5.1" (rwkv.cpp 5.1 = official 5.0) | no | ``time_first`` = exp(raw) | per head ``(H, 1, 1)`` |
| "5.1-gated" (official 5.1) | yes | ``time_first`` = exp(raw) | per head ``(H, 1, 1)`` |
| "5.2" | yes | ``time_faaaa`` raw | per channel ``(H, N, 1)`` |

The file holds ``time_decay = exp(-exp(raw))`` already. A per-head value is broadcast to the N
key channels of its head. State per layer: ffn_x, att_x, S[h][i=key][j=value].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rwkv_ggml.errors import ModelFormatError, UnsupportedError

from .common import F64, LayerState, ReferenceModel, group_norm, silu
from .rwkv_v4 import channel_mix_v4, check_channel_mix_v4_shapes

DEFAULT_GN_EPS_V5 = 1e-5  # §9.2, rwkv.cpp column (the official package uses 64e-5)


def v5_variant(weights: Mapping[str, Any]) -> str:
    """The v5 family name from the features of layer 0 (§1.3): "5.1", "5.1-gated" or "5.2"."""
    gated = "blocks.0.att.gate.weight" in weights
    faaaa = "blocks.0.att.time_faaaa" in weights
    first = "blocks.0.att.time_first" in weights
    if gated and faaaa:
        return "5.2"
    if gated and first:
        return "5.1-gated"
    if not gated and first:
        return "5.1"
    if not gated and faaaa:
        raise UnsupportedError("RWKV v5 model has 'time_faaaa' but no 'att.gate.weight': no known v5 variant")
    raise ModelFormatError(
        "RWKV v5 model has neither 'blocks.0.att.time_first' nor 'blocks.0.att.time_faaaa'"
    )


def wkv5_step(S: F64, r: F64, k: F64, v: F64, w: F64, u: F64) -> tuple[F64, F64]:
    """(V5.4)-(V5.5), also (V6.7): one multi-head WKV step; returns (y (H, N), new S (H, N, N)).

    ``S[h, i, j]``: i = key index, j = value index. r, k, v, w (decay in (0, 1)), u (bonus) are
    (H, N) arrays (per-head w/u broadcast by the caller). The output uses the OLD state.
    """
    kv = k[:, :, None] * v[:, None, :]  # k[h,i]·v[h,j]
    y = np.einsum("hi,hij->hj", r, u[:, :, None] * kv + S)  # (V5.4)
    return y, w[:, :, None] * S + kv  # (V5.5)


class RwkvV5(ReferenceModel):
    """RWKV v5.x, any of the three families above, with a per-model GroupNorm epsilon."""

    def __init__(self, weights: Mapping[str, Any], n_layer: int, *, gn_eps: float | None = None) -> None:
        self.version = v5_variant(weights)
        super().__init__(weights, n_layer)
        self.gated = self.version != "5.1"
        self.bonus_name = "time_faaaa" if self.version == "5.2" else "time_first"
        self.gn_eps = DEFAULT_GN_EPS_V5 if gn_eps is None else float(gn_eps)

        C = self.n_embed
        decay0 = self.w("blocks.0.att.time_decay")
        if decay0.ndim != 3 or decay0.shape[0] < 1 or C % decay0.shape[0] != 0:
            raise ModelFormatError(
                f"tensor 'blocks.0.att.time_decay' has shape {decay0.shape}, expected (H, 1, 1) or (H, N, 1) "
                f"with H dividing C={C}"
            )
        self.n_head = int(decay0.shape[0])  # §1.1: H = PyTorch dim 0 of the (H, ., 1) decay
        self.head_size = C // self.n_head
        H, N = self.n_head, self.head_size
        allowed = ((H, 1, 1), (H, N, 1))
        for layer in range(n_layer):
            p = f"blocks.{layer}.att."
            mixes = ["time_mix_k", "time_mix_v", "time_mix_r"] + (["time_mix_g"] if self.gated else [])
            for name in [*mixes, "ln_x.weight", "ln_x.bias"]:
                self._expect(p + name, (C,))
            mats = ["key", "value", "receptance", "output"] + (["gate"] if self.gated else [])
            for name in mats:
                self._expect(p + name + ".weight", (C, C))
            for name in ("time_decay", self.bonus_name):
                shape = self.w(p + name).shape
                if shape not in allowed:
                    raise ModelFormatError(
                        f"tensor '{p + name}' has shape {shape}, expected {allowed[0]} or {allowed[1]}"
                    )
        check_channel_mix_v4_shapes(self)

    def _layer_state_size(self) -> int:
        return (2 + self.head_size) * self.n_embed  # §7: ffn_x, att_x, S (H·N·N = N·C)

    def _time_mix(self, layer: int, a: F64, st: LayerState, carry: dict[str, F64]) -> F64:
        H, N = self.n_head, self.head_size
        p = f"blocks.{layer}.att."
        s = st.att_x.copy()  # (V5.1)
        st.att_x[:] = a

        def mix(f: str) -> F64:  # (V5.2)
            mu = self.w(p + "time_mix_" + f)
            return a * mu + s * (1.0 - mu)

        r = (self.w(p + "receptance.weight") @ mix("r")).reshape(H, N)  # (V5.3), r[h, i] = r[h·N + i]
        k = (self.w(p + "key.weight") @ mix("k")).reshape(H, N)
        v = (self.w(p + "value.weight") @ mix("v")).reshape(H, N)

        # Decay w (already exp(-exp)) and bonus u, per head (H,1) or per channel (H,N), broadcast to (H,N).
        w = np.broadcast_to(self.w(p + "time_decay").reshape(H, -1), (H, N))
        u = np.broadcast_to(self.w(p + self.bonus_name).reshape(H, -1), (H, N))

        S = st.rest.reshape(H, N, N)  # view: S[h, i=key, j=value]
        y, new_S = wkv5_step(S, r, k, v, w, u)  # (V5.4)-(V5.5)
        S[:] = new_S

        z = group_norm(
            y.reshape(-1), self.w(p + "ln_x.weight"), self.w(p + "ln_x.bias"), H, self.gn_eps
        )  # (V5.6)
        if self.gated:
            z = z * silu(self.w(p + "gate.weight") @ mix("g"))  # (V5.3) g, applied in (V5.6)
        return self.w(p + "output.weight") @ z  # (V5.7)

    def _channel_mix(self, layer: int, b: F64, st: LayerState) -> F64:
        return channel_mix_v4(self, layer, b, st)  # (CM4.*)
