"""The description of a model: version, hyper-parameters, per-layer weights, state layout, derived weights.

* :func:`validate` detects the version and checks every tensor a version requires on the parsed file
  (names, types, ggml ``ne``) before any weight is used, so a model file that does not match its
  architecture fails at load with a message naming the tensor, never later inside a kernel
  (architecture.md §1, formats.md §6). It returns the :class:`Hyper` parameters.
* :meth:`Hyper.layers` gives per-layer access to a model's weights (:class:`Layer`: ``layer.att["key.weight"]``
  for ``blocks.<i>.att.key.weight``) together with the layer's slots of the state; the state layout itself
  is :attr:`Hyper.layout` (defined in :mod:`rwkv_ggml.layout`, architecture.md §7).
* :func:`derived_weights` computes, once at load time from the stored arrays, the constants the graphs use
  besides the stored tensors (the stacked token-shift mixes, v7's ``1 - k_a``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from .errors import ModelFormatError, UnsupportedError
from .fileformat import DType, ModelFile, TensorRecord
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

# Kinds of tensors: "vector"/"param" are small parameters that must stay F32 (they feed exp and
# layer norms; rwkv.cpp never stores them otherwise), "matrix" may be F32, F16 or block-quantized.
VECTOR = "vector"
MATRIX = "matrix"

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

    @property
    def layout(self) -> StateLayout:
        """Where everything lives in the flat recurrent state (architecture.md §7)."""
        return state_layout(self.version, self.n_layer, self.n_embed, self.head_size)

    @property
    def state_size(self) -> int:
        """Floats in the flat recurrent state (architecture.md §7)."""
        return self.layout.size

    def layers(self, weights: Mapping[str, W]) -> list[Layer[W]]:
        """Per-layer access to ``weights`` (stored and derived, by full name), with each layer's state slots."""
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


def _fail(mf: ModelFile, msg: str) -> ModelFormatError:
    return ModelFormatError(f"{mf.path}: {msg}")


def _need(mf: ModelFile, name: str) -> TensorRecord:
    rec = mf.tensors.get(name)
    if rec is None:
        raise _fail(mf, f"missing tensor '{name}'")
    return rec


def _expect(mf: ModelFile, name: str, kind: str, ne: tuple[int, ...]) -> None:
    rec = _need(mf, name)
    if tuple(rec.ne) != ne:
        raise _fail(mf, f"tensor '{name}' has shape ne={tuple(rec.ne)}, expected ne={ne}")
    if kind == VECTOR and rec.dtype != DType.F32:
        raise _fail(mf, f"tensor '{name}' is {rec.dtype.name}; this parameter must be F32")


def _expect_any(mf: ModelFile, name: str, kind: str, shapes: tuple[tuple[int, ...], ...]) -> None:
    """Like _expect with several allowed shapes (v5 decay/bonus: per head or per channel)."""
    rec = _need(mf, name)
    if tuple(rec.ne) not in shapes:
        allowed = " or ".join(f"ne={ne}" for ne in shapes)
        raise _fail(mf, f"tensor '{name}' has shape ne={tuple(rec.ne)}, expected {allowed}")
    if kind == VECTOR and rec.dtype != DType.F32:
        raise _fail(mf, f"tensor '{name}' is {rec.dtype.name}; this parameter must be F32")


