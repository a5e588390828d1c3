"""What each RWKV version needs and how each tensor is transformed on the way to a model file.

Used by :mod:`rwkv_ggml.conversion`, which plans and streams the conversion; everything here is
decided from tensor names and shapes (architecture.md "rwkv.cpp conversion" columns, formats.md §6).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .arch import detect_version
from .errors import ModelFormatError

# v7's six token-shift mix vectors, in the order they are stacked into x_rwkvag (architecture.md §6.1).
_V7_MIX_ORDER = ("r", "w", "k", "v", "a", "g")

BLOCK_NAME = re.compile(r"blocks\.(\d+)\.(.+)")


F32 = np.ndarray  # float32 arrays in PyTorch (row-major) shape


@dataclass(frozen=True)
class Step:
    name: str  # output tensor name
    sources: tuple[str, ...]  # input tensor names, in the order ``transform`` takes them
    transform: Callable[[list[F32]], F32]


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def detect_checkpoint_version(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Version by features (arch.detect_version, refined by shape), refusing a v5 checkpoint with
    neither bonus tensor.

    arch.detect_version calls every v5 checkpoint with ``time_faaaa`` "5.2", but the official
    code tells 5.2 by its per-channel decay (architecture.md §1.2, §1.3): an official 5.1 file
    whose per-head bonus is already named ``time_faaaa`` is 5.1 (gated), whatever its bonus is called.
    """
    version = detect_version(shapes)
    if version == "5.2" and not any(
        _per_channel(shapes[name]) for name in _V5_DECAY_AND_BONUS if name in shapes
    ):
        version = "5.1-gated" if "blocks.0.att.gate.weight" in shapes else "5.1"
    elif version.startswith("5.1") and "blocks.0.att.time_first" not in shapes:
        raise ModelFormatError(
            "RWKV-5 checkpoint (has blocks.0.att.ln_x.weight) without blocks.0.att.time_first or time_faaaa"
        )
    return version


_V5_DECAY_AND_BONUS = ("blocks.0.att.time_decay", "blocks.0.att.time_faaaa")


def _per_channel(shape: tuple[int, ...]) -> bool:
    """A v5 decay/bonus of shape (H, N) (per channel) rather than (H,) (per head), ignoring 1s."""
    return len([d for d in shape if d != 1]) >= 2


