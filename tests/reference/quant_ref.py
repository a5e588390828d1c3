"""Readable numpy reference of ggml's block quantization (formats.md §5.1–§5.3).

This is the ground truth the C codecs are tested against, so it follows the spec literally
rather than cleverly: every step is float32 arithmetic in the same order as the spec (numpy
float32 ops round exactly like C's ``float`` ops without FMA contraction), ``d`` stays
unrounded for ``id = 1/d`` while the stored ``d``/``m`` are rounded to f16, codes are taken
with truncation toward zero, and Q8_0 rounds half away from zero like C ``roundf``.
Work is vectorised over blocks: arrays below have shape ``(n_blocks, 32)``.

Inputs must be finite: for inf/NaN (and for subnormal scales whose reciprocal overflows) the
C code converts an infinite or NaN float to an integer, which is undefined behaviour, so
there is no reference answer to reproduce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from rwkv_ggml.fileformat import DType

QK = 32
F32 = np.float32

# Byte offsets of the fields inside one block (formats.md §5.1): (d, m, qh, qs); None = absent.
_LAYOUT: dict[DType, tuple[int, int | None, int | None, int]] = {
    DType.Q4_0: (0, None, None, 2),
    DType.Q4_1: (0, 2, None, 4),
    DType.Q5_0: (0, None, 2, 6),
    DType.Q5_1: (0, 2, 4, 8),
    DType.Q8_0: (0, None, None, 2),
}


def _check_quant_dtype(dtype: DType) -> DType:
    dtype = DType(dtype)
    if dtype not in _LAYOUT:
        raise ValueError(f"{dtype.name} is not a block-quantized type")
    return dtype


def _absmax_signed(blocks: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per block, the signed value with the largest magnitude, first occurrence winning.

    The C loop starts at ``amax = 0, mx = 0`` and replaces only when ``|x| > amax``, so for an
    all-zero block ``mx`` is +0.0 even if the block holds -0.0 (this decides the sign of ``d``).
    """
    magnitude = np.abs(blocks)
    first = np.argmax(magnitude, axis=1)  # argmax returns the first index of the maximum
    mx = blocks[np.arange(blocks.shape[0]), first]
    return np.where(magnitude[np.arange(blocks.shape[0]), first] > 0, mx, F32(0.0)).astype(F32)


def _reciprocal(d: NDArray[np.float32]) -> NDArray[np.float32]:
    """``id = d != 0 ? 1/d : 0`` in float32."""
    safe = np.where(d != 0, d, F32(1.0))
    return np.where(d != 0, F32(1.0) / safe, F32(0.0)).astype(F32)


def _trunc_to_int(values: NDArray[np.float32]) -> NDArray[np.int32]:
    """C float → integer conversion: truncation toward zero."""
    return np.trunc(values).astype(np.int32)


def _round_half_away(values: NDArray[np.float32]) -> NDArray[np.int32]:
    """C ``roundf``: nearest integer, halfway cases away from zero.

    Computed from the exact fractional part; ``floor(x + 0.5)`` would be wrong for values
    like 0.49999997 where the addition itself rounds up to 1.0.
    """
    whole = np.trunc(values)
    frac = values - whole  # exact in float32
    bump = (np.abs(frac) >= F32(0.5)).astype(np.int32) * np.sign(values).astype(np.int32)
    return whole.astype(np.int32) + bump


def _pack_nibbles(codes: NDArray[np.int32]) -> NDArray[np.uint8]:
    """``qs[j] = (q_j & 0xF) | ((q_{j+16} & 0xF) << 4)`` for j = 0..15."""
    low = codes[:, :16] & 0xF
    high = codes[:, 16:] & 0xF
    return (low | (high << 4)).astype(np.uint8)


def _pack_high_bits(codes: NDArray[np.int32]) -> NDArray[np.uint8]:
    """Q5 ``qh``: bit e of a little-endian u32 is bit 4 of code e; returned as 4 bytes."""
    bits = ((codes >> 4) & 1).astype(np.uint64)
    qh = (bits << np.arange(QK, dtype=np.uint64)).sum(axis=1).astype("<u4")
    return qh.view(np.uint8).reshape(-1, 4)


def _f16_bytes(values: NDArray[np.float32]) -> NDArray[np.uint8]:
    """f32 → f16 (round to nearest even, overflow to inf) as little-endian bytes."""
    with np.errstate(over="ignore"):  # |v| >= 65520 becomes inf by definition (formats.md §3)
        return values.astype("<f2").view(np.uint8).reshape(-1, 2)


