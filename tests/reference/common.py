"""Shared pieces of the float64 NumPy reference models (architecture.md §0, §2, §7).

The reference models exist so that the C engine can be tested against something written
independently from the equations in ``docs/architecture.md``. Everything here is computed
in float64 so that the reference error is far below the fp32 engine's, and every step names the
spec equation it implements. Clarity beats speed, but each layer is vectorised with NumPy so a
short sequence on a small model runs in milliseconds.

This module holds what all versions share: LayerNorm / GroupNorm, the activation functions, the
per-token skeleton (S1)-(S3), the flat rwkv.cpp state layout (§7) and weight lookup with clear
errors. The version-specific time/channel mixing lives in ``rwkv_v4.py`` ... ``rwkv_v7.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rwkv_ggml.errors import EngineArgumentError, ModelFormatError, ShapeError

F64 = NDArray[np.float64]

LN_EPS = 1e-5  # (E1): every LayerNorm of every version uses this epsilon


def layer_norm(x: F64, weight: F64, bias: F64, eps: float = LN_EPS) -> F64:
    """(E1) LayerNorm over the last axis with the biased variance, as PyTorch's F.layer_norm."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def group_norm(y: F64, weight: F64, bias: F64, n_head: int, eps: float) -> F64:
    """(E2) GroupNorm with ``n_head`` contiguous groups of a C-vector, then the C-long affine."""
    groups = y.reshape(n_head, -1)
    mu = groups.mean(axis=-1, keepdims=True)
    var = ((groups - mu) ** 2).mean(axis=-1, keepdims=True)
    normed = ((groups - mu) / np.sqrt(var + eps)).reshape(y.shape)
    return normed * weight + bias