def bonus_name(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The v5 bonus as the checkpoint names it (official 5.1 files use either name)."""
    return "att.time_faaaa" if "blocks.0.att.time_faaaa" in shapes else "att.time_first"


def required_tensors(version: str, layer: int, bonus: str) -> list[str]:
    """Per-layer tensors a version needs (formats.md §6, in checkpoint naming); ``bonus`` is the
    v5 bonus's name in this checkpoint."""
    common = ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "ffn.key.weight", "ffn.value.weight"]
    linear = ["att.key.weight", "att.value.weight", "att.receptance.weight", "att.output.weight"]
    if version == "4":
        att = ["att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "att.time_first", "att.time_decay"]
        ffn = ["ffn.time_mix_k", "ffn.time_mix_r", "ffn.receptance.weight"]
    elif version.startswith("5"):
        att = [
            "att.time_mix_k",
            "att.time_mix_v",
            "att.time_mix_r",
            "att.time_decay",
            "att.ln_x.weight",
            "att.ln_x.bias",
        ]
        att.append(bonus)
        if version != "5.1":
            att += ["att.time_mix_g", "att.gate.weight"]
        ffn = ["ffn.time_mix_k", "ffn.time_mix_r", "ffn.receptance.weight"]
    elif version == "6":
        att = [f"att.time_maa_{c}" for c in "xwkvrg"] + [
            "att.time_maa_w1",
            "att.time_maa_w2",
            "att.time_decay",
            "att.time_decay_w1",
            "att.time_decay_w2",
            "att.time_faaaa",
            "att.gate.weight",
            "att.ln_x.weight",
            "att.ln_x.bias",
        ]
        ffn = ["ffn.time_maa_k", "ffn.time_maa_r", "ffn.receptance.weight"]
    else:
        att = [f"att.x_{c}" for c in _V7_MIX_ORDER] + [
            "att.w0",
            "att.w1",
            "att.w2",
            "att.a0",
            "att.a1",
            "att.a2",
            "att.g1",
            "att.g2",
            "att.k_k",
            "att.k_a",
            "att.r_k",
            "att.ln_x.weight",
            "att.ln_x.bias",
        ]
        if layer > 0:
            att += ["att.v0", "att.v1", "att.v2"]
        ffn = ["ffn.x_k"]
    return [f"blocks.{layer}.{suffix}" for suffix in common + linear + att + ffn]


def head_count(version: str, shapes: Mapping[str, tuple[int, ...]], n_embed: int) -> int:
    """H from the tensors that carry it (architecture.md §1.2): v5 time_decay, v6 time_faaaa, v7 r_k."""
    if version == "4":
        return 0
    if version == "7":
        source = "blocks.0.att.r_k"
    elif version == "6":
        source = "blocks.0.att.time_faaaa"
    else:
        decay = shapes["blocks.0.att.time_decay"]
        squeezed = [d for d in decay if d != 1]
        # per head: (H,); per channel: (H, N). A squeezed 1-D decay is per head unless a 2-D
        # bonus says otherwise.
        source = "blocks.0.att.time_decay" if len(squeezed) >= 2 else ""
        if not source:
            bonus = shapes.get("blocks.0.att.time_faaaa", ())
            if len([d for d in bonus if d != 1]) >= 2:
                source = "blocks.0.att.time_faaaa"
            else:
                heads = squeezed[0] if squeezed else 1
                if heads < 1 or n_embed % heads != 0:  # a zero-size decay has no heads at all
                    raise ModelFormatError(
                        f"tensor 'blocks.0.att.time_decay' has shape {list(decay)}: {heads} heads, "
                        f"which do not divide n_embed {n_embed}"
                    )
                return heads
    shape = shapes[source]
    if len(shape) < 2 or shape[0] < 1 or numel(shape) != n_embed:
        raise ModelFormatError(
            f"tensor '{source}' has shape {list(shape)}, expected (n_head, head_size) with "
            f"n_head * head_size = n_embed = {n_embed}"
        )
    return shape[0]


# ---------------------------------------------------------------------------------------------
# Per-tensor transforms (architecture.md "rwkv.cpp conversion" columns), float32 in and out


def _squeeze(a: F32) -> F32:
    """PyTorch ``squeeze()``: drop every size-1 dimension (rwkv.cpp does it to all ``.time_`` tensors)."""
    shape = [d for d in a.shape if d != 1] or [1]
    return a.reshape(shape)


def _transpose2(a: F32) -> F32:
    return np.ascontiguousarray(a.T)


class Rules:
    """Chooses the transform of each tensor for one detected version."""

    def __init__(self, version: str, n_embed: int, n_head: int, order: Sequence[str]) -> None:
        self.version = version
        self.C = n_embed
        self.H = n_head
        self.position = {name: i for i, name in enumerate(order)}

    def step(self, name: str, shapes: Mapping[str, tuple[int, ...]]) -> Step | None:
        shape = shapes[name]
        m = BLOCK_NAME.fullmatch(name)
        suffix = m.group(2) if m else ""
        one = (name,)
        v = self.version

        def need_ndim(n: int) -> None:
            if len(shape) != n:
                raise ModelFormatError(f"tensor '{name}' has shape {list(shape)}, expected {n} dimensions")

        if v == "7" and suffix.startswith("att.x_") and suffix[len("att.x_") :] in _V7_MIX_ORDER:
            # Six (1,1,C) vectors -> one (6,1,C) tensor, emitted where the first of them appears.
            prefix = name[: -len(suffix)]
            sources = tuple(f"{prefix}att.x_{c}" for c in _V7_MIX_ORDER)
            first = min(sources, key=self.position.__getitem__)
            if name != first:
                return None
            for s in sources:
                if numel(shapes[s]) != self.C:
                    raise ModelFormatError(
                        f"tensor '{s}' has shape {list(shapes[s])}, expected {self.C} elements"
                    )
            return Step(prefix + "att.x_rwkvag", sources, self._stack_mix)
        if v == "7" and suffix in ("att.w0", "att.a0", "att.v0", "att.k_k", "att.k_a", "ffn.x_k"):
            self._need_numel(name, shape, self.C)
            return Step(name, one, lambda xs: xs[0].reshape(1, 1, -1))
        if v == "7" and re.fullmatch(r"att\.[wavg][12]", suffix):
            need_ndim(2)
            return Step(name, one, lambda xs: _transpose2(xs[0]))
        if v == "6" and suffix in ("att.time_maa_w1", "att.time_decay_w1", "att.time_decay_w2"):
            need_ndim(2)
            return Step(name, one, lambda xs: _transpose2(xs[0]))
        if v == "6" and suffix == "att.time_maa_w2":
            need_ndim(3)
            return Step(name, one, lambda xs: np.ascontiguousarray(xs[0].transpose(0, 2, 1)))
        if v == "6" and suffix in ("att.time_decay", "att.time_faaaa"):
            self._need_numel(name, shape, self.C)
            return Step(name, one, self._per_head)  # no exp for v6 (decay is data dependent)
        if v.startswith("5") and suffix == "att.time_decay":
            return Step(name, one, lambda xs: self._per_head(xs, lambda a: np.exp(-np.exp(a))))
        if v.startswith("5") and suffix == "att.time_first":
            return Step(name, one, lambda xs: self._per_head(xs, np.exp))
        if v == "5.2" and suffix == "att.time_faaaa":
            return Step(name, one, self._per_head)
        if v.startswith("5") and suffix == "att.time_faaaa":
            # An official 5.1 per-head bonus under the 5.2 name. Its value is the bonus itself, which
            # is what a model file's time_first holds (after exp), so it is written as time_first:
            # with the gate that tells every reader "official 5.1", as for its time_first sibling.
            prefix = name[: -len(suffix)]
            if prefix + "att.time_first" in shapes:
                raise ModelFormatError(f"layer '{prefix[:-1]}' has both att.time_first and att.time_faaaa")
            return Step(prefix + "att.time_first", one, self._per_head)
        if v == "4" and suffix == "att.time_decay":
            return Step(name, one, lambda xs: -np.exp(_squeeze(xs[0])))
        if ".time_" in name:
            return Step(name, one, lambda xs: _squeeze(xs[0]))
        return Step(name, one, lambda xs: xs[0])

    def _need_numel(self, name: str, shape: tuple[int, ...], n: int) -> None:
        if numel(shape) != n:
            raise ModelFormatError(f"tensor '{name}' has shape {list(shape)}, expected {n} elements")

    def _per_head(self, xs: list[F32], fn: Callable[[F32], F32] | None = None) -> F32:
        """(H,) or (H, N) decay/bonus -> (H, 1, 1) or (H, N, 1), after ``fn`` (element-wise)."""
        a = xs[0] if fn is None else fn(xs[0])
        if a.size % self.H != 0:
            raise ModelFormatError(
                f"a decay/bonus tensor of shape {list(xs[0].shape)} does not split into {self.H} heads"
            )
        return a.reshape(self.H, a.size // self.H, 1)

    def _stack_mix(self, xs: list[F32]) -> F32:
        return np.stack([x.reshape(1, self.C) for x in xs])  # (6, 1, C)
