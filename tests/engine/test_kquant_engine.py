"""The K-quant weight types Q4_K, Q5_K, Q6_K (csrc/ggml/quant/q_k.c, simd/k_kquant_scalar.c; formats.md §7.4).

* Dequantization equals a numpy decoding of the layout written from formats.md §7.4, which in turn
  equals the ``gguf`` package's own dequantizer (an independent implementation of the same format).
* ``mul_mat`` (mat-vec, the x4 tiles of the mat-mat, and the column counts that would take the panel
  route for the 32-element types) equals the integer arithmetic of formats.md §7.4 emulated in numpy, up
  to f32 rounding, and the f32 product of the dequantized weights within the activation-quantization
  bound; on random blocks including extreme scales (f16 maxima, subnormals, zero, negative), at every
  SIMD level, bit-identical for 1, 2 and 4 threads.
* From 10 columns on (with AVX512_VNNI) the int8 column panels: Q4_K/Q5_K sub-blocks as the has-min tile,
  Q6_K's 16-element halves with a tile of their own; the same bounds, on shapes around the threshold,
  odd column counts, partial tiles and k-blocks, and for every thread count bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml._lib import lib
from tests.engine.test_quant_engine import _guarded_buffer, act_emulate, decode

F32 = np.float32
QK_K = 256
TYPES = {
    "Q4_K": (int(lib.RG_TYPE_Q4_K), 144),
    "Q5_K": (int(lib.RG_TYPE_Q5_K), 176),
    "Q6_K": (int(lib.RG_TYPE_Q6_K), 210),
}
NAMES = list(TYPES)
# From this many columns on, with AVX512_VNNI, mul_mat takes the int8 column panels (ops_matmul_panel.c).
PANEL_MIN_T = 10
# f16 bit patterns of the super-block scales: ordinary, the largest finite, subnormal, zero, negative.
SCALE_BITS = {
    "normal": None,
    "huge": np.float16(65504).view(np.uint16),
    "subnormal": np.uint16(0x0003),
    "zero": np.uint16(0),
    "negative": np.float16(-0.75).view(np.uint16),
}


def random_blocks(name: str, rows: int, k: int, seed: int, scales: str = "normal") -> np.ndarray:
    """Random bytes as K-quant blocks (every byte pattern is a valid block) with finite f16 scales."""
    _, size = TYPES[name]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows * (k // QK_K), size), dtype=np.uint8)
    n = blocks.shape[0]
    bits = SCALE_BITS[scales]
    if bits is None:
        d = (rng.uniform(-1, 1, n) * 10.0 ** rng.integers(-4, 1, n)).astype(np.float16).view(np.uint16)
    else:
        d = np.full(n, bits, dtype=np.uint16)
    fields = [208] if name == "Q6_K" else [0, 2]  # d (and Q4_K/Q5_K's dmin)
    for at in fields:
        blocks[:, at : at + 2] = d.astype("<u2").view(np.uint8).reshape(n, 2)
    return blocks.reshape(rows, -1)


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    return blocks[:, at : at + 2].copy().view("<f2").astype(F32)[:, 0]


def scale_min(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and mins of Q4_K/Q5_K from the 12 packed bytes (n, 12) -> (n, 8) each."""
    q = q.astype(np.int32)
    sc = np.empty((q.shape[0], 8), np.int32)
    mn = np.empty_like(sc)
    sc[:, :4], mn[:, :4] = q[:, 0:4] & 63, q[:, 4:8] & 63
    sc[:, 4:] = (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)
    return sc, mn


