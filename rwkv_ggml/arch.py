"""RWKV architectures: version detection and the tensors each version requires.

Everything here works on the parsed file (names, types, ggml ``ne``) before any weight is used, so a
model file that does not match its architecture fails at load with a message naming the tensor,
never later inside a kernel. Spec: shared/spec/architecture.md §1 and formats.md §6.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ModelFormatError, UnsupportedError
from .fileformat import DType, ModelFile, TensorRecord

SUPPORTED_VERSIONS = ("4",)

# Kinds of tensors: "vector"/"param" are small parameters that must stay F32 (they feed exp and
# layer norms; rwkv.cpp never stores them otherwise), "matrix" may be F32, F16 or block-quantized.
VECTOR = "vector"
MATRIX = "matrix"


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
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def state_size(self) -> int:
        """Floats in the flat recurrent state (architecture.md §7)."""
        if self.version == "4":
            return 5 * self.n_embed * self.n_layer
        return (2 + self.head_size) * self.n_embed * self.n_layer


def detect_version(names: Mapping[str, object] | set[str]) -> str:
    """The architecture of a file from the tensors present (architecture.md §1.1, refined by §1.3)."""
    if "blocks.0.att.r_k" in names:
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
        for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.time_mix_k", "att.time_mix_v",
                  "att.time_mix_r", "att.time_first", "att.time_decay", "ffn.time_mix_k", "ffn.time_mix_r"):
            want[p + n] = (VECTOR, (C,))
        for n in ("att.key.weight", "att.value.weight", "att.receptance.weight", "att.output.weight",
                  "ffn.receptance.weight"):
            want[p + n] = (MATRIX, (C, C))
        want[p + "ffn.key.weight"] = (MATRIX, (C, F))
        want[p + "ffn.value.weight"] = (MATRIX, (F, C))
    return want


def validate(mf: ModelFile) -> Hyper:
    """Checks that the file holds a complete model of a supported version; returns its hyper-parameters.

    Raises ModelFormatError naming the file and tensor for anything missing or mis-shaped, and
    UnsupportedError for a recognised version this release cannot run yet.
    """
    version = detect_version(mf.tensors)
    if version not in SUPPORTED_VERSIONS:
        major = version.split(".")[0].split("-")[0]
        raise UnsupportedError(f"{mf.path}: RWKV v{major} (detected '{version}') is not supported yet; "
                               f"supported: v{', v'.join(SUPPORTED_VERSIONS)}")
    C, V, L = mf.n_embed, mf.n_vocab, mf.n_layer
    emb = _need(mf, "emb.weight")
    if tuple(emb.ne) != (C, V):
        raise _fail(mf, f"tensor 'emb.weight' has shape ne={tuple(emb.ne)} but the header says n_embed={C}, "
                        f"n_vocab={V}")
    ffn_key = _need(mf, "blocks.0.ffn.key.weight")
    if len(ffn_key.ne) != 2 or ffn_key.ne[0] != C:
        raise _fail(mf, f"tensor 'blocks.0.ffn.key.weight' has shape ne={tuple(ffn_key.ne)}, expected ({C}, F)")
    F = ffn_key.ne[1]
    # A layer beyond n_layer means the header and the tensors disagree about the depth.
    if f"blocks.{L}.ln1.weight" in mf.tensors:
        raise _fail(mf, f"header says n_layer={L} but the file has tensors of block {L}")
    for name, (kind, ne) in _v4_tensors(C, V, F, L).items():
        _expect(mf, name, kind, ne)
    return Hyper(version=version, n_vocab=V, n_embed=C, n_layer=L, ffn_dim=F)
