"""Convert an RWKV checkpoint (``.pth`` / safetensors, any known key layout) to an rwkv.cpp ``.bin``.

The output is exactly what rwkv.cpp's own converter writes (spec: architecture.md §3.1, §4.1,
§5.1, §6.1 "rwkv.cpp conversion" columns; formats.md §4.1), with two deliberate differences:

* the version is detected from *features*, not names (architecture.md §1.3), so the official
  RWKV-5.1 family (gate + per-head decay) converts too. Its file keeps ``time_first`` (with
  ``exp`` applied, shape (H,1,1)) next to ``gate.weight``; that combination tells a reader it
  is neither rwkv.cpp's 5.1 (no gate) nor 5.2 (``time_faaaa``). Official 5.1 files that store
  the per-head bonus itself as a 1-D ``time_faaaa`` are written the same way (as ``time_first``,
  value unchanged), so they too read back as 5.1 rather than 5.2;
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
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._conversion_rules import (
    BLOCK_NAME,
    F32,
    Rules,
    Step,
    bonus_name,
    detect_checkpoint_version,
    head_count,
    numel,
    required_tensors,
)
from .checkpoint import load_checkpoint
from .checkpoint.layouts import bounded_layer_index
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


def stored_as_fp16(name: str, ndim: int) -> bool:
    """formats.md §4.1: whether an FP16 file stores this (already preprocessed) tensor as FP16."""
    return ndim >= 2 and not any(part in name for part in _FP32_NAME_PARTS)


# ---------------------------------------------------------------------------------------------
# The plan: what to write, from which inputs, computed from names and shapes only


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
    steps: tuple[Step, ...]
    skipped: tuple[str, ...]  # input tensors that are not part of an RWKV model (not written)

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]


def _shape_of(value: Any) -> tuple[int, ...]:
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = np.asarray(value).shape
    return tuple(int(d) for d in shape)


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
        if numel(shapes[name]) != numel(want) or (len(want) == 2 and shapes[name] != want):
            raise ModelFormatError(f"tensor '{name}' has shape {list(shapes[name])}, expected {list(want)}")

    _refuse_empty(shapes)
    # Layer numbers come from names: bound them by the tensor count before sizing anything by them.
    layers = sorted(
        {
            bounded_layer_index(name, m.group(1), len(shapes))
            for name in shapes
            if (m := BLOCK_NAME.fullmatch(name))
        }
    )
    if not layers:
        raise ModelFormatError("checkpoint has no 'blocks.N.*' tensors")
    n_layer = layers[-1] + 1
    if layers != list(range(n_layer)):
        missing = sorted(set(range(n_layer)) - set(layers))
        shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
        raise ModelFormatError(f"checkpoint has blocks up to {n_layer - 1} but none for layer(s) [{shown}]")

    version = detect_checkpoint_version(shapes)
    needed = ["blocks.0.ln0.weight", "blocks.0.ln0.bias"]
    for layer in range(n_layer):
        needed += required_tensors(version, layer, bonus_name(shapes))
    for name in needed:
        if name not in shapes:
            raise ModelFormatError(f"RWKV v{version} checkpoint lacks the tensor '{name}'")

    n_head = head_count(version, shapes, n_embed)
    rules = Rules(version, n_embed, n_head, list(shapes))
    steps: list[Step] = []
    skipped: list[str] = []
    for name in shapes:
        if not _is_model_tensor(name):
            skipped.append(name)
            continue
        step = rules.step(name, shapes)
        if step is not None:
            steps.append(step)
    return ConversionPlan(version, n_vocab, n_embed, n_layer, n_head, tuple(steps), tuple(skipped))


def _refuse_empty(shapes: Mapping[str, tuple[int, ...]]) -> None:
    """No RWKV tensor is empty; one that is (shape [0, 16]) would reach the writer as nonsense."""
    for name, shape in shapes.items():
        if _is_model_tensor(name) and 0 in shape:
            raise ModelFormatError(f"tensor '{name}' has shape {list(shape)}: an RWKV tensor cannot be empty")


def _is_model_tensor(name: str) -> bool:
    return (
        name in ("emb.weight", "head.weight")
        or name.startswith("ln_out.")
        or bool(BLOCK_NAME.fullmatch(name))
    )


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


def _run_step(step: Step, tensors: Mapping[str, Any]) -> F32:
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
        _write(ckpt, dst, data_type, progress, f"converting {src_path.name}", str(src_path))


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
        _write(merged, dst, data_type, progress, f"merging {Path(lora).name}", f"{base} + {lora}")


def _write(
    tensors: Mapping[str, Any],
    dst: str | os.PathLike[str],
    data_type: DType,
    progress: bool | None,
    desc: str,
    source: str,
) -> None:
    """Plan and write; a ModelFormatError about the input names ``source`` (the checkpoint)."""
    try:
        _write_plan(tensors, dst, data_type, progress, desc)
    except ModelFormatError as e:
        if str(e).startswith(source):
            raise
        raise ModelFormatError(f"{source}: {e}") from e


def _write_plan(
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
        merged: np.ndarray = weight + delta
        return merged


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
