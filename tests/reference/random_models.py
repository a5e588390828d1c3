"""Random-weight RWKV models (v4 ... v7) in the rwkv.cpp `.bin` tensor layout, for engine tests.

The tiny real models cover one shape per version; random models let tests vary C, L, H, N, F and
the LoRA ranks, and cover the official-5.1 family (gate + per-head decay) for which no real file
exists. Every tensor has the name of formats.md §6 and the NumPy (PyTorch) shape of an rwkv.cpp
file, already preprocessed like rwkv.cpp's converter (v4 ``time_decay = -exp(raw)``, v5
``time_decay = exp(-exp(raw))``, v5.0/5.1 ``time_first = exp(raw)``, v6 raw decay, v7 concatenated
``x_rwkvag``, transposed LoRA matrices).

Magnitudes are chosen so that outputs are non-trivial and well conditioned in fp32: linear
weights ~ N(0, 1/fan_in) (unit-variance outputs for unit-variance inputs), output projections
scaled down to keep the residual stream O(1), LayerNorm weights near 1, realistic decay ranges,
and a head scaled so logits have a spread of a few units (max |logit| roughly 5..15).
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from rwkv_ggml.errors import EngineArgumentError, UnsupportedError

RANDOM_VERSIONS = ("4", "5.1", "5.1-gated", "5.2", "6", "7")

# formats.md §4.1: in an FP16 file a tensor is FP16 iff it has >= 2 dims and its name contains none of these.
FP32_NAME_PARTS = (".time_", ".k_k", ".k_a", ".r_k", ".x_rwkvag", ".x_k", ".w0", ".a0", ".v0")

DEFAULT_LORA = {"6": {"maa": 8, "decay": 16}, "7": {"w": 8, "a": 8, "v": 8, "g": 8}}

F32 = NDArray[np.float32]


def stored_as_fp16(name: str, array: NDArray[np.generic]) -> bool:
    """formats.md §4.1: whether rwkv.cpp's converter stores this tensor as FP16 in an FP16 file."""
    return array.ndim >= 2 and not any(part in name for part in FP32_NAME_PARTS)


def _lora_dims(version: str, lora_dims: int | Mapping[str, int] | None) -> dict[str, int]:
    defaults = DEFAULT_LORA.get(version, {})
    if lora_dims is None:
        return dict(defaults)
    if isinstance(lora_dims, int):
        return {key: int(lora_dims) for key in defaults}
    unknown = set(lora_dims) - set(defaults)
    if unknown:
        raise EngineArgumentError(
            f"lora_dims keys {sorted(unknown)} are not used by RWKV v{version} (known: {sorted(defaults)})"
        )
    return {**defaults, **{key: int(value) for key, value in lora_dims.items()}}


