"""Convert an RWKV checkpoint (``.pth`` / safetensors, any known key layout) to an rwkv.cpp ``.bin``.

The output is exactly what rwkv.cpp's own converter writes (spec: architecture.md §3.1, §4.1,
§5.1, §6.1 "rwkv.cpp conversion" columns; formats.md §4.1), with two deliberate differences:

* the version is detected from *features*, not names (architecture.md §1.3), so the official
  RWKV-5.1 family (gate + per-head decay) converts too. Its file keeps ``time_first`` (with
  ``exp`` applied, shape (H,1,1)) next to ``gate.weight``; that combination tells a reader it
  is neither rwkv.cpp's 5.1 (no gate) nor 5.2 (``time_faaaa``);
* v7's ``x_rwkvag`` is concatenated explicitly in r, w, k, v, a, g order instead of in
  whatever order the checkpoint happens to list the six vectors.

:func:`merge_lora` does the same for a base checkpoint plus an RWKV LoRA checkpoint, folding
each ``lora_A``/``lora_B`` pair into its weight as it streams past.

Tensors are read, transformed and written one at a time (the checkpoint is memory-mapped by
:mod:`rwkv_ggml.checkpoint`), so converting a 14B model does not need 28 GB of RAM.
Quantized outputs are made from the FP16/FP32 file by the separate quantize step.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arch import detect_version
from .checkpoint import load_checkpoint
from .errors import ModelFormatError, UnsupportedError
from .fileformat import DType, write_model_file

__all__ = [
    "ConversionPlan",
    "convert",
    "convert_state_dict",
    "lora_merged",
    "merge_lora",
    "plan_conversion",
    "stored_as_fp16",
]

# formats.md §4.1: in an FP16 file a tensor is FP16 iff it has >= 2 dims and its name contains none of these.
_FP32_NAME_PARTS = (".time_", ".k_k", ".k_a", ".r_k", ".x_rwkvag", ".x_k", ".w0", ".a0", ".v0")

# v7's six token-shift mix vectors, in the order they are stacked into x_rwkvag (architecture.md §6.1).
_V7_MIX_ORDER = ("r", "w", "k", "v", "a", "g")

_BLOCK_NAME = re.compile(r"blocks\.(\d+)\.(.+)")

F32 = np.ndarray  # float32 arrays in PyTorch (row-major) shape


def stored_as_fp16(name: str, ndim: int) -> bool:
    """formats.md §4.1: whether an FP16 file stores this (already preprocessed) tensor as FP16."""
    return ndim >= 2 and not any(part in name for part in _FP32_NAME_PARTS)


# ---------------------------------------------------------------------------------------------
# The plan: what to write, from which inputs, computed from names and shapes only


@dataclass(frozen=True)
class _Step:
    name: str  # output tensor name
    sources: tuple[str, ...]  # input tensor names, in the order ``transform`` takes them
    transform: Callable[[list[F32]], F32]


@dataclass(frozen=True)
class ConversionPlan:
    """What :func:`convert_state_dict` will write, decided from tensor names and shapes alone.

    ``version`` uses the reference models' names: "4", "5.1" (rwkv.cpp 5.1 = official 5.0: no
    gate, per-head decay), "5.1-gated" (official 5.1), "5.2", "6", "7". ``n_head`` is 0 for v4.
    """

    version: str
    n_vocab: int
    n_embed: int
    n_layer: int
    n_head: int
    steps: tuple[_Step, ...]
    skipped: tuple[str, ...]  # input tensors that are not part of an RWKV model (not written)

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]


def _shape_of(value: Any) -> tuple[int, ...]:
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = np.asarray(value).shape
    return tuple(int(d) for d in shape)


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _detect_version(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Version by features (arch.detect_version), refusing a v5 checkpoint with neither bonus tensor."""
    version = detect_version(shapes)
    if version.startswith("5.1") and "blocks.0.att.time_first" not in shapes:
        raise ModelFormatError(
            "RWKV-5 checkpoint (has blocks.0.att.ln_x.weight) without blocks.0.att.time_first or time_faaaa"
        )
    return version