def _v4_tensors(C: int, V: int, F: int, L: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    want: dict[str, tuple[str, tuple[int, ...]]] = {
        "emb.weight": (MATRIX, (C, V)),
        "blocks.0.ln0.weight": (VECTOR, (C,)),
        "blocks.0.ln0.bias": (VECTOR, (C,)),
        "ln_out.weight": (VECTOR, (C,)),
        "ln_out.bias": (VECTOR, (C,)),
        "head.weight": (MATRIX, (C, V)),
    }
    for i in range(L):
        p = f"blocks.{i}."
        for n in (
            "ln1.weight",
            "ln1.bias",
            "ln2.weight",
            "ln2.bias",
            "att.time_mix_k",
            "att.time_mix_v",
            "att.time_mix_r",
            "att.time_first",
            "att.time_decay",
            "ffn.time_mix_k",
            "ffn.time_mix_r",
        ):
            want[p + n] = (VECTOR, (C,))
        for n in (
            "att.key.weight",
            "att.value.weight",
            "att.receptance.weight",
            "att.output.weight",
            "ffn.receptance.weight",
        ):
            want[p + n] = (MATRIX, (C, C))
        want[p + "ffn.key.weight"] = (MATRIX, (C, F))
        want[p + "ffn.value.weight"] = (MATRIX, (F, C))
    return want


# name -> (kind, allowed shapes) of the v5+ tensor lists
Want = dict[str, tuple[str, tuple[tuple[int, ...], ...]]]


def _common_tensors(C: int, V: int) -> Want:
    """Tensors every version has besides its blocks, as name -> (kind, allowed shapes)."""
    return {
        "emb.weight": (MATRIX, ((C, V),)),
        "blocks.0.ln0.weight": (VECTOR, ((C,),)),
        "blocks.0.ln0.bias": (VECTOR, ((C,),)),
        "ln_out.weight": (VECTOR, ((C,),)),
        "ln_out.bias": (VECTOR, ((C,),)),
        "head.weight": (MATRIX, ((C, V),)),
    }


def _rank(mf: ModelFile, name: str, dim: int) -> int:
    """A LoRA rank read off a tensor's shape (the tensor's full shape is checked afterwards)."""
    rec = _need(mf, name)
    if len(rec.ne) <= dim:
        raise _fail(
            mf, f"tensor '{name}' has shape ne={tuple(rec.ne)}; expected at least {dim + 1} dimensions"
        )
    return int(rec.ne[dim])


def _heads(mf: ModelFile, name: str, C: int, h_dim: int) -> tuple[int, int]:
    """(H, N) with H = ne[h_dim] of the given layer-0 tensor and N = C / H (architecture.md §1.1)."""
    rec = _need(mf, name)
    H = int(rec.ne[h_dim]) if len(rec.ne) > h_dim else 0
    if H < 1 or C % H != 0:
        raise _fail(
            mf,
            f"tensor '{name}' has shape ne={tuple(rec.ne)}: its head count (ne[{h_dim}]) must "
            f"divide n_embed={C}",
        )
    return H, C // H


def _v5_bonus(version: str) -> str:
    return "time_faaaa" if version == "5.2" else "time_first"


def _v5_tensors(version: str, C: int, V: int, F: int, L: int, H: int, N: int) -> Want:
    """architecture.md §4.1 / formats.md §6. Decay and bonus may be per head (1,1,H) or per channel (1,N,H) in
    every v5 family (the loader detects by features, §1.3); the bonus is time_first (= exp) without
    time_faaaa, time_faaaa (raw) for 5.2."""
    want = _common_tensors(C, V)
    gated = version != "5.1"  # Hyper.gated
    bonus = "att." + _v5_bonus(version)
    head_or_channel = ((1, 1, H), (1, N, H))
    for i in range(L):
        p = f"blocks.{i}."
        vectors = [
            "ln1.weight",
            "ln1.bias",
            "ln2.weight",
            "ln2.bias",
            "att.time_mix_k",
            "att.time_mix_v",
            "att.time_mix_r",
            "att.ln_x.weight",
            "att.ln_x.bias",
            "ffn.time_mix_k",
            "ffn.time_mix_r",
        ]
        matrices = [
            "att.key.weight",
            "att.value.weight",
            "att.receptance.weight",
            "att.output.weight",
            "ffn.receptance.weight",
        ]
        if gated:
            vectors.append("att.time_mix_g")
            matrices.append("att.gate.weight")
        for n in vectors:
            want[p + n] = (VECTOR, ((C,),))
        for n in matrices:
            want[p + n] = (MATRIX, ((C, C),))
        want[p + "att.time_decay"] = (VECTOR, head_or_channel)
        want[p + bonus] = (VECTOR, head_or_channel)
        want[p + "ffn.key.weight"] = (MATRIX, ((C, F),))
        want[p + "ffn.value.weight"] = (MATRIX, ((F, C),))
    return want


def _v6_tensors(mf: ModelFile, C: int, V: int, F: int, L: int, H: int, N: int) -> Want:
    """architecture.md §5.1 / formats.md §6; the LoRA ranks D_m, D_w are read per layer from the shapes."""
    want = _common_tensors(C, V)
    for i in range(L):
        p = f"blocks.{i}."
        d_m = _rank(mf, p + "att.time_maa_w2", 0)
        d_w = _rank(mf, p + "att.time_decay_w1", 1)
        for n in (
            "ln1.weight",
            "ln1.bias",
            "ln2.weight",
            "ln2.bias",
            "att.time_maa_x",
            "att.time_maa_w",
            "att.time_maa_k",
            "att.time_maa_v",
            "att.time_maa_r",
            "att.time_maa_g",
            "att.ln_x.weight",
            "att.ln_x.bias",
            "ffn.time_maa_k",
            "ffn.time_maa_r",
        ):
            want[p + n] = (VECTOR, ((C,),))
        for n in (
            "att.key.weight",
            "att.value.weight",
            "att.receptance.weight",
            "att.gate.weight",
            "att.output.weight",
            "ffn.receptance.weight",
        ):
            want[p + n] = (MATRIX, ((C, C),))
        want[p + "att.time_maa_w1"] = (MATRIX, ((C, 5 * d_m),))
        want[p + "att.time_maa_w2"] = (MATRIX, ((d_m, C, 5),))
        want[p + "att.time_decay"] = (VECTOR, ((1, N, H),))
        want[p + "att.time_decay_w1"] = (MATRIX, ((C, d_w),))
        want[p + "att.time_decay_w2"] = (MATRIX, ((d_w, C),))
        want[p + "att.time_faaaa"] = (VECTOR, ((1, N, H),))
        want[p + "ffn.key.weight"] = (MATRIX, ((C, F),))
        want[p + "ffn.value.weight"] = (MATRIX, ((F, C),))
    return want


def _v7_tensors(mf: ModelFile, C: int, V: int, F: int, L: int, H: int, N: int) -> Want:
    """architecture.md §6.1 / formats.md §6; layer 0 has no v0/v1/v2 (it makes v_first), ranks per layer."""
    want = _common_tensors(C, V)
    for i in range(L):
        p = f"blocks.{i}."
        for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.ln_x.weight", "att.ln_x.bias"):
            want[p + n] = (VECTOR, ((C,),))
        want[p + "att.x_rwkvag"] = (VECTOR, ((C, 1, 6),))
        loras = ("w", "a", "g", "v") if i > 0 else ("w", "a", "g")
        for n in ("att.w0", "att.a0", "att.k_k", "att.k_a", "ffn.x_k") + (("att.v0",) if i > 0 else ()):
            want[p + n] = (VECTOR, ((C, 1, 1),))
        for f in loras:
            rank = _rank(mf, p + f"att.{f}1", 1)
            want[p + f"att.{f}1"] = (MATRIX, ((C, rank),))
            want[p + f"att.{f}2"] = (MATRIX, ((rank, C),))
        want[p + "att.r_k"] = (VECTOR, ((N, H),))
        for n in ("att.key.weight", "att.value.weight", "att.receptance.weight", "att.output.weight"):
            want[p + n] = (MATRIX, ((C, C),))
        want[p + "ffn.key.weight"] = (MATRIX, ((C, F),))
        want[p + "ffn.value.weight"] = (MATRIX, ((F, C),))
    return want


# Per-layer tensor names (after "blocks.<i>.") of each version, for telling a foreign tensor (one of
# another RWKV version: the file mixes architectures) from an unknown extra one (ignored, as rwkv.cpp does).
_NORMS = ("ln0.weight", "ln0.bias", "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")
_V4_FFN = ("ffn.time_mix_k", "ffn.time_mix_r", "ffn.key.weight", "ffn.value.weight", "ffn.receptance.weight")
_ATT_KVRO = ("att.key.weight", "att.value.weight", "att.receptance.weight", "att.output.weight")
_LAYER_NAMES: dict[str, frozenset[str]] = {
    "4": frozenset(
        _NORMS
        + _V4_FFN
        + _ATT_KVRO
        + ("att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "att.time_first", "att.time_decay")
    ),
    "5": frozenset(
        _NORMS
        + _V4_FFN
        + _ATT_KVRO
        + (
            "att.time_mix_k",
            "att.time_mix_v",
            "att.time_mix_r",
            "att.time_mix_g",
            "att.gate.weight",
            "att.time_first",
            "att.time_faaaa",
            "att.time_decay",
            "att.ln_x.weight",
            "att.ln_x.bias",
        )
    ),
    "6": frozenset(
        _NORMS
        + _ATT_KVRO
        + (
            "att.time_maa_x",
            "att.time_maa_w",
            "att.time_maa_k",
            "att.time_maa_v",
            "att.time_maa_r",
            "att.time_maa_g",
            "att.time_maa_w1",
            "att.time_maa_w2",
            "att.time_decay",
            "att.time_decay_w1",
            "att.time_decay_w2",
            "att.time_faaaa",
            "att.gate.weight",
            "att.ln_x.weight",
            "att.ln_x.bias",
            "ffn.time_maa_k",
            "ffn.time_maa_r",
            "ffn.key.weight",
            "ffn.value.weight",
            "ffn.receptance.weight",
        )
    ),
    "7": frozenset(
        _NORMS
        + _ATT_KVRO
        + (
            "att.x_rwkvag",
            "att.w0",
            "att.w1",
            "att.w2",
            "att.a0",
            "att.a1",
            "att.a2",
            "att.v0",
            "att.v1",
            "att.v2",
            "att.g1",
            "att.g2",
            "att.k_k",
            "att.k_a",
            "att.r_k",
            "att.ln_x.weight",
            "att.ln_x.bias",
            "ffn.x_k",
            "ffn.key.weight",
            "ffn.value.weight",
        )
    ),
}


def _check_layers_and_foreign(mf: ModelFile, version: str, L: int) -> None:
    """Every ``blocks.<i>.`` tensor must be of a layer below n_layer and not belong to another version."""
    own = _LAYER_NAMES[family(version)]
    foreign: dict[str, str] = {}
    for other, names in _LAYER_NAMES.items():
        for n in names - own:
            foreign[n] = f"{foreign[n]}/v{other}" if n in foreign else other
    present: set[int] = set()
    for name in mf.tensors:
        if not name.startswith("blocks."):
            continue
        parts = name.split(".", 2)
        # ASCII digits only: str.isdigit() also accepts superscripts, which int() refuses
        if len(parts) < 3 or not (parts[1].isascii() and parts[1].isdigit()):
            continue
        if len(parts[1]) > 9 or int(parts[1]) >= L:
            raise _fail(mf, f"header says n_layer={L} but the file has tensor '{name[:80]}'")
        present.add(int(parts[1]))
        if parts[2] in foreign:
            raise _fail(
                mf,
                f"tensor '{name}' belongs to RWKV v{foreign[parts[2]]}, but the file was "
                f"detected as v{version}: it mixes architectures",
            )
    if len(present) < L:
        # Refused before the per-layer tensor lists are built: a header may claim 65535 layers.
        missing = min(set(range(len(present) + 1)) - present)
        raise _fail(
            mf,
            f"missing tensor 'blocks.{missing}.ln1.weight' (the header says n_layer={L}, the file "
            f"has tensors of {len(present)} layers)",
        )


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