def codes(name: str, blocks: np.ndarray) -> np.ndarray:
    """Per block the 256 codes: 0..15 / 0..31 for Q4_K / Q5_K, signed -32..31 for Q6_K."""
    n = blocks.shape[0]
    e = np.arange(QK_K)
    if name == "Q6_K":
        h, g, li = e // 128, (e % 128) // 32, e % 32
        lo = blocks[:, 64 * h + 32 * (g & 1) + li].astype(np.int32)
        lo = np.where(g < 2, lo & 0xF, lo >> 4)
        hi = (blocks[:, 128 + 32 * h + li].astype(np.int32) >> (2 * g)) & 3
        return (lo | (hi << 4)) - 32
    qs = 48 if name == "Q5_K" else 16
    s, li = e // 32, e % 32
    byte = blocks[:, qs + 32 * (s // 2) + li].astype(np.int32)
    q = np.where(s % 2 == 1, byte >> 4, byte & 0xF)
    if name == "Q5_K":
        q |= ((blocks[:, 16 + li].astype(np.int32) >> s) & 1) << 4
    assert q.shape == (n, QK_K)
    return q


def dequantize_np(name: str, blocks: np.ndarray) -> np.ndarray:
    """formats.md §7.4 in numpy, in the f32 operation order of the C decoder."""
    blocks = blocks.reshape(-1, TYPES[name][1])
    q = codes(name, blocks).astype(F32)
    if name == "Q6_K":
        d = _f16(blocks, 208)
        sc = blocks[:, 192:208].view(np.int8).astype(F32)
        return ((d[:, None] * sc).astype(F32).repeat(16, axis=1) * q).astype(F32)
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = scale_min(blocks[:, 4:16])
    d1 = (d[:, None] * sc.astype(F32)).astype(F32).repeat(32, axis=1)
    m1 = (dmin[:, None] * mn.astype(F32)).astype(F32).repeat(32, axis=1)
    return ((d1 * q).astype(F32) - m1).astype(F32)


def run_mul_mat(w: np.ndarray, etype: int, k: int, x: np.ndarray, threads: int = 1) -> np.ndarray:
    with ggml.Context(32 << 20, threads=threads) as ctx:
        wt = ctx.external(w, engine_type=etype, ne=[k, w.shape[0]])
        y = ctx.mul_mat(wt, ctx.tensor(np.ascontiguousarray(x, dtype=F32)))
        ctx.graph([y]).compute(threads)
        return y.numpy().copy()


def emulate(name: str, w: np.ndarray, k: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """formats.md §7.4's dot product in numpy (f64 sums of the f32 terms) and the terms' magnitudes."""
    m = w.shape[0]
    blocks = w.reshape(-1, TYPES[name][1])
    q = codes(name, blocks).reshape(m, k // 32, 32).astype(np.int64)
    y = np.zeros((x.shape[0], m))
    mag = np.zeros_like(y)
    for t in range(x.shape[0]):
        xq, dx, _, xsum = act_emulate(x[t])
        if name == "Q6_K":
            d = _f16(blocks, 208).reshape(m, -1).repeat(8, axis=1)
            sc = blocks[:, 192:208].view(np.int8).astype(np.int64).reshape(m, -1, 2)
            halves = np.einsum(
                "mbhe,bhe->mbh", q.reshape(m, -1, 2, 16), xq.reshape(-1, 2, 16).astype(np.int64)
            )
            isum = (sc * halves).sum(axis=2)
            terms = (d * dx[None, :]).astype(F32).astype(np.float64) * isum
            mins = np.zeros_like(terms)
        else:
            d = _f16(blocks, 0).reshape(m, -1).repeat(8, axis=1)
            dmin = _f16(blocks, 2).reshape(m, -1).repeat(8, axis=1)
            sc, mn = (a.reshape(m, -1).astype(np.int64) for a in scale_min(blocks[:, 4:16]))
            isum = sc * np.einsum("mbe,be->mb", q, xq.astype(np.int64))
            terms = (d * dx[None, :]).astype(F32).astype(np.float64) * isum
            mins = (dmin * dx[None, :]).astype(F32).astype(np.float64) * (mn * xsum[None, :])
        y[t] = (terms - mins).sum(axis=1)
        mag[t] = (np.abs(terms) + np.abs(mins)).sum(axis=1)
    return y, mag


def rounding_tol(k: int, mag: np.ndarray) -> np.ndarray:
    return (2 * k // 32 + 8) * 2.0**-24 * mag + 1e-30


@pytest.mark.parametrize("scales", list(SCALE_BITS))
@pytest.mark.parametrize("name", NAMES)
def test_dequantize_equals_layout_and_gguf_package(name: str, scales: str) -> None:
    etype, _ = TYPES[name]
    w = random_blocks(name, 3, 512, seed=len(name) + len(scales), scales=scales)
    got = decode(w, etype, w.shape[0] * 512)
    mine = dequantize_np(name, w).reshape(-1)
    assert np.array_equal(got, mine)
    quants = pytest.importorskip("gguf.quants")
    gguf = pytest.importorskip("gguf")
    theirs = quants.dequantize(w, gguf.GGMLQuantizationType[name]).reshape(-1).astype(F32)
    np.testing.assert_allclose(got, theirs, rtol=2e-7, atol=0)


@pytest.mark.parametrize("scales", list(SCALE_BITS))
@pytest.mark.parametrize("name", NAMES)
def test_mul_mat_matches_kquant_arithmetic(simd_level: int, name: str, scales: str) -> None:
    etype, _ = TYPES[name]
    k, m = 768, 13
    w = random_blocks(name, m, k, seed=7, scales=scales)
    rng = np.random.default_rng(8)
    for t in (1, 3, 4, 9, 17):
        x = rng.standard_normal((t, k)).astype(F32)
        got = run_mul_mat(w, etype, k, x)
        want, mag = emulate(name, w, k, x)
        err = np.abs(got - want)
        assert np.all(err <= rounding_tol(k, mag)), f"T={t}: max err {err.max():.3g}"
        if 1 < t < PANEL_MIN_T:  # the one-row kernels: columns equal their mat-vecs bit for bit
            for c in range(t):
                assert np.array_equal(run_mul_mat(w, etype, k, x[c : c + 1])[0], got[c]), f"T={t} column {c}"


@pytest.mark.parametrize("name", NAMES)
def test_mul_mat_against_dequantized_product(name: str) -> None:
    """Against f64 W_deq @ x with unquantized x: within the activation quantization bound (per element
    |x - fp16(d') q| <= 0.5625 d', d' = amax_b / 127, as for the 32-element types)."""
    etype, _ = TYPES[name]
    k, m = 512, 20
    w = random_blocks(name, m, k, seed=21)
    w_deq = dequantize_np(name, w).reshape(m, k).astype(np.float64)
    x = np.random.default_rng(22).standard_normal((3, k)).astype(F32)
    got = run_mul_mat(w, etype, k, x)
    want = x.astype(np.float64) @ w_deq.T
    amax = np.abs(x.reshape(3, -1, 32)).max(axis=2).astype(np.float64)
    bound = 0.5625 / 127 * amax @ np.abs(w_deq).reshape(m, -1, 32).sum(axis=2).T
    bound += 1e-5 * np.abs(x).astype(np.float64) @ np.abs(w_deq).T
    err = np.abs(got - want)
    assert np.all(err <= bound) and np.max(err / bound) > 0.01


@pytest.mark.parametrize("name", NAMES)
def test_mul_mat_threads_bit_identical(name: str, threads: int) -> None:
    etype, _ = TYPES[name]
    k, m = 1024, 37
    w = random_blocks(name, m, k, seed=31)
    for t in (1, 6):
        x = np.random.default_rng(32 + t).standard_normal((t, k)).astype(F32)
        assert np.array_equal(run_mul_mat(w, etype, k, x, threads), run_mul_mat(w, etype, k, x, 1))


@pytest.mark.parametrize("name", NAMES)
def test_engine_type_table(name: str) -> None:
    etype, size = TYPES[name]
    assert (ggml.type_name(etype), ggml.block_size(etype), ggml.block_bytes(etype)) == (name, 256, size)
    assert ggml.is_quantized(etype)


@pytest.mark.parametrize("scales", list(SCALE_BITS))
@pytest.mark.parametrize("name", NAMES)
def test_levels_agree_bit_for_bit(name: str, scales: str) -> None:
    """Every SIMD level (AVX2; AVX-512 with its VNNI kernels) adds the same f32 block terms in the same
    order as the scalar kernel: the mat-vec and the one-row mat-mat of 5 and 8 columns, every scale kind."""
    etype, _ = TYPES[name]
    k, m = 1024, 29
    w = random_blocks(name, m, k, seed=41, scales=scales)
    previous = ggml.simd_level()
    for t in (1, 5, 8):
        x = np.random.default_rng(42 + t).standard_normal((t, k)).astype(F32)
        try:
            results = []
            for level in range(ggml.simd_max_level() + 1):
                assert ggml.simd_select(level) == level
                results.append(run_mul_mat(w, etype, k, x))
        finally:
            ggml.simd_select(previous)
        for level, y in enumerate(results):
            assert np.array_equal(y, results[0]), f"T={t}, level {level}"


@pytest.mark.parametrize("name", NAMES)
def test_columns_equal_one_column_at_a_time(name: str) -> None:
    """The small-B mat-mat (1..9 columns, up to 8 per pass over a weight row) gives each column exactly what
    the mat-vec of that column alone gives, at every SIMD level."""
    etype, _ = TYPES[name]
    k, m = 512, 21
    w = random_blocks(name, m, k, seed=51)
    previous = ggml.simd_level()
    try:
        for level in range(ggml.simd_max_level() + 1):
            ggml.simd_select(level)
            for t in range(1, 10):
                x = np.random.default_rng(52 + t).standard_normal((t, k)).astype(F32)
                together = run_mul_mat(w, etype, k, x, 2)
                alone = np.concatenate([run_mul_mat(w, etype, k, x[j : j + 1], 1) for j in range(t)])
                assert np.array_equal(together.reshape(alone.shape), alone), f"level {level}, {t} columns"
    finally:
        ggml.simd_select(previous)


def panel_route_available() -> bool:
    return ggml.simd_level() == 2 and bool(ggml.cpu_features()["avx512_vnni"])


@pytest.mark.parametrize("scales", list(SCALE_BITS))
@pytest.mark.parametrize("name", NAMES)
def test_many_columns_match_kquant_arithmetic(simd_level: int, name: str, scales: str) -> None:
    """Column counts around the panel threshold, odd ones and several panels; 13 rows (a partial tile) and
    k = 768 (a k-block of 16 blocks, then one of 8): within rounding of formats.md §7.4's arithmetic. On
    the panel route the f32 terms are added in another order than the mat-vec's, which the one-row
    kernels keep bit for bit."""
    etype, _ = TYPES[name]
    k, m = 768, 13
    w = random_blocks(name, m, k, seed=61, scales=scales)
    rng = np.random.default_rng(62)
    for t in (9, 10, 11, 16, 17, 33):
        x = rng.standard_normal((t, k)).astype(F32)
        got = run_mul_mat(w, etype, k, x)
        want, mag = emulate(name, w, k, x)
        err = np.abs(got - want)
        assert np.all(err <= 2 * rounding_tol(k, mag)), f"T={t}: max err {err.max():.3g}"
        alone = np.concatenate([run_mul_mat(w, etype, k, x[c : c + 1]) for c in range(t)])
        if t >= PANEL_MIN_T and panel_route_available() and scales == "normal":
            # the panel route ran: its order of the f32 additions differs from the mat-vec's somewhere
            assert not np.array_equal(got, alone), f"T={t}"
        elif t < PANEL_MIN_T:
            assert np.array_equal(got, alone), f"T={t}"


@pytest.mark.parametrize("name", NAMES)
def test_many_columns_against_dequantized_product(simd_level: int, name: str, threads: int) -> None:
    """37 columns (three panels, the last partial), 2 k-blocks, 50 rows: against f64 W_deq @ x within the
    activation quantization bound, and bit for bit the same for every thread count."""
    etype, _ = TYPES[name]
    k, m, t = 1024, 50, 37
    w = random_blocks(name, m, k, seed=71)
    w_deq = dequantize_np(name, w).reshape(m, k).astype(np.float64)
    x = np.random.default_rng(72).standard_normal((t, k)).astype(F32)
    got = run_mul_mat(w, etype, k, x, threads)
    want = x.astype(np.float64) @ w_deq.T
    amax = np.abs(x.reshape(t, -1, 32)).max(axis=2).astype(np.float64)
    bound = 0.5625 / 127 * amax @ np.abs(w_deq).reshape(m, -1, 32).sum(axis=2).T
    bound += 1e-5 * np.abs(x).astype(np.float64) @ np.abs(w_deq).T
    err = np.abs(got - want)
    assert np.all(err <= bound) and np.max(err / bound) > 0.01
    assert np.array_equal(got, run_mul_mat(w, etype, k, x, 1))


@pytest.mark.parametrize("name", NAMES)
def test_many_columns_many_tiles_in_blocks(name: str) -> None:
    """Enough rows for several blocks of tiles per thread and a partial last tile, five k-blocks: the same
    within rounding, and bit for bit for 1, 2 and 3 threads."""
    etype, _ = TYPES[name]
    k, m, t = 2304, 400, 70
    w = random_blocks(name, m, k, seed=81)
    x = np.random.default_rng(82).standard_normal((t, k)).astype(F32)
    got = run_mul_mat(w, etype, k, x, 2)
    want, mag = emulate(name, w, k, x)
    assert np.all(np.abs(got - want) <= 2 * rounding_tol(k, mag))
    for threads in (1, 3):
        assert np.array_equal(run_mul_mat(w, etype, k, x, threads), got), f"{threads} threads"


@pytest.mark.parametrize("name", NAMES)
def test_many_columns_stay_inside_the_weights(simd_level: int, name: str) -> None:
    """Weights ending at an inaccessible page, and at an odd address: the panel decoders read inside them."""
    etype, _ = TYPES[name]
    k, m = 512, 3
    w = random_blocks(name, m, k, seed=91)
    guarded, region = _guarded_buffer(w.nbytes)
    guarded[:] = w.reshape(-1)
    odd = np.zeros(w.nbytes + 1, dtype=np.uint8)[1:]
    odd[:] = w.reshape(-1)
    x = np.random.default_rng(92).standard_normal((12, k)).astype(F32)
    want, mag = emulate(name, w, k, x)
    got = run_mul_mat(guarded.reshape(w.shape), etype, k, x)
    assert np.all(np.abs(got - want) <= 2 * rounding_tol(k, mag))
    assert np.array_equal(run_mul_mat(odd.reshape(w.shape), etype, k, x), got)
    del guarded, region
