"""The description of a model: version, hyper-parameters, per-layer weights, state layout, derived weights.

* :func:`validate` detects the version and checks every tensor a version requires
  (:mod:`rwkv_ggml.arch_tensors`) on the parsed file (names, types, ggml ``ne``) before any weight is
  used, so a model file that does not match its architecture fails at load with a message naming the
  tensor, never later inside a kernel (architecture.md §1, formats.md §6). It returns the
  :class:`Hyper` parameters.
* :meth:`Hyper.layers` gives per-layer access to a model's weights (:class:`Layer`:
  ``layer.att["key.weight"]`` for ``blocks.<i>.att.key.weight``) together with the layer's slots of
  the state; the state layout itself is :attr:`Hyper.layout` (defined in :mod:`rwkv_ggml.layout`,
  architecture.md §7).
* :func:`derived_weights` computes, once at load time from the stored arrays, the constants the graphs use
  besides the stored tensors (the stacked token-shift mixes, v7's ``1 - k_a``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from .arch_tensors import (
    _check_layers_and_foreign,
    _expect,
    _expect_any,
    _fail,
    _heads,
    _need,
    _rank,
    _v4_tensors,
    _v5_bonus,
    _v5_tensors,
    _v6_tensors,
    _v7_tensors,
)
from .errors import UnsupportedError
from .fileformat import ModelFile
from .layout import SUPPORTED_VERSIONS, VERSIONS, LayerSlots, StateLayout, family, state_layout

__all__ = [
    "DEFAULT_GN_EPS",
    "SUPPORTED_VERSIONS",
    "Hyper",
    "Layer",
    "Prefixed",
    "derived_weights",
    "detect_version",
    "validate",
]

# GroupNorm epsilon of att.ln_x per version (architecture.md §9.2): the value the official models were
# trained with, 64e-5, for v5 too; Model(gn_eps=1e-5) gives rwkv.cpp's v5 value (its test models need it).
DEFAULT_GN_EPS = {version: info.gn_eps for version, info in VERSIONS.items() if info.family != "4"}

W = TypeVar("W")  # what a model's weights are: engine tensors for the graphs, arrays elsewhere


@dataclass(frozen=True)
class Hyper:
    """Hyper-parameters read off the file and its tensors."""

    version: str
    n_vocab: int
    n_embed: int
    n_layer: int
    ffn_dim: int
    n_head: int = 0
    head_size: int = 0
    # LoRA ranks of layer 0 (1 for v7's v_lora): v6 "mix_lora", "decay_lora"; v7 "w_lora", "a_lora", "g_lora",
    # "v_lora". Informational: the graphs read every layer's ranks off its tensors.
    extra: dict[str, int] = field(default_factory=dict)
    gn_eps: float = 0.0  # GroupNorm epsilon of v5+ (0 for v4, which has no GroupNorm)

    @property
    def family(self) -> str:
        """ "4", "5", "6" or "7": which graph builder and state layout."""
        return family(self.version)

    @property
    def gated(self) -> bool:
        """Whether the time mix has a gate (``att.gate.weight`` or v7's g LoRA): all but v4 and rwkv.cpp's
        5.1 (architecture.md §1.3)."""
        return self.version not in ("4", "5.1")

    @property
    def bonus(self) -> str:
        """v5: the name (after ``att.``) of the bonus u: ``time_faaaa`` (raw, 5.2) or ``time_first``."""
        return _v5_bonus(self.version)

    @cached_property  # asked for on every eval (state_size); the dataclass is frozen, so it never changes
    def layout(self) -> StateLayout:
        """Where everything lives in the flat recurrent state (architecture.md §7)."""
        return state_layout(self.version, self.n_layer, self.n_embed, self.head_size)

    @property
    def state_size(self) -> int:
        """Floats in the flat recurrent state (architecture.md §7)."""
        return self.layout.size

    def layers(self, weights: Mapping[str, W]) -> list[Layer[W]]:
        """Per-layer access to ``weights`` (stored and derived, by full name), with each layer's state
        slots."""
        layout = self.layout
        return [
            Layer(
                i,
                layout.layer(i),
                Prefixed(weights, f"blocks.{i}."),
                Prefixed(weights, f"blocks.{i}.att."),
                Prefixed(weights, f"blocks.{i}.ffn."),
            )
            for i in range(self.n_layer)
        ]


class Prefixed(Generic[W]):
    """The weights under one name prefix: ``Prefixed(w, "blocks.3.att.")["key.weight"]`` is
    ``w["blocks.3.att.key.weight"]``."""

    __slots__ = ("_prefix", "_weights")

    def __init__(self, weights: Mapping[str, W], prefix: str) -> None:
        self._weights = weights
        self._prefix = prefix

    def __getitem__(self, name: str) -> W:
        return self._weights[self._prefix + name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._prefix + name in self._weights


@dataclass(frozen=True)
class Layer(Generic[W]):
    """One block of a model: its weights (``block["ln1.weight"]``, ``att["key.weight"]``,
    ``ffn["key.weight"]``; derived weights under the same prefixes, see :func:`derived_weights`) and
    where its parts of the state are (``state.ffn_x``, ``state.att_x``, ``state.recurrent``)."""

    index: int
    state: LayerSlots
    block: Prefixed[W]
    att: Prefixed[W]
    ffn: Prefixed[W]

    @property
    def ln1(self) -> tuple[W, W]:
        """The time mix's LayerNorm (weight, bias)."""
        return self.block["ln1.weight"], self.block["ln1.bias"]

    @property
    def ln2(self) -> tuple[W, W]:
        """The channel mix's LayerNorm (weight, bias)."""
        return self.block["ln2.weight"], self.block["ln2.bias"]


# ---- weights derived at load time ----
# Per-layer names (after "blocks.<i>.") of the derived weights; no stored tensor has these names.
ATT_MIX = "att.mix_stacked"  # the time mix's token-shift vectors stacked (C, 1, n): planes in MIX order
FFN_MIX = "ffn.mix_stacked"  # the channel mix's: planes k, r
ONE_MINUS_K_A = "att.one_minus_k_a"  # v7 (V7.8): 1 - k_a as a C-vector
# The planes of ATT_MIX per family, the stored vectors' suffixes; v5 without a gate has no "g".
ATT_MIX_ORDER = {"4": ("r", "k", "v"), "5": ("r", "k", "v", "g"), "6": ("w", "k", "v", "r", "g")}
V6_MIX_ORDER = ATT_MIX_ORDER["6"]  # (V6.2): also the order of the five LoRA chunks and time_maa_w2's planes


def _stack(raw: Callable[[str], npt.NDArray[np.generic]], names: list[str]) -> npt.NDArray[np.float32]:
    """n F32 vectors of C floats as one contiguous (n, 1, C) array (ggml ne (C, 1, n)): one broadcasting op
    then serves all n of them (a graph node costs a barrier per eval, which matters in per-token mode)."""
    rows = [np.asarray(raw(name), dtype=np.float32).reshape(-1) for name in names]
    return np.ascontiguousarray(np.stack(rows)[:, None, :])


def derived_weights(
    hp: Hyper, raw: Callable[[str], npt.NDArray[np.generic]]
) -> dict[str, npt.NDArray[np.float32]]:
    """The constants the graphs use besides the stored tensors, by full name (``blocks.<i>.`` + ATT_MIX,
    FFN_MIX, ONE_MINUS_K_A), computed from the stored arrays (``raw(name)``, e.g. ``WeightStore.raw``)."""
    fam = hp.family
    att_mix, ffn_mix = ("time_maa_", "time_maa_") if fam == "6" else ("time_mix_", "time_mix_")
    out: dict[str, npt.NDArray[np.float32]] = {}
    for i in range(hp.n_layer):
        p = f"blocks.{i}."
        if fam == "7":
            k_a = np.asarray(raw(p + "att.k_a"), dtype=np.float32).reshape(-1)
            out[p + ONE_MINUS_K_A] = np.ascontiguousarray(1.0 - k_a, dtype=np.float32)
            continue
        order = ATT_MIX_ORDER[fam] if hp.gated else ATT_MIX_ORDER[fam][:3]  # 5.1: no g
        out[p + ATT_MIX] = _stack(raw, [p + "att." + att_mix + f for f in order])
        out[p + FFN_MIX] = _stack(raw, [p + "ffn." + ffn_mix + f for f in ("k", "r")])
    return out


def detect_version(names: Mapping[str, object] | set[str]) -> str:
    """The architecture of a model file or checkpoint from the tensor names present (architecture.md
    §1.1, refined by §1.3; rwkv.cpp's converter knows v7 by ``k_k``, its loader by ``r_k``: either)."""
    if "blocks.0.att.r_k" in names or "blocks.0.att.k_k" in names:
        return "7"
    if "blocks.0.att.time_maa_x" in names:
        return "6"
    if "blocks.0.att.ln_x.weight" in names:
        gated = "blocks.0.att.gate.weight" in names
        if "blocks.0.att.time_faaaa" in names:
            return "5.2"
        return "5.1-gated" if gated else "5.1"
    return "4"


def validate(mf: ModelFile) -> Hyper:
    """Checks that the file holds a complete model of a supported version; returns its hyper-parameters.

    Raises ModelFormatError naming the file and tensor for anything missing or mis-shaped, and
    UnsupportedError for a recognised version this release cannot run yet.
    """
    version = detect_version(mf.tensors)
    if version not in VERSIONS:
        major = version.split(".")[0].split("-")[0]
        raise UnsupportedError(
            f"{mf.path}: RWKV v{major} (detected '{version}') is not supported yet; "
            f"supported: v{', v'.join(SUPPORTED_VERSIONS)}"
        )
    C, V, L = mf.n_embed, mf.n_vocab, mf.n_layer
    emb = _need(mf, "emb.weight")
    if tuple(emb.ne) != (C, V):
        raise _fail(
            mf,
            f"tensor 'emb.weight' has shape ne={tuple(emb.ne)} but the header says n_embed={C}, n_vocab={V}",
        )
    ffn_key = _need(mf, "blocks.0.ffn.key.weight")
    if len(ffn_key.ne) != 2 or ffn_key.ne[0] != C:
        raise _fail(
            mf, f"tensor 'blocks.0.ffn.key.weight' has shape ne={tuple(ffn_key.ne)}, expected ({C}, F)"
        )
    F = ffn_key.ne[1]
    # A layer beyond n_layer means the header and the tensors disagree about the depth.
    if f"blocks.{L}.ln1.weight" in mf.tensors:
        raise _fail(mf, f"header says n_layer={L} but the file has tensors of block {L}")
    if version == "4":
        _check_layers_and_foreign(mf, version, L)
        for name, (kind, ne) in _v4_tensors(C, V, F, L).items():
            _expect(mf, name, kind, ne)
        return Hyper(version=version, n_vocab=V, n_embed=C, n_layer=L, ffn_dim=F)
    # v5+: H and N as architecture.md §1.1 infers them, then every tensor of every layer.
    extra: dict[str, int] = {}
    if version == "7":
        H, N = _heads(mf, "blocks.0.att.r_k", C, 1)
    else:
        H, N = _heads(mf, "blocks.0.att.time_decay", C, 2)
    _check_layers_and_foreign(mf, version, L)
    if version == "6":
        want = _v6_tensors(mf, C, V, F, L, H, N)
        extra = {
            "mix_lora": _rank(mf, "blocks.0.att.time_maa_w2", 0),
            "decay_lora": _rank(mf, "blocks.0.att.time_decay_w1", 1),
        }
    elif version == "7":
        want = _v7_tensors(mf, C, V, F, L, H, N)
        extra = {f"{f}_lora": _rank(mf, f"blocks.0.att.{f}1", 1) for f in ("w", "a", "g")}
        if L > 1:
            extra["v_lora"] = _rank(mf, "blocks.1.att.v1", 1)
    else:
        want = _v5_tensors(version, C, V, F, L, H, N)
    for name, (kind, shapes) in want.items():
        _expect_any(mf, name, kind, shapes)
    return Hyper(
        version=version,
        n_vocab=V,
        n_embed=C,
        n_layer=L,
        ffn_dim=F,
        n_head=H,
        head_size=N,
        extra=extra,
        gn_eps=DEFAULT_GN_EPS[version],
    )
