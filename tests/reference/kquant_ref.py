"""A plain K-quant encoder (Q4_K, Q5_K, Q6_K; formats.md §7.4) for the tests: rwkv_ggml reads these types
but has no quantizer of its own, and the ``gguf`` package only decodes them.

This is not llama.cpp's search for the best scales: each sub-block gets the scale (and, for Q4_K/Q5_K,
the minimum) that spans its range, and the codes are the nearest ones. Any valid blocks serve the
tests, which compare against the decoded values of exactly these blocks.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
QK_K = 256


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype("<f2").view(np.uint8).reshape(-1, 2)


def _pack_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins per block (n, 8) into the 12 packed bytes (n, 12)."""
    out = np.zeros((sc.shape[0], 12), np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((mn[:, 4:8] & 0xF) << 4)
    return out


def quantize_q45_k(x: np.ndarray, five_bits: bool) -> np.ndarray:
    """Rows of floats (length a multiple of 256) -> Q4_K / Q5_K blocks, (rows, bytes)."""
    rows = x.shape[0]
    top = 31 if five_bits else 15
    sub = x.astype(F32).reshape(-1, 8, 32)
    lo = np.minimum(sub.min(axis=2), 0)  # value = d sc q - dmin m with m >= 0
    span = (sub.max(axis=2) - lo) / top
    d = (span.max(axis=1) / 63).astype(np.float16).astype(F32)
    dmin = (-lo.min(axis=1) / 63).astype(np.float16).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.clip(np.nan_to_num(np.round(span / d[:, None])), 0, 63).astype(np.int32)
        mn = np.clip(np.nan_to_num(np.round(-lo / dmin[:, None])), 0, 63).astype(np.int32)
        step = (d[:, None] * sc)[:, :, None]
        q = np.nan_to_num(np.round((sub + (dmin[:, None] * mn)[:, :, None]) / step))
    q = np.clip(q, 0, top).astype(np.uint8)
    n = sub.shape[0]
    qs = np.zeros((n, 4, 32), np.uint8)
    for s in range(8):
        qs[:, s // 2] |= (q[:, s] & 0xF) << (4 * (s % 2))
    parts = [_f16_bytes(d), _f16_bytes(dmin), _pack_scales(sc, mn)]
    if five_bits:
        qh = np.zeros((n, 32), np.uint8)
        for s in range(8):
            qh |= ((q[:, s] >> 4) & 1) << s
        parts.append(qh)
    parts.append(qs.reshape(n, 128))
    return np.concatenate(parts, axis=1).reshape(rows, -1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Rows of floats (length a multiple of 256) -> Q6_K blocks, (rows, 210)."""
    rows = x.shape[0]
    sub = x.astype(F32).reshape(-1, 16, 16)
    n = sub.shape[0]
    scale = np.abs(sub).max(axis=2) / 31
    d = (scale.max(axis=1) / 127).astype(np.float16).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.clip(np.nan_to_num(np.round(scale / d[:, None])), -128, 127).astype(np.int8)
        q = np.nan_to_num(np.round(sub / (d[:, None] * sc)[:, :, None]))
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(n, 256)
    ql = np.zeros((n, 128), np.uint8)
    qh = np.zeros((n, 64), np.uint8)
    for e in range(256):
        h, g, li = e // 128, (e % 128) // 32, e % 32
        ql[:, 64 * h + 32 * (g & 1) + li] |= (q[:, e] & 0xF) << (0 if g < 2 else 4)
        qh[:, 32 * h + li] |= (q[:, e] >> 4) << (2 * g)
    blocks = np.concatenate([ql, qh, sc.view(np.uint8), _f16_bytes(d)], axis=1)
    return blocks.reshape(rows, -1)


def quantize_k(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` (rows, k) as ``name`` ("Q4_K", "Q5_K" or "Q6_K") blocks, (rows, bytes per row)."""
    if name == "Q6_K":
        return quantize_q6_k(x)
    return quantize_q45_k(x, five_bits=name == "Q5_K")
