"""F16 <-> F32 conversion (types.c + the f16 kernels of simd/), bit-exact against numpy's float16.

F16 -> F32 is exact, so all 65536 half values must widen to numpy's float32 bit for bit; F32 -> F16
rounds to nearest even with overflow to inf (65520 and up) and gradual underflow to subnormals and zero,
so every half midpoint (the ties), its f32 neighbours, random f32 bit patterns and edge values must match
numpy bit for bit. NaN stays NaN with its sign (the payload may be quieted: hardware conversion sets the
quiet bit, so only the remaining payload bits are compared on widening). Both directions are checked
through the type API (the dispatched vector kernels, with lengths that leave vector tails) at every SIMD
level, and through graph copies (contiguous rows and the element-wise path of strided rows).
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib

ALL_HALF_BITS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def to_f32(h: np.ndarray) -> np.ndarray:
    """Our engine's F16 -> F32 conversion of a flat float16 array (rg_type_to_f32)."""
    h = np.ascontiguousarray(h, dtype=np.float16)
    out = np.empty(h.size, dtype=np.float32)
    st = lib.rg_type_to_f32(ggml.F16, ffi.from_buffer(h), ffi.cast("float *", ffi.from_buffer(out)), h.size)
    assert st == lib.RG_OK
    return out


def to_f16(f: np.ndarray) -> np.ndarray:
    f = np.ascontiguousarray(f, dtype=np.float32)
    out = np.empty(f.size, dtype=np.float16)
    st = lib.rg_type_from_f32(ggml.F16, ffi.cast("float *", ffi.from_buffer(f)), ffi.from_buffer(out), f.size)
    assert st == lib.RG_OK
    return out


def assert_widening_matches_numpy(half_bits: np.ndarray, got: np.ndarray) -> None:
    want = half_bits.view(np.float16).astype(np.float32)
    gb, wb = got.view(np.uint32), want.view(np.uint32)
    nan = np.isnan(want)
    bad = np.flatnonzero((gb != wb) & ~nan)
    assert bad.size == 0, "F16 -> F32 differs from numpy for halves " + ", ".join(
        f"{half_bits[i]:#06x}: got {gb[i]:#010x} want {wb[i]:#010x}" for i in bad[:8]
    )
    # NaN: still NaN, same sign, same payload apart from the quiet bit (bit 22)
    assert np.isnan(got[nan]).all()
    assert ((gb[nan] ^ wb[nan]) & ~np.uint32(0x00400000)).max(initial=0) == 0, "NaN sign or payload changed"


def assert_narrowing_matches_numpy(f: np.ndarray, got: np.ndarray) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        want = f.astype(np.float16)
    gb, wb = got.view(np.uint16), want.view(np.uint16)
    nan = np.isnan(f)
    bad = np.flatnonzero((gb != wb) & ~nan)
    assert bad.size == 0, "F32 -> F16 differs from numpy for " + ", ".join(
        f"{f[i]!r} ({f.view(np.uint32)[i]:#010x}): got {gb[i]:#06x} want {wb[i]:#06x}" for i in bad[:8]
    )
    assert np.isnan(got[nan]).all(), "NaN must stay NaN"
    np.testing.assert_array_equal(gb[nan] & 0x8000, wb[nan] & 0x8000, err_msg="NaN sign changed")


def half_midpoints() -> np.ndarray:
    """Every tie between adjacent finite halves (and the tie above 65504, 65520), both signs, with the
    f32 values one ulp either side of each tie."""
    h = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    upper = np.append(h[1:], 65536.0)
    mids = ((h + upper) / 2).astype(np.float32)
    assert np.array_equal(mids.astype(np.float64), (h + upper) / 2), "midpoints must be exact in f32"
    around = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(0))])
    return np.concatenate([around, -around])


def edge_values() -> np.ndarray:
    u = np.array(
        [
            0x00000001,
            0x007FFFFF,
            0x00800000,
            0x7F7FFFFF,
            0x7F800000,
            0xFF800000,
            0x7FC00000,
            0xFFC00000,
            0x7F800001,
            0x7FA00000,
            0xFFBFFFFF,
            0x80000001,
            0x80000000,
            0x00000000,
        ],
        dtype=np.uint32,
    )
    v = np.array(
        [
            65504.0,
            65519.996,
            65520.0,
            65536.0,
            1e5,
            2.0**-14,
            2.0**-14 * (1 - 2.0**-11),
            2.0**-24,
            2.0**-25,
            2.0**-25 * (1 + 2.0**-23),
            3 * 2.0**-25,
            2.0**-26,
            1.0,
            1.0 + 2.0**-11,
            1.0 + 3 * 2.0**-11,
            0.1,
            1 / 3,
            2049.0,
            4097.0,
            6.1e-5,
            5.96e-8,
        ],
        dtype=np.float32,
    )
    return np.concatenate([u.view(np.float32), v, -v])