def _required(version: str, layer: int) -> list[str]:
    """Per-layer tensors a version needs (formats.md §6, in checkpoint naming)."""
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
        att.append("att.time_faaaa" if version == "5.2" else "att.time_first")
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


def plan_conversion(tensors: Mapping[str, Any]) -> ConversionPlan:
    """Check a state dict (official names) and decide the output tensors, reading no data.

    Raises ModelFormatError naming the first missing or mis-shaped tensor.
    """
    shapes = {name: _shape_of(value) for name, value in tensors.items()}
    if "emb.weight" not in shapes:
        hint = ""
        if any(n.startswith(("rwkv.", "model.")) for n in shapes):
            hint = " (unrecognised key layout; pass the checkpoint through load_checkpoint first)"
        raise ModelFormatError(f"not an RWKV checkpoint: no 'emb.weight' tensor{hint}")
    emb = shapes["emb.weight"]
    if len(emb) != 2 or emb[0] < 1 or emb[1] < 1:
        raise ModelFormatError(f"tensor 'emb.weight' has shape {list(emb)}, expected (n_vocab, n_embed)")
    n_vocab, n_embed = emb
    for name, want in (
        ("head.weight", (n_vocab, n_embed)),
        ("ln_out.weight", (n_embed,)),
        ("ln_out.bias", (n_embed,)),
    ):
        if name not in shapes:
            raise ModelFormatError(f"checkpoint lacks the tensor '{name}'")
        if _numel(shapes[name]) != _numel(want) or (len(want) == 2 and shapes[name] != want):
            raise ModelFormatError(f"tensor '{name}' has shape {list(shapes[name])}, expected {list(want)}")

    layers = sorted({int(m.group(1)) for m in map(_BLOCK_NAME.fullmatch, shapes) if m})
    if not layers:
        raise ModelFormatError("checkpoint has no 'blocks.N.*' tensors")
    n_layer = layers[-1] + 1
    if layers != list(range(n_layer)):
        missing = sorted(set(range(n_layer)) - set(layers))
        raise ModelFormatError(f"checkpoint has blocks up to {n_layer - 1} but none for layer(s) {missing}")

    version = _detect_version(shapes)
    needed = ["blocks.0.ln0.weight", "blocks.0.ln0.bias"]
    for layer in range(n_layer):
        needed += _required(version, layer)
    for name in needed:
        if name not in shapes:
            raise ModelFormatError(f"RWKV v{version} checkpoint lacks the tensor '{name}'")

    n_head = _head_count(version, shapes, n_embed)
    rules = _Rules(version, n_embed, n_head, list(shapes))
    steps: list[_Step] = []
    skipped: list[str] = []
    for name in shapes:
        if not _is_model_tensor(name):
            skipped.append(name)
            continue
        step = rules.step(name, shapes)
        if step is not None:
            steps.append(step)
    return ConversionPlan(version, n_vocab, n_embed, n_layer, n_head, tuple(steps), tuple(skipped))


def _is_model_tensor(name: str) -> bool:
    return (
        name in ("emb.weight", "head.weight")
        or name.startswith("ln_out.")
        or bool(_BLOCK_NAME.fullmatch(name))
    )


def _head_count(version: str, shapes: Mapping[str, tuple[int, ...]], n_embed: int) -> int:
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
                if n_embed % heads != 0:
                    raise ModelFormatError(
                        f"tensor 'blocks.0.att.time_decay' has {heads} heads, "
                        f"which do not divide n_embed {n_embed}"
                    )
                return heads
    shape = shapes[source]
    if len(shape) < 2 or shape[0] < 1 or _numel(shape) != n_embed:
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


