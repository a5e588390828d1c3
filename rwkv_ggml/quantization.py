"""Quantize an F32/F16 model file to Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0, byte-compatible with rwkv.cpp.

Which tensors are quantized follows formats.md §4.2 (the rule of rwkv.cpp's quantizer): 2-D F32/F16
tensors except ``emb.weight``, ``head.weight`` and the small v7 LoRA matrices and ``r_k``; everything
else is copied unchanged. The blocks come from the engine's reference quantizer (formats.md §5.3), run
on several threads, so the output equals rwkv.cpp's byte for byte.

``head=`` goes one step further than rwkv.cpp: the output matrix ``head.weight`` is quantized too (to
``head`` or, for ``head=True``, to the file's format). On a small model the head is a large share of the
bytes read per token (RWKV-7 1.5B: 268 MB of 3.1 GB in F16), so a Q8_0 head saves a tenth of the time per
token for a logit error docs/quantization.md reports. The file stays a valid rwkv.cpp file: each tensor
record carries its own type.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._lib import check, ffi, lib
from .errors import EngineArgumentError, ModelIOError, UnsupportedError
from .fileformat import DType, ModelFile, read_model_file, write_model_file
from .ggml import Pool, default_threads

QUANTIZED_FORMATS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
# formats.md §4.2: 2-D tensors whose names contain one of these stay as they are
_KEEP_PARTS = ("att.v1", "att.v2", "att.g1", "att.g2", "att.a1", "att.a2", "att.w1", "att.w2", "att.r_k")
_KEEP_NAMES = ("emb.weight", "head.weight")


def is_quantized_tensor(name: str, dtype: DType, n_dims: int) -> bool:
    """Whether rwkv.cpp's quantizer (and ours) quantizes this tensor (formats.md §4.2)."""
    return (
        dtype in (DType.F32, DType.F16)
        and n_dims == 2
        and name not in _KEEP_NAMES
        and not any(part in name for part in _KEEP_PARTS)
    )


def _target_format(fmt: str | DType) -> DType:
    try:
        target = fmt if isinstance(fmt, DType) else DType.from_name(str(fmt))
    except ValueError:
        raise EngineArgumentError(
            f"unknown quantization format {fmt!r}; choose one of {', '.join(QUANTIZED_FORMATS)}"
        ) from None
    if target.name not in QUANTIZED_FORMATS:  # a float type, or a K-quant (read, never written)
        what = (
            "a K-quant rwkv_ggml reads but does not write"
            if target.is_quantized
            else "not a quantized format"
        )
        raise EngineArgumentError(f"{target.name} is {what}; choose one of {', '.join(QUANTIZED_FORMATS)}")
    return target


def quantize(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    fmt: str | DType,
    threads: int | None = None,
    *,
    progress: bool | None = None,
    head: bool | str | DType = False,
) -> None:
    """Writes ``dst``: the model ``src`` (an F32 or F16 file) with its matrices quantized to ``fmt``.

    ``head``: False keeps ``head.weight`` as it is (rwkv.cpp's rule); True quantizes it to ``fmt`` too; a
    format name (e.g. "Q8_0") quantizes it to that format. ``dst`` is written to a temporary file and
    renamed at the end, so an interrupted run leaves no broken model. ``progress``: a tqdm bar (default:
    when stderr is a terminal).
    """
    target = _target_format(fmt)
    head_target = _head_format(head, target)
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.exists():
        raise ModelIOError(f"source model '{src_path}' does not exist")
    if dst_path.exists() and dst_path.resolve() == src_path.resolve():
        raise EngineArgumentError(f"destination '{dst_path}' is the source file; choose another path")
    threads = default_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 512:
        raise EngineArgumentError(f"threads must be an int in 1..512, got {threads!r}")
    with read_model_file(src_path) as mf:
        already = [r.name for r in mf.tensors.values() if r.dtype.is_quantized]
        if already or (mf.data_type in DType._value2member_map_ and DType(mf.data_type).is_quantized):
            raise EngineArgumentError(
                f"'{src_path}' is already quantized ({DType(mf.data_type).name}); "
                "quantize from the F32 or F16 file"
            )
        if progress is None:
            progress = sys.stderr.isatty()
        pool = Pool(threads)
        try:
            write_model_file(
                dst_path,
                n_vocab=mf.n_vocab,
                n_embed=mf.n_embed,
                n_layer=mf.n_layer,
                data_type=target,
                tensors=_tensors(mf, target, head_target, pool, progress),
            )
        finally:
            pool.close()


def _head_format(head: bool | str | DType, target: DType) -> DType | None:
    """The format ``head.weight`` is quantized to, or None to keep it."""
    if isinstance(head, bool):
        return target if head else None
    if not isinstance(head, (str, DType)):
        raise EngineArgumentError(f"head must be a bool or a format name, got {type(head).__name__}")
    return _target_format(head)


def _tensors(mf: ModelFile, target: DType, head: DType | None, pool: Pool, progress: bool) -> Iterator[Any]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(r.nbytes for r in mf.tensors.values()),
            unit="B",
            unit_scale=True,
            desc=f"quantize {target.name}",
            file=sys.stderr,
        )
    try:
        for name, rec in mf.tensors.items():
            if head is not None and name == "head.weight" and rec.dtype in (DType.F32, DType.F16):
                yield name, head, rec.ne, quantize_matrix(np.asarray(mf.array(name)), head, pool)
            elif is_quantized_tensor(name, rec.dtype, len(rec.ne)):
                yield name, target, rec.ne, quantize_matrix(np.asarray(mf.array(name)), target, pool)
            else:
                yield name, np.asarray(mf.array(name))
            if bar is not None:
                bar.update(rec.nbytes)
    finally:
        if bar is not None:
            bar.close()


def quantize_matrix(weights: np.ndarray, target: DType | str, pool: Pool | None = None) -> np.ndarray:
    """Quantizes a 2-D float array (rows, K) to raw blocks, uint8 of shape (rows, row_bytes)."""
    fmt = _target_format(target)
    if not isinstance(weights, np.ndarray):
        raise EngineArgumentError(f"expected a numpy array, got {type(weights).__name__}")
    if pool is not None and not isinstance(pool, Pool):
        raise EngineArgumentError(f"pool must be a Pool or None, got {type(pool).__name__}")
    if weights.ndim != 2:
        raise EngineArgumentError(f"expected a 2-D array, got shape {weights.shape}")
    rows, k = weights.shape
    if k % fmt.block_size != 0:
        raise UnsupportedError(
            f"rows of {k} elements cannot be split into {fmt.name} blocks of {fmt.block_size}"
        )
    src = np.ascontiguousarray(weights, dtype=np.float32)  # F16 widens exactly
    if not src.flags.aligned:  # a memory-mapped F32 tensor can start at any byte offset
        src = src.copy()
    row_bytes = int(lib.rg_type_row_bytes(int(fmt), k))  # the engine's block layout, the one it writes
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    use = Pool(default_threads()) if pool is None else pool
    try:
        status = lib.rg_quantize_rows(
            int(fmt),
            ffi.cast("float *", ffi.from_buffer(src)),
            ffi.from_buffer(out),
            rows,
            k,
            use.ptr,
            use.threads,
        )
        check(status, f"quantizing to {fmt.name} failed")
    finally:
        if pool is None:
            use.close()
    return out