def quantize_ref(x: NDArray[np.float32], dtype: DType) -> NDArray[np.uint8]:
    """Quantize a float32 matrix ``(rows, K)``, K a multiple of 32, to ``(rows, K/32·type_size)`` bytes.

    Each row is ``K/32`` independent blocks in memory order (formats.md §5.3).
    """
    dtype = _check_quant_dtype(dtype)
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2:
        raise ValueError(f"expected a 2-D float32 array, got {x.dtype} with shape {x.shape}")
    rows, k = x.shape
    if k % QK != 0:
        raise ValueError(f"row length {k} is not a multiple of {QK}")
    if not np.all(np.isfinite(x)):
        raise ValueError("input has inf/NaN; ggml's result is undefined there")
    blocks = np.ascontiguousarray(x).reshape(-1, QK)
    n_blocks = blocks.shape[0]
    d_off, m_off, qh_off, qs_off = _LAYOUT[dtype]
    out = np.zeros((n_blocks, dtype.type_size), dtype=np.uint8)

    if dtype in (DType.Q4_0, DType.Q5_0):
        # d carries the sign of the extreme value, so the extreme maps to code 0.
        levels = 8 if dtype == DType.Q4_0 else 16
        mx = _absmax_signed(blocks)
        d = (mx / F32(-levels)).astype(F32)
        inv = _reciprocal(d)
        scaled = (blocks * inv[:, None]).astype(F32)
        codes = np.minimum(2 * levels - 1, _trunc_to_int(scaled + F32(levels + 0.5)))
        out[:, d_off : d_off + 2] = _f16_bytes(d)
    elif dtype in (DType.Q4_1, DType.Q5_1):
        top = 15 if dtype == DType.Q4_1 else 31
        # First occurrence, like the C scan (`if (v < min) min = v`); it only matters for the
        # sign of a zero minimum, which is stored in m.
        mn = np.take_along_axis(blocks, np.argmin(blocks, axis=1)[:, None], axis=1)[:, 0]
        mx = np.take_along_axis(blocks, np.argmax(blocks, axis=1)[:, None], axis=1)[:, 0]
        d = ((mx - mn) / F32(top)).astype(F32)
        inv = _reciprocal(d)
        scaled = ((blocks - mn[:, None]) * inv[:, None]).astype(F32)
        codes = _trunc_to_int(scaled + F32(0.5))
        if dtype == DType.Q4_1:
            codes = np.minimum(15, codes)  # Q5_1 has no clamp in ggml; <= 31 by construction
        out[:, d_off : d_off + 2] = _f16_bytes(d)
        assert m_off is not None
        out[:, m_off : m_off + 2] = _f16_bytes(mn)
    else:  # Q8_0
        amax = np.abs(blocks).max(axis=1)
        d = (amax / F32(127)).astype(F32)
        inv = _reciprocal(d)
        codes = _round_half_away((blocks * inv[:, None]).astype(F32))
        out[:, d_off : d_off + 2] = _f16_bytes(d)
        out[:, qs_off : qs_off + QK] = codes.astype(np.int8).view(np.uint8)
        return out.reshape(rows, -1)

    out[:, qs_off : qs_off + 16] = _pack_nibbles(codes)
    if qh_off is not None:
        out[:, qh_off : qh_off + 4] = _pack_high_bits(codes)
    return out.reshape(rows, -1)


def block_codes(data: NDArray[np.uint8], dtype: DType) -> NDArray[np.int32]:
    """Unpack the integer codes of every block: ``(n_blocks, 32)``, unsigned for Q4/Q5, int8 for Q8_0."""
    dtype = _check_quant_dtype(dtype)
    blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, dtype.type_size)
    _, _, qh_off, qs_off = _LAYOUT[dtype]
    if dtype == DType.Q8_0:
        return blocks[:, qs_off : qs_off + QK].view(np.int8).astype(np.int32)
    qs = blocks[:, qs_off : qs_off + 16].astype(np.int32)
    codes = np.concatenate([qs & 0xF, qs >> 4], axis=1)
    if qh_off is not None:
        qh = np.ascontiguousarray(blocks[:, qh_off : qh_off + 4]).view("<u4").astype(np.int64)
        codes = codes | (((qh >> np.arange(QK)) & 1) << 4).astype(np.int32)
    return codes


def block_scales(
    data: NDArray[np.uint8], dtype: DType
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """Stored ``d`` (and ``m`` for the _1 types, else None) of every block, widened to f32."""
    dtype = _check_quant_dtype(dtype)
    blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, dtype.type_size)
    d_off, m_off, _, _ = _LAYOUT[dtype]
    d = np.ascontiguousarray(blocks[:, d_off : d_off + 2]).view("<f2").reshape(-1).astype(F32)
    if m_off is None:
        return d, None
    m = np.ascontiguousarray(blocks[:, m_off : m_off + 2]).view("<f2").reshape(-1).astype(F32)
    return d, m


def dequantize_ref(data: NDArray[np.uint8], dtype: DType, ne: Sequence[int]) -> NDArray[np.float32]:
    """Decode the quantized bytes of a tensor with ggml sizes ``ne``.

    Returns float32 in numpy shape ``reversed(ne)``, like ``ModelFile.array`` for F32 tensors.
    """
    dtype = _check_quant_dtype(dtype)
    ne = tuple(int(n) for n in ne)
    n_elements = math.prod(ne)
    if ne[0] % QK != 0:
        raise ValueError(f"ne[0] = {ne[0]} is not a multiple of {QK}")
    expected = n_elements // QK * dtype.type_size
    if np.asarray(data).size != expected:
        raise ValueError(
            f"{dtype.name} tensor with ne = {ne} needs {expected} bytes, got {np.asarray(data).size}"
        )
    codes = block_codes(data, dtype)
    d, m = block_scales(data, dtype)
    # A stored d of inf (|d| >= 65520) decodes to inf/NaN, exactly as in ggml; no warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == DType.Q4_0:
            values = (codes - 8).astype(F32) * d[:, None]
        elif dtype == DType.Q5_0:
            values = (codes - 16).astype(F32) * d[:, None]
        elif dtype == DType.Q8_0:
            values = codes.astype(F32) * d[:, None]
        else:
            assert m is not None
            values = (codes.astype(F32) * d[:, None]).astype(F32) + m[:, None]
    return values.astype(F32).reshape(tuple(reversed(ne)))