class _Rules:
    """Chooses the transform of each tensor for one detected version."""

    def __init__(self, version: str, n_embed: int, n_head: int, order: Sequence[str]) -> None:
        self.version = version
        self.C = n_embed
        self.H = n_head
        self.position = {name: i for i, name in enumerate(order)}

    def step(self, name: str, shapes: Mapping[str, tuple[int, ...]]) -> _Step | None:
        shape = shapes[name]
        m = _BLOCK_NAME.fullmatch(name)
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
                if _numel(shapes[s]) != self.C:
                    raise ModelFormatError(
                        f"tensor '{s}' has shape {list(shapes[s])}, expected {self.C} elements"
                    )
            return _Step(prefix + "att.x_rwkvag", sources, self._stack_mix)
        if v == "7" and suffix in ("att.w0", "att.a0", "att.v0", "att.k_k", "att.k_a", "ffn.x_k"):
            self._need_numel(name, shape, self.C)
            return _Step(name, one, lambda xs: xs[0].reshape(1, 1, -1))
        if v == "7" and re.fullmatch(r"att\.[wavg][12]", suffix):
            need_ndim(2)
            return _Step(name, one, lambda xs: _transpose2(xs[0]))
        if v == "6" and suffix in ("att.time_maa_w1", "att.time_decay_w1", "att.time_decay_w2"):
            need_ndim(2)
            return _Step(name, one, lambda xs: _transpose2(xs[0]))
        if v == "6" and suffix == "att.time_maa_w2":
            need_ndim(3)
            return _Step(name, one, lambda xs: np.ascontiguousarray(xs[0].transpose(0, 2, 1)))
        if v == "6" and suffix in ("att.time_decay", "att.time_faaaa"):
            self._need_numel(name, shape, self.C)
            return _Step(name, one, self._per_head)  # no exp for v6 (decay is data dependent)
        if v.startswith("5") and suffix == "att.time_decay":
            return _Step(name, one, lambda xs: self._per_head(xs, lambda a: np.exp(-np.exp(a))))
        if v.startswith("5") and suffix == "att.time_first":
            return _Step(name, one, lambda xs: self._per_head(xs, np.exp))
        if v.startswith("5") and suffix == "att.time_faaaa":
            return _Step(name, one, self._per_head)
        if v == "4" and suffix == "att.time_decay":
            return _Step(name, one, lambda xs: -np.exp(_squeeze(xs[0])))
        if ".time_" in name:
            return _Step(name, one, lambda xs: _squeeze(xs[0]))
        return _Step(name, one, lambda xs: xs[0])

    def _need_numel(self, name: str, shape: tuple[int, ...], n: int) -> None:
        if _numel(shape) != n:
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


# ---------------------------------------------------------------------------------------------
# Execution