def random_f32(n: int, seed: int) -> np.ndarray:
    """Random bit patterns (every exponent, NaN and inf included) plus values in the half range."""
    r = np.random.default_rng(seed)
    bits = r.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    in_range = (r.standard_normal(n) * 2.0 ** r.uniform(-26, 17, n)).astype(np.float32)
    return np.concatenate([bits, in_range])


# ---- F16 -> F32 ----


def test_every_half_widens_exactly(simd_level: int) -> None:
    # + 13: a length that leaves a tail after the 8- and 16-lane loops
    bits = np.concatenate([ALL_HALF_BITS, ALL_HALF_BITS[:13]])
    assert_widening_matches_numpy(bits, to_f32(bits.view(np.float16)))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 33])
def test_widening_short_lengths(n: int, simd_level: int) -> None:
    bits = np.random.default_rng(n).integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    out = np.full(n + 4, 7.0, dtype=np.float32)
    h = bits.view(np.float16)
    st = lib.rg_type_to_f32(ggml.F16, ffi.from_buffer(h), ffi.cast("float *", ffi.from_buffer(out)), n)
    assert st == lib.RG_OK
    assert_widening_matches_numpy(bits, out[:n])
    np.testing.assert_array_equal(out[n:], 7.0, err_msg="wrote past the end of the output")


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_every_half_through_a_graph_copy(layout: str, simd_level: int) -> None:
    """cpy F16 -> F32 in a graph: contiguous rows use the vector kernel, transposed rows the scalar
    element path."""
    h = ALL_HALF_BITS.view(np.float16).reshape(256, 256)
    with ggml.Context(4 << 20, threads=2) as ctx:
        src = (
            ctx.tensor(h) if layout == "contiguous" else ctx.transpose(ctx.tensor(np.ascontiguousarray(h.T)))
        )
        dst = ctx.new_tensor(ggml.F32, (256, 256))
        node = ctx.cpy(src, dst)
        ctx.graph([node]).compute()
        got = node.numpy().ravel()
    assert_widening_matches_numpy(ALL_HALF_BITS, got)


# ---- F32 -> F16 ----


@pytest.mark.parametrize("values", ["midpoints", "edges", "random"])
def test_narrowing_rounds_like_numpy(values: str, simd_level: int) -> None:
    f = {"midpoints": half_midpoints, "edges": edge_values, "random": lambda: random_f32(100_003, 5)}[
        values
    ]()
    assert_narrowing_matches_numpy(f, to_f16(f))


def test_every_half_round_trips(simd_level: int) -> None:
    finite = ALL_HALF_BITS[~np.isnan(ALL_HALF_BITS.view(np.float16))]
    back = to_f16(to_f32(finite.view(np.float16)))
    np.testing.assert_array_equal(back.view(np.uint16), finite)


def test_f32_subnormals_flush_to_signed_zero(simd_level: int) -> None:
    u = np.random.default_rng(3).integers(1, 0x00800000, size=1001, dtype=np.uint32)
    f = np.concatenate([u, u | 0x80000000]).astype(np.uint32).view(np.float32)
    got = to_f16(f).view(np.uint16)
    np.testing.assert_array_equal(got, np.where(f.view(np.uint32) >> 31, 0x8000, 0).astype(np.uint16))


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_narrowing_through_a_graph_copy(layout: str, simd_level: int) -> None:
    """cpy F32 -> F16 into a contiguous and into a transposed destination (vector and element paths)."""
    f = np.concatenate([half_midpoints()[: 3 * 4096], edge_values()])
    f = f[: (f.size // 64) * 64].reshape(-1, 64)
    with ggml.Context(4 << 20, threads=2) as ctx:
        if layout == "contiguous":
            dst = ctx.new_tensor(ggml.F16, f.shape)
        else:
            dst = ctx.transpose(ctx.new_tensor(ggml.F16, f.shape[::-1]))
        node = ctx.cpy(ctx.tensor(f), dst)
        ctx.graph([node]).compute(threads=2)
        got = node.numpy()
    assert got.shape == f.shape
    assert_narrowing_matches_numpy(f.ravel(), np.ascontiguousarray(got).ravel())


def test_simd_levels_agree_bit_for_bit() -> None:
    """Apart from NaN payloads, every level converts identically (the scalar path is the reference)."""
    f = random_f32(20_011, 9)
    f = f[~np.isnan(f)]
    before = ggml.simd_level()
    try:
        results = []
        for level in range(ggml.simd_max_level() + 1):
            ggml.simd_select(level)
            results.append(
                (to_f16(f).view(np.uint16).copy(), to_f32(ALL_HALF_BITS.view(np.float16)).view(np.uint32))
            )
    finally:
        ggml.simd_select(before)
    nan_h = np.isnan(ALL_HALF_BITS.view(np.float16))
    for narrow, widen in results[1:]:
        np.testing.assert_array_equal(narrow, results[0][0])
        np.testing.assert_array_equal(widen[~nan_h], results[0][1][~nan_h])
