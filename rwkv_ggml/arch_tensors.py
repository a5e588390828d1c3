"""The tensors each RWKV version requires, and the checks of a parsed model file against them.

:func:`rwkv_ggml.arch.validate` runs these on the file's records (names, types, ggml ``ne``) before any
weight is used (architecture.md §1, formats.md §6): a file that does not match its architecture fails at
load with a message naming the tensor.
"""

from __future__ import annotations

from .errors import ModelFormatError
from .fileformat import DType, ModelFile, TensorRecord
from .layout import family

# Kinds of tensors: "vector"/"param" are small parameters that must stay F32 (they feed exp and
# layer norms; rwkv.cpp never stores them otherwise), "matrix" may be F32, F16 or block-quantized.
VECTOR = "vector"
MATRIX = "matrix"


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
LAYER_NAMES: dict[str, frozenset[str]] = {
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
    own = LAYER_NAMES[family(version)]
    foreign: dict[str, str] = {}
    for other, names in LAYER_NAMES.items():
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
