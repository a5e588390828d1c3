"""Key layouts (Hugging Face transformers RWKV, flash-linear-attention RWKV-7) -> official names."""

from __future__ import annotations

import re

from ..errors import ModelFormatError
from ._tensor import _numel, _short, _Spec


def bounded_layer_index(name: str, digits: str, limit: int, where: str = "") -> int:
    """The layer number ``digits`` taken from tensor ``name``, refused unless it is below ``limit``.

    A file cannot describe more layers than it holds tensors, so callers that size anything by
    layer numbers pass that count: every loop or array stays bounded by the file, and a 30- or
    5000-digit index is a ModelFormatError (``where`` prefixes it: the file) instead of an
    OverflowError, a ValueError or a 300-million-entry ``range``.
    """
    if len(digits) > len(str(limit)) or int(digits) >= limit:
        raise ModelFormatError(
            f"{where}tensor '{_short(name)}' has layer index {_short(digits, 40)}, out of range for this "
            f"checkpoint (must be below {limit}; layers are numbered 0, 1, ... without gaps)"
        )
    return int(digits)


# ---------------------------------------------------------------------------------------------
# Key layouts -> official names


def _detect_layout(names: list[str]) -> str:
    if any(n.startswith("rwkv.") for n in names):
        return "hf-rwkv"
    if any(n.startswith(("model.layers.", "model.embeddings.")) for n in names):
        return "hf-rwkv7-fla"
    return "official"


# transformers RWKV spells the mix coefficients out: time_mix_key -> time_mix_k, ...
_HF_MIX = {
    "time_mix_key": "time_mix_k",
    "time_mix_value": "time_mix_v",
    "time_mix_receptance": "time_mix_r",
    "time_mix_gate": "time_mix_g",
}
_HF_BLOCK = re.compile(r"rwkv\.blocks\.(\d+)\.(.+)")


def _from_hf_rwkv(name: str) -> str:
    """transformers RWKV (v4; community v5/v6 use the same scheme) -> official name."""
    if name in ("head.weight", "rwkv.head.weight"):
        return "head.weight"
    if name.startswith("rwkv.embeddings."):
        return "emb." + name[len("rwkv.embeddings.") :]
    m = _HF_BLOCK.fullmatch(name)
    if m:
        layer, tail = m.groups()
        for hf, official in (("pre_ln.", "ln0."), ("attention.", "att."), ("feed_forward.", "ffn.")):
            if tail.startswith(hf):
                tail = official + tail[len(hf) :]
                break
        parts = tail.split(".")
        parts[-1] = _HF_MIX.get(parts[-1], parts[-1])
        return f"blocks.{layer}." + ".".join(parts)
    if name.startswith("rwkv."):
        return name[len("rwkv.") :]  # rwkv.ln_out.weight -> ln_out.weight
    return name


_FLA_TOP = {
    "model.embeddings.weight": "emb.weight",
    "model.norm.weight": "ln_out.weight",
    "model.norm.bias": "ln_out.bias",
    "lm_head.weight": "head.weight",
}
_FLA_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_FLA_RENAME = {
    "pre_norm.weight": "ln0.weight",
    "pre_norm.bias": "ln0.bias",
    "attn_norm.weight": "ln1.weight",
    "attn_norm.bias": "ln1.bias",
    "ffn_norm.weight": "ln2.weight",
    "ffn_norm.bias": "ln2.bias",
    "attn.r_proj.weight": "att.receptance.weight",
    "attn.k_proj.weight": "att.key.weight",
    "attn.v_proj.weight": "att.value.weight",
    "attn.o_proj.weight": "att.output.weight",
    "attn.g_norm.weight": "att.ln_x.weight",
    "attn.g_norm.bias": "att.ln_x.bias",
    "attn.r_k": "att.r_k",
    "ffn.key.weight": "ffn.key.weight",
    "ffn.value.weight": "ffn.value.weight",
}
# Official (1,1,C) vectors that the fla layout may store flat.
_FLA_VECTORS = {f"attn.x_{c}": f"att.x_{c}" for c in "rwkvag"} | {
    "attn.k_k": "att.k_k",
    "attn.k_a": "att.k_a",
    "ffn.x_k": "ffn.x_k",
}
_FLA_LORA = re.compile(r"attn\.([wavg])_lora\.lora\.(0\.weight|2\.weight|2\.bias)")


def _from_fla(name: str, spec: _Spec) -> tuple[str, _Spec, tuple[int, ...] | None]:
    """flash-linear-attention RWKV-7 -> official name, transposing/reshaping to official shapes.

    The LoRA factors are ``nn.Linear`` weights there (``lora.0``: (rank, C) = w1ᵀ,
    ``lora.2``: (C, rank) = w2ᵀ, ``lora.2.bias`` = w0), so they are transposed back; the
    per-channel vectors are given the official (1, 1, C) shape.
    """
    if name in _FLA_TOP:
        return _FLA_TOP[name], spec, None
    m = _FLA_LAYER.fullmatch(name)
    if not m:
        return name, spec, None
    layer, tail = m.groups()
    prefix = f"blocks.{layer}."
    if tail in _FLA_RENAME:
        return prefix + _FLA_RENAME[tail], spec, None
    if tail in _FLA_VECTORS:
        return prefix + _FLA_VECTORS[tail], spec, (1, 1, _numel(spec.shape))
    lora = _FLA_LORA.fullmatch(tail)
    if lora:
        which, part = lora.groups()
        if part == "2.bias":
            return f"{prefix}att.{which}0", spec, (1, 1, _numel(spec.shape))
        if len(spec.shape) != 2:
            raise ModelFormatError(f"tensor '{name}' should be 2-D, has shape {list(spec.shape)}")
        return f"{prefix}att.{which}{1 if part == '0.weight' else 2}", spec.transposed(), None
    return name, spec, None


def _to_official(layout: str, name: str, spec: _Spec) -> tuple[str, _Spec, tuple[int, ...] | None]:
    if layout == "hf-rwkv":
        return _from_hf_rwkv(name), spec, None
    if layout == "hf-rwkv7-fla":
        return _from_fla(name, spec)
    return name, spec, None