def _load_f32(value: Any, name: str) -> F32:
    """Any array-like (LazyTensor, numpy, torch) -> float32 numpy array (a copy only when needed)."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        if hasattr(value, "detach"):  # a torch tensor: no autograd, and numpy has no bfloat16
            value = value.detach()
            if str(getattr(value, "dtype", "")) == "torch.bfloat16":
                value = value.float()
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ModelFormatError(f"tensor '{name}' has non-numeric dtype {array.dtype}")
    return np.asarray(array, dtype=np.float32)


def _run_step(step: _Step, tensors: Mapping[str, Any]) -> F32:
    inputs = [_load_f32(tensors[s], s) for s in step.sources]
    try:
        with np.errstate(over="ignore"):  # exp of an absurd decay is +-inf, as in PyTorch
            out = step.transform(inputs)
    except ValueError as e:  # a reshape that does not fit
        raise ModelFormatError(
            f"tensor '{step.name}': cannot preprocess input of shape {[list(x.shape) for x in inputs]} ({e})"
        ) from e
    if not 1 <= out.ndim <= 3:
        raise ModelFormatError(
            f"tensor '{step.name}' has {out.ndim} dimensions after preprocessing "
            f"(shape {list(out.shape)}); a model file allows 1 to 3"
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def convert_state_dict(tensors: Mapping[str, Any], dtype: str = "f32") -> Iterator[tuple[str, np.ndarray]]:
    """Yield the rwkv.cpp-layout tensors of a state dict (official names), one at a time.

    ``tensors`` maps official names to anything array-like with a ``shape`` (a
    :class:`~rwkv_ggml.checkpoint.LazyTensor`, a numpy array, a torch tensor). Each yielded
    array is float32 (PyTorch shape, preprocessed per architecture.md), or float16 when
    ``dtype`` is "f16" and formats.md §4.1 stores that tensor as FP16. Everything is computed
    in float32 first, then rounded. Raises ModelFormatError for a malformed state dict before
    yielding anything, or when a tensor turns out to be unfit (naming it).
    """
    half = _parse_dtype(dtype) == DType.F16
    plan = plan_conversion(tensors)
    return _execute(plan, tensors, half)


def _execute(
    plan: ConversionPlan, tensors: Mapping[str, Any], half: bool
) -> Iterator[tuple[str, np.ndarray]]:
    for step in plan.steps:
        out = _run_step(step, tensors)
        if half and stored_as_fp16(step.name, out.ndim):
            with np.errstate(over="ignore"):
                narrow = out.astype(np.float16)
            if not np.all(np.isfinite(narrow)) and np.all(np.isfinite(out)):
                worst = float(np.max(np.abs(out)))
                raise ModelFormatError(
                    f"tensor '{step.name}' has values up to {worst:g}, beyond the FP16 range "
                    "(65504); convert with dtype='f32'"
                )
            out = narrow
        yield step.name, out


def _parse_dtype(dtype: str) -> DType:
    try:
        parsed = DType.from_name(dtype)
    except ValueError:
        raise ValueError(f"unknown output dtype {dtype!r}; use 'f32' or 'f16'") from None
    if parsed.is_quantized:
        raise UnsupportedError(
            f"convert writes only f32 or f16 files; quantize the f16 (or f32) result to {parsed.name} "
            "with the quantize step (rwkv-ggml quantize)"
        )
    return parsed


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    dtype: str = "f16",
    *,
    progress: bool | None = None,
) -> None:
    """Convert checkpoint ``src`` (.pth, .safetensors, sharded index or folder) to rwkv.cpp file ``dst``.

    ``dtype``: "f32" or "f16" (formats.md §4.1 decides per tensor which ones become FP16).
    ``progress``: show a tqdm bar on stderr; ``None`` = only when stderr is a terminal.
    ``dst`` is written through a temporary file and renamed, so it is either complete or
    untouched. Errors: ModelIOError (cannot read/write), ModelFormatError (bad or non-RWKV
    checkpoint), UnsupportedError (quantized dtype, legacy PyTorch file), ValueError (unknown dtype).
    """
    data_type = _parse_dtype(dtype)
    src_path = Path(src)
    with load_checkpoint(src_path) as ckpt:
        _write(ckpt, dst, data_type, progress, f"converting {src_path.name}")


def merge_lora(
    base: str | os.PathLike[str],
    lora: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    alpha: float,
    dtype: str = "f16",
    *,
    progress: bool | None = None,
) -> None:
    """Merge a LoRA checkpoint into a base checkpoint and write the result as rwkv.cpp file ``dst``.

    The LoRA file uses the widely used RWKV LoRA layout (see :func:`lora_merged`). Both inputs
    are read like :func:`convert` reads one; nothing but the output is written.
    """
    data_type = _parse_dtype(dtype)
    with load_checkpoint(base) as base_ckpt, load_checkpoint(lora) as lora_ckpt:
        merged = lora_merged(base_ckpt, lora_ckpt, alpha)
        _write(merged, dst, data_type, progress, f"merging {Path(lora).name}")


def _write(
    tensors: Mapping[str, Any],
    dst: str | os.PathLike[str],
    data_type: DType,
    progress: bool | None,
    desc: str,
) -> None:
    plan = plan_conversion(tensors)
    items: Iterator[tuple[str, np.ndarray]] = _execute(plan, tensors, data_type == DType.F16)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(plan.steps), unit="tensor", desc=desc, file=sys.stderr)
        items = _counting(items, bar)
    try:
        write_model_file(
            dst,
            n_vocab=plan.n_vocab,
            n_embed=plan.n_embed,
            n_layer=plan.n_layer,
            data_type=data_type,
            tensors=items,
        )
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------------------------
# LoRA


class _LoraMergedTensor:
    """``W + (B @ A) * (alpha / r)`` computed in float32 when read, so merging streams too."""

    def __init__(self, weight: Any, lora_a: Any, lora_b: Any, scale: float, name: str) -> None:
        self.shape = _shape_of(weight)
        self._parts = (weight, lora_a, lora_b)
        self._scale = scale
        self._name = name

    def numpy(self) -> np.ndarray:
        weight, lora_a, lora_b = (_load_f32(x, self._name) for x in self._parts)
        delta = lora_b @ lora_a
        delta *= np.float32(self._scale)
        return weight + delta


def lora_merged(base: Mapping[str, Any], lora: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """The state dict ``base`` with LoRA checkpoint ``lora`` merged in, lazily (nothing is read here).

    Layout (RWKV-LM-LoRA and derivatives): every tensor of the LoRA file replaces or adds to the
    base tensor of that name (LoRA trainings also save the other parameters they trained); then
    each pair ``P.lora_A`` (r, in) / ``P.lora_B`` (out, r) is folded into ``P.weight`` (out, in)
    as ``W + B @ A * alpha / r`` and dropped. The arithmetic is float32. Raises ModelFormatError
    for an unpaired or mis-shaped LoRA tensor, naming it.
    """
    alpha = float(alpha)
    if not np.isfinite(alpha):
        raise ValueError(f"LoRA alpha must be a finite number, got {alpha}")
    combined: dict[str, Any] = dict(base)
    combined.update(lora)
    merged: dict[str, Any] = {}
    for name, value in combined.items():
        if name.endswith((".lora_A", ".lora_B")):
            prefix = name[: -len(".lora_A")]
            partner = prefix + (".lora_B" if name.endswith(".lora_A") else ".lora_A")
            if partner not in combined:
                raise ModelFormatError(f"LoRA tensor '{name}' has no partner '{partner}'")
            if prefix + ".weight" not in combined:
                raise ModelFormatError(
                    f"LoRA tensor '{name}' belongs to '{prefix}.weight', which the model lacks"
                )
            continue
        a_name, b_name = name[: -len(".weight")] + ".lora_A", name[: -len(".weight")] + ".lora_B"
        if name.endswith(".weight") and a_name in combined:
            if b_name not in combined:
                raise ModelFormatError(f"LoRA tensor '{a_name}' has no partner '{b_name}'")
            w_shape, a_shape, b_shape = (_shape_of(combined[n]) for n in (name, a_name, b_name))
            if (
                len(w_shape) != 2
                or len(a_shape) != 2
                or len(b_shape) != 2
                or a_shape[0] != b_shape[1]
                or (b_shape[0], a_shape[1]) != w_shape
                or a_shape[0] < 1
            ):
                raise ModelFormatError(
                    f"LoRA pair for '{name}' {list(w_shape)} has lora_A {list(a_shape)} and lora_B "
                    f"{list(b_shape)}; expected (r, {w_shape[-1] if w_shape else '?'}) and "
                    f"({w_shape[0] if w_shape else '?'}, r)"
                )
            scale = alpha / a_shape[0]
            merged[name] = _LoraMergedTensor(value, combined[a_name], combined[b_name], scale, name)
        else:
            merged[name] = value
    return merged


def _counting(items: Iterator[tuple[str, np.ndarray]], bar: Any) -> Iterator[tuple[str, np.ndarray]]:
    for item in items:
        yield item
        bar.update(1)