class _Gen:
    """Small helpers over one seeded Generator so every tensor is drawn in a fixed order."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def linear(self, out_dim: int, in_dim: int, gain: float = 1.0) -> F32:
        """An nn.Linear weight (out, in) ~ N(0, gain²/in): unit-variance in -> ~gain-variance out."""
        return (self.rng.standard_normal((out_dim, in_dim)) * (gain / np.sqrt(in_dim))).astype(np.float32)

    def uniform(self, low: float, high: float, *shape: int) -> F32:
        return self.rng.uniform(low, high, size=shape).astype(np.float32)

    def normal(self, scale: float, *shape: int) -> F32:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def ln(self, weights: dict[str, F32], prefix: str, n: int) -> None:
        """A LayerNorm / GroupNorm affine: weight ~ 1 ± 0.1, bias ~ ±0.1."""
        weights[prefix + ".weight"] = (1.0 + self.normal(0.1, n)).astype(np.float32)
        weights[prefix + ".bias"] = self.normal(0.1, n)


def random_model_weights(
    version: str,
    n_embed: int,
    n_layer: int,
    n_vocab: int,
    *,
    head_size: int = 8,
    ffn_dim: int | None = None,
    lora_dims: int | Mapping[str, int] | None = None,
    seed: int,
) -> dict[str, F32]:
    """Every tensor of a random RWKV ``version`` model, float32, rwkv.cpp-file names and NumPy shapes.

    ``version``: "4", "5.1" (no gate, per-head decay/time_first), "5.1-gated" (official 5.1: gate +
    per-head decay/time_first), "5.2", "6", "7". ``head_size`` (N) must divide ``n_embed``
    (ignored for v4). ``ffn_dim`` (F) defaults to 4·C. ``lora_dims``: one int for every rank, or a
    mapping — v6 keys "maa" (D_m), "decay" (D_w); v7 keys "w", "a", "v", "g" — defaults 8/16 and 8.
    The dict is ordered like a converted checkpoint: emb, blocks.0.ln0, blocks..., ln_out, head.
    """
    if version not in RANDOM_VERSIONS:
        raise UnsupportedError(f"unknown RWKV version {version!r}; choose one of {RANDOM_VERSIONS}")
    C, L, V = int(n_embed), int(n_layer), int(n_vocab)
    if C < 1 or L < 1 or V < 1:
        raise EngineArgumentError(f"n_embed, n_layer, n_vocab must be >= 1, got {C}, {L}, {V}")
    if version != "4" and (head_size < 1 or C % head_size != 0):
        raise EngineArgumentError(f"head_size {head_size} must divide n_embed {C}")
    F = 4 * C if ffn_dim is None else int(ffn_dim)
    N = head_size
    H = C // N
    ranks = _lora_dims(version, lora_dims)
    g = _Gen(seed)

    w: dict[str, F32] = {}
    w["emb.weight"] = g.normal(1.0, V, C)
    g.ln(w, "blocks.0.ln0", C)
    for layer in range(L):
        p = f"blocks.{layer}."
        g.ln(w, p + "ln1", C)
        g.ln(w, p + "ln2", C)
        if version == "4":
            _att_v4(g, w, p + "att.", C)
        elif version in ("5.1", "5.1-gated", "5.2"):
            _att_v5(g, w, p + "att.", version, C, H, N)
        elif version == "6":
            _att_v6(g, w, p + "att.", C, H, N, ranks["maa"], ranks["decay"])
        else:
            _att_v7(g, w, p + "att.", C, H, N, layer, ranks)
        _ffn(g, w, p + "ffn.", version, C, F)
    g.ln(w, "ln_out", C)
    w["head.weight"] = g.linear(V, C, gain=3.0)
    return w


def _att_v4(g: _Gen, w: dict[str, F32], p: str, C: int) -> None:
    for f in ("k", "v", "r"):
        w[p + "time_mix_" + f] = g.uniform(0.0, 1.0, C)
    # Real v4 decays span about -exp(-5) .. -exp(2); the file stores -exp(raw) (architecture.md §3.1).
    w[p + "time_decay"] = (-np.exp(g.uniform(-3.0, 1.5, C))).astype(np.float32)
    w[p + "time_first"] = g.uniform(-1.0, 1.0, C)
    for name in ("key", "value", "receptance"):
        w[p + name + ".weight"] = g.linear(C, C)
    w[p + "output.weight"] = g.linear(C, C, gain=0.5)


def _att_v5(g: _Gen, w: dict[str, F32], p: str, version: str, C: int, H: int, N: int) -> None:
    gated = version != "5.1"
    for f in ("k", "v", "r") + (("g",) if gated else ()):
        w[p + "time_mix_" + f] = g.uniform(0.0, 1.0, C)
    if version == "5.2":  # per channel (H, N, 1); bonus time_faaaa stored raw
        w[p + "time_decay"] = np.exp(-np.exp(g.uniform(-3.0, 0.5, H, N, 1))).astype(np.float32)
        w[p + "time_faaaa"] = g.uniform(-0.5, 1.0, H, N, 1)
    else:  # per head (H, 1, 1); bonus time_first stored as exp(raw)
        w[p + "time_decay"] = np.exp(-np.exp(g.uniform(-3.0, 0.5, H, 1, 1))).astype(np.float32)
        w[p + "time_first"] = np.exp(g.uniform(-1.0, 0.5, H, 1, 1)).astype(np.float32)
    for name in ("key", "value", "receptance"):
        w[p + name + ".weight"] = g.linear(C, C)
    if gated:
        w[p + "gate.weight"] = g.linear(C, C)
    w[p + "output.weight"] = g.linear(C, C, gain=0.5)
    g.ln(w, p + "ln_x", C)


def _att_v6(g: _Gen, w: dict[str, F32], p: str, C: int, H: int, N: int, d_m: int, d_w: int) -> None:
    for f in ("x", "w", "k", "v", "r", "g"):
        w[p + "time_maa_" + f] = g.uniform(0.0, 1.0, C)
    w[p + "time_maa_w1"] = g.linear(5 * d_m, C)  # (5·D_m, C): transposed .pth (C, 5·D_m)
    w[p + "time_maa_w2"] = g.normal(
        0.3 / np.sqrt(d_m), 5, C, d_m
    )  # (5, C, D_m): .pth (5, D_m, C), dims 1,2 swapped
    w[p + "time_decay"] = g.uniform(-3.0, 0.5, H, N, 1)  # raw; exp(-exp(.)) is taken per token
    w[p + "time_decay_w1"] = g.linear(d_w, C)  # (D_w, C)
    w[p + "time_decay_w2"] = g.normal(0.5 / np.sqrt(d_w), C, d_w)  # (C, D_w)
    w[p + "time_faaaa"] = g.uniform(-0.5, 1.0, H, N, 1)
    for name in ("receptance", "key", "value", "gate"):
        w[p + name + ".weight"] = g.linear(C, C)
    w[p + "output.weight"] = g.linear(C, C, gain=0.5)
    g.ln(w, p + "ln_x", C)


def _att_v7(
    g: _Gen, w: dict[str, F32], p: str, C: int, H: int, N: int, layer: int, ranks: dict[str, int]
) -> None:
    w[p + "x_rwkvag"] = g.uniform(0.0, 1.0, 6, 1, C)  # r, w, k, v, a, g
    w[p + "w0"] = g.uniform(-1.5, 1.5, 1, 1, C)
    w[p + "w1"] = g.linear(ranks["w"], C)  # (D_w, C)
    w[p + "w2"] = g.normal(0.5 / np.sqrt(ranks["w"]), C, ranks["w"])  # (C, D_w)
    w[p + "a0"] = g.normal(0.5, 1, 1, C)
    w[p + "a1"] = g.linear(ranks["a"], C)
    w[p + "a2"] = g.normal(0.5 / np.sqrt(ranks["a"]), C, ranks["a"])
    if layer > 0:  # layer 0 produces v_first and has no value-residual LoRA (architecture.md §6.1)
        w[p + "v0"] = g.normal(0.5, 1, 1, C)
        w[p + "v1"] = g.linear(ranks["v"], C)
        w[p + "v2"] = g.normal(0.5 / np.sqrt(ranks["v"]), C, ranks["v"])
    w[p + "g1"] = g.linear(ranks["g"], C)
    w[p + "g2"] = g.normal(2.0 / np.sqrt(ranks["g"]), C, ranks["g"])
    w[p + "k_k"] = g.uniform(0.5, 1.5, 1, 1, C)
    w[p + "k_a"] = g.uniform(0.0, 1.5, 1, 1, C)
    w[p + "r_k"] = g.normal(0.3, H, N)
    for name in ("receptance", "key", "value"):
        w[p + name + ".weight"] = g.linear(C, C)
    w[p + "output.weight"] = g.linear(C, C, gain=0.5)
    g.ln(w, p + "ln_x", C)


def _ffn(g: _Gen, w: dict[str, F32], p: str, version: str, C: int, F: int) -> None:
    if version == "7":
        w[p + "x_k"] = g.uniform(0.0, 1.0, 1, 1, C)
    else:
        mix = "time_maa_" if version == "6" else "time_mix_"
        w[p + mix + "k"] = g.uniform(0.0, 1.0, C)
        w[p + mix + "r"] = g.uniform(0.0, 1.0, C)
    w[p + "key.weight"] = g.linear(F, C)
    # relu² of a unit-variance pre-activation has mean square 3/2 over half the channels: scale down.
    w[p + "value.weight"] = g.linear(C, F, gain=0.5)
    if version != "7":
        w[p + "receptance.weight"] = g.linear(C, C)


def as_stored(
    weights: Mapping[str, NDArray[np.generic]], dtype: Literal["f32", "f16"]
) -> dict[str, NDArray[np.generic]]:
    """The tensors as a file of ``dtype`` stores them: f16 files narrow the §4.1 matrices to float16."""
    if dtype not in ("f32", "f16"):
        raise EngineArgumentError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
    out: dict[str, NDArray[np.generic]] = {}
    for name, array in weights.items():
        arr = np.ascontiguousarray(array, dtype=np.float32)
        if dtype == "f16" and stored_as_fp16(name, arr):
            arr = arr.astype(np.float16)
        out[name] = arr
    return out


def write_random_model(
    path: str | PathLike[str],
    version: str,
    n_embed: int,
    n_layer: int,
    n_vocab: int,
    *,
    head_size: int = 8,
    ffn_dim: int | None = None,
    lora_dims: int | Mapping[str, int] | None = None,
    dtype: Literal["f32", "f16"] = "f32",
    seed: int,
) -> dict[str, NDArray[np.generic]]:
    """Write a random model as an rwkv.cpp `.bin` and return its weights exactly as stored.

    FP16 files store as float16 exactly the tensors formats.md §4.1 lists (matrices other than
    the decay/mix parameters), the rest float32; the returned dict holds those float16 arrays,
    so ``reference_model(returned, n_layer)`` computes from precisely what is in the file.
    """
    from rwkv_ggml.fileformat import write_model_file  # lazy: only this function needs the writer

    stored = as_stored(
        random_model_weights(
            version,
            n_embed,
            n_layer,
            n_vocab,
            head_size=head_size,
            ffn_dim=ffn_dim,
            lora_dims=lora_dims,
            seed=seed,
        ),
        dtype,
    )
    write_model_file(
        path,
        n_vocab=n_vocab,
        n_embed=n_embed,
        n_layer=n_layer,
        data_type=1 if dtype == "f16" else 0,
        tensors=list(stored.items()),
    )
    return stored


__all__ = [
    "RANDOM_VERSIONS",
    "as_stored",
    "random_model_weights",
    "stored_as_fp16",
    "write_random_model",
]