def sigmoid(z: F64) -> F64:
    """σ(z) = 1 / (1 + e^{-z}), written to avoid overflow warnings for large negative z."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def silu(z: F64) -> F64:
    """silu(z) = z·σ(z)."""
    return z * sigmoid(z)


def relu_squared(z: F64) -> F64:
    """relu²(z) = max(z, 0)²."""
    return np.maximum(z, 0.0) ** 2


class LayerState:
    """Named float64 views into one layer's block of the flat rwkv.cpp state (architecture.md §7).

    Views, not copies: writing ``st.att_x[:] = a`` updates the flat state buffer in place.
    ``rest`` is everything after ``att_x`` (v4: aa, bb, pp; v5+: the H·N·N matrix S).
    """

    def __init__(self, block: F64, n_embed: int) -> None:
        self.ffn_x = block[0:n_embed]  # channel-mix shift comes FIRST in rwkv.cpp's layout
        self.att_x = block[n_embed : 2 * n_embed]
        self.rest = block[2 * n_embed :]


class ReferenceModel:
    """A float64 RWKV model driven token by token, with an explicit flat state (rwkv.cpp layout).

    Subclasses set ``version``, ``n_head``, ``head_size`` and implement ``_layer_state_size``,
    ``_init_layer_state``, ``_time_mix`` and ``_channel_mix``. ``eval`` never modifies the state
    passed in: it works on a float64 copy and returns it.
    """

    version: str = "?"

    def __init__(self, weights: Mapping[str, Any], n_layer: int) -> None:
        if n_layer < 1:
            raise EngineArgumentError(f"n_layer must be >= 1, got {n_layer}")
        # One float64 copy of every tensor, made once; float16 / float32 inputs are widened exactly.
        self._weights: dict[str, F64] = {
            name: np.array(array, dtype=np.float64, copy=True) for name, array in weights.items()
        }
        emb = self.w("emb.weight")
        if emb.ndim != 2:
            raise ModelFormatError(f"tensor 'emb.weight' must be 2-D (V, C), got shape {emb.shape}")
        self.n_vocab: int = int(emb.shape[0])
        self.n_embed: int = int(emb.shape[1])
        self.n_layer: int = int(n_layer)
        if f"blocks.{n_layer - 1}.ln1.weight" not in self._weights:
            raise ModelFormatError(
                f"n_layer={n_layer} but tensor 'blocks.{n_layer - 1}.ln1.weight' is missing"
            )
        if f"blocks.{n_layer}.ln1.weight" in self._weights:
            raise ModelFormatError(f"n_layer={n_layer} but the weights also contain 'blocks.{n_layer}.*'")
        self.n_head: int = 0
        self.head_size: int = 0
        C = self.n_embed
        self._expect("head.weight", (self.n_vocab, C))
        for name in ("blocks.0.ln0.weight", "blocks.0.ln0.bias", "ln_out.weight", "ln_out.bias"):
            self._expect(name, (C,))
        for layer in range(n_layer):
            for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"):
                self._expect(f"blocks.{layer}.{name}", (C,))

    # ---- weight access -------------------------------------------------------------------

    def w(self, name: str) -> F64:
        """The float64 tensor ``name`` in NumPy (PyTorch) order; a clear error if it is missing."""
        try:
            return self._weights[name]
        except KeyError:
            raise ModelFormatError(
                f"RWKV v{self.version} model: required tensor '{name}' is missing"
            ) from None

    def has(self, name: str) -> bool:
        """Whether tensor ``name`` is present (used for optional tensors like v7 layer-0 v0/v1/v2)."""
        return name in self._weights

    def _expect(self, name: str, shape: Sequence[int]) -> None:
        """Raise ModelFormatError naming the tensor if it is missing or has the wrong shape."""
        actual = self.w(name).shape
        if tuple(actual) != tuple(shape):
            raise ModelFormatError(
                f"tensor '{name}' has shape {tuple(actual)}, RWKV v{self.version} with "
                f"C={self.n_embed}, V={self.n_vocab} needs {tuple(shape)}"
            )

    # ---- state (architecture.md §7) --------------------------------------------------------

    def _layer_state_size(self) -> int:
        raise NotImplementedError

    def _init_layer_state(self, st: LayerState) -> None:
        """Fill one layer's block with its initial values (called on a zeroed block)."""

    @property
    def state_size(self) -> int:
        """Floats in the flat state: 5·C·L (v4) or (2+N)·C·L (v5, v6, v7)."""
        return self._layer_state_size() * self.n_layer

    def _layer_states(self, state: F64) -> list[LayerState]:
        per = self._layer_state_size()
        return [LayerState(state[i * per : (i + 1) * per], self.n_embed) for i in range(self.n_layer)]

    def init_state(self) -> F64:
        """The initial state: zeros, except v4's pp = -1e30 (architecture.md §3.4, §7)."""
        state = np.zeros(self.state_size, dtype=np.float64)
        for st in self._layer_states(state):
            self._init_layer_state(st)
        return state

    def _checked_state_copy(self, state: NDArray[Any] | None) -> F64:
        if state is None:
            return self.init_state()
        arr = np.asarray(state)
        if arr.ndim != 1 or arr.shape[0] != self.state_size:
            raise ShapeError(
                f"state has shape {arr.shape}, RWKV v{self.version} model needs a flat state of "
                f"{self.state_size} floats"
            )
        return np.array(arr, dtype=np.float64, copy=True)

    def _check_token(self, token: int) -> int:
        tok = int(token)
        if tok != token or not 0 <= tok < self.n_vocab:
            raise EngineArgumentError(
                f"token {token!r} is out of range: the vocabulary has {self.n_vocab} tokens"
            )
        return tok

    # ---- the per-token skeleton (architecture.md §2) ---------------------------------------

    def _time_mix(self, layer: int, a: F64, st: LayerState, carry: dict[str, F64]) -> F64:
        raise NotImplementedError

    def _channel_mix(self, layer: int, b: F64, st: LayerState) -> F64:
        raise NotImplementedError

    def _residual(self, token: int, state: F64) -> F64:
        """(S1)-(S2): the residual stream after the last block; updates ``state`` in place."""
        x = layer_norm(
            self.w("emb.weight")[token], self.w("blocks.0.ln0.weight"), self.w("blocks.0.ln0.bias")
        )  # (S1)
        carry: dict[str, F64] = {}  # per-token values threaded between layers (v7 v_first)
        for layer, st in enumerate(self._layer_states(state)):
            p = f"blocks.{layer}."
            a = layer_norm(x, self.w(p + "ln1.weight"), self.w(p + "ln1.bias"))  # (S2)
            x = x + self._time_mix(layer, a, st, carry)
            b = layer_norm(x, self.w(p + "ln2.weight"), self.w(p + "ln2.bias"))  # (S2)
            x = x + self._channel_mix(layer, b, st)
        return x

    def eval_hidden(self, token: int, state: NDArray[Any] | None) -> tuple[F64, F64]:
        """One token: (LN(x; ln_out) of the last block's output, new state). Input state untouched."""
        tok = self._check_token(token)
        new_state = self._checked_state_copy(state)
        x = self._residual(tok, new_state)
        return layer_norm(x, self.w("ln_out.weight"), self.w("ln_out.bias")), new_state  # (S3) first half

    def hidden(self, token: int, state: NDArray[Any] | None) -> F64:
        """The final hidden vector (after ln_out, before head) for ``token`` fed after ``state``."""
        return self.eval_hidden(token, state)[0]

    def eval(self, token: int, state: NDArray[Any] | None) -> tuple[F64, F64]:
        """One token: (logits (V,), new state). ``state=None`` means the initial state."""
        h, new_state = self.eval_hidden(token, state)
        return self.w("head.weight") @ h, new_state  # (S3)

    def eval_sequence(self, tokens: Sequence[int], state: NDArray[Any] | None) -> tuple[F64, F64]:
        """T tokens in order: (logits of every token (T, V), final state). A plain loop over eval."""
        toks = list(tokens)
        if not toks:
            raise EngineArgumentError("eval_sequence needs at least one token")
        current = self._checked_state_copy(state)
        logits = np.empty((len(toks), self.n_vocab), dtype=np.float64)
        for t, token in enumerate(toks):
            logits[t], current = self.eval(token, current)
        return logits, current

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(version={self.version!r}, n_embed={self.n_embed}, "
            f"n_layer={self.n_layer}, n_vocab={self.n_vocab}, n_head={self.n_head}, "
            f"head_size={self.head_size})"
        )
