"""The engine's block-quantized types (csrc/ggml/quant, simd/k_quant_*.c) against the numpy reference.

What is pinned here, and why:

* The C quantizer (``rg_type_from_f32`` and the multithreaded ``rg_quantize_rows``) must produce the bytes of
  ``tests/reference/quant_ref.quantize_ref`` exactly -- that reference follows formats.md §5.3 and reproduces
  the shipped rwkv.cpp files, so byte equality here means model files interchangeable with rwkv.cpp. Data
  sets cover random blocks, zeros and -0.0, constants, one-hot blocks, halfway cases, and huge and tiny
  magnitudes (down to subnormal inputs whose scale's reciprocal overflows).
* Dequantization equals ``dequantize_ref`` exactly, and the round trip stays within each format's bound.
* ``mul_mat`` with quantized weights computes what ggml computes (formats.md §5.4): activations quantized
  per 32-block to 8 bits (``q = round_half_even(x * 127/amax)``, ``d = fp16(amax/127)``, Q8_1's
  ``s = fp16(d * sum q)``), exact integer block sums, ``sum_b d_w d_x isum_b (+ m_w s_x)``. A numpy
  emulation of exactly that is compared with a rounding-only tolerance (the levels differ only in the
  order the f32 block terms are added), and the result is also compared with an f32 product of the
  dequantized weights and the unquantized activations under the stated activation-quantization bound.
* The scalar, AVX2 and AVX-512 kernels agree; results are bit-identical for 1, 2 and 4 threads; kernels
  never read past the last weight block (weights placed against a PROT_NONE page) or need alignment.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Iterator

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib
from rwkv_ggml.fileformat import DType
from tests.reference.quant_ref import block_codes, block_scales, dequantize_ref, quantize_ref

from .helpers import quant_panel_kernels

F32 = np.float32
QK = 32
QTYPES = [DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0]
QIDS = [t.name for t in QTYPES]
# Offset of the signed code (formats.md §5.2): value = (q - off) * d for the _0 types.
OFFSET = {DType.Q4_0: 8, DType.Q5_0: 16, DType.Q8_0: 0, DType.Q4_1: 0, DType.Q5_1: 0}
HAS_MIN = {DType.Q4_1, DType.Q5_1}
ACT = int(lib.RG_TYPE_Q8_ACT)
ACT_BYTES = 44  # per 32 activations: 32 codes + f32 d + f32 s + i32 sum


# ---- plumbing -----------------------------------------------------------------------------------------


def _fptr(a: np.ndarray) -> object:
    return ffi.cast("float *", ffi.from_buffer(a))


def row_bytes(etype: int, k: int) -> int:
    return int(lib.rg_type_row_bytes(etype, k))


def encode(x: np.ndarray, etype: int) -> np.ndarray:
    """rg_type_from_f32 on the whole array, as uint8 rows."""
    x = np.ascontiguousarray(x, dtype=F32)
    out = np.empty((x.shape[0], row_bytes(etype, x.shape[1])), dtype=np.uint8)
    assert lib.rg_type_from_f32(etype, _fptr(x), ffi.from_buffer(out), x.size) == lib.RG_OK
    return out


def decode(data: np.ndarray, etype: int, n: int) -> np.ndarray:
    out = np.empty(n, dtype=F32)
    assert lib.rg_type_to_f32(etype, ffi.from_buffer(np.ascontiguousarray(data)), _fptr(out), n) == lib.RG_OK
    return out


def quantize_rows(x: np.ndarray, etype: int, threads: int, pool: ggml.Pool | None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=F32)
    rows, k = x.shape
    out = np.full((rows, row_bytes(etype, k)), 0xAB, dtype=np.uint8)
    status = lib.rg_quantize_rows(
        etype, _fptr(x), ffi.from_buffer(out), rows, k, pool.ptr if pool is not None else ffi.NULL, threads
    )
    assert status == lib.RG_OK
    return out


@pytest.fixture(scope="module")
def pool4() -> Iterator[ggml.Pool]:
    pool = ggml.Pool(4)
    yield pool
    pool.close()


def run_mul_mat(
    w_bytes: np.ndarray,
    dtype: DType,
    k: int,
    m: int,
    x: np.ndarray,
    threads: int = 1,
    transposed_x: bool = False,
) -> np.ndarray:
    """ctx.mul_mat(quantized weights (m, k), x (t, k)) -> (t, m)."""
    with ggml.Context(32 << 20, threads=max(threads, 1)) as ctx:
        wt = ctx.external(w_bytes, engine_type=int(dtype), ne=[k, m])
        if transposed_x:
            # the same values through a strided view: the kernel reads rows with a stride
            xt = ctx.transpose(ctx.tensor(np.ascontiguousarray(x.T)))
        else:
            xt = ctx.tensor(x)
        y = ctx.mul_mat(wt, xt)
        ctx.graph([y]).compute(threads)
        return y.numpy().copy()


# ---- data sets ----------------------------------------------------------------------------------------


def datasets(k: int = 256) -> dict[str, np.ndarray]:
    """Float32 matrices (rows, k) that exercise every branch of the §5.3 rules."""
    rng = np.random.default_rng(1234)
    rows = 6
    sets: dict[str, np.ndarray] = {
        "randn": rng.standard_normal((rows, k)),
        "uniform_pos": rng.uniform(0.0, 3.0, (rows, k)),
        "zeros": np.zeros((rows, k)),
        "neg_zeros": -np.zeros((rows, k)),
        "const_pos": np.full((rows, k), 0.37),
        "const_neg": np.full((rows, k), -1.25),
        "one_hot": np.eye(rows, k) * -3.0,
        # codes landing exactly on .5 before truncation / roundf's halfway cases
        "halfway": np.tile(np.arange(-16, 16, dtype=np.float64) / 2.0, (rows, k // 32)),
        "tiny": rng.standard_normal((rows, k)) * 1e-30,
        "subnormal": rng.standard_normal((rows, k)) * 1e-41,  # d subnormal, 1/d overflows
        "huge": rng.standard_normal((rows, k)) * 1e37,
        "near_max": rng.choice([-3.0e38, 3.0e38, 1.0, -2.0], size=(rows, k)),  # max - min overflows
        "mixed_scales": rng.standard_normal((rows, k))
        * 10.0 ** rng.integers(-20, 20, size=(rows, k // 32)).repeat(32, axis=1),
    }
    with np.errstate(over="ignore"):
        return {name: a.astype(F32) for name, a in sets.items()}


DATASETS = datasets()


# ---- quantizer: byte-exact ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_quantizer_bytes_equal_reference(dtype: DType, name: str) -> None:
    x = DATASETS[name]
    with np.errstate(all="ignore"):  # huge/subnormal sets overflow on purpose inside the reference
        want = quantize_ref(x, dtype)
    got = encode(x, int(dtype))
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"{dtype.name}/{name}: {len(bad)} bytes differ, first at row {bad[0][0]} byte {bad[0][1]}: "
        f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}"
    )


@pytest.mark.parametrize("dtype", [*QTYPES, DType.F16, ACT], ids=[*QIDS, "F16", "Q8_ACT"])
@pytest.mark.parametrize("shape", [(1, 32 * 1000), (7, 96), (33, 512), (130, 64), (600, 32)])
def test_quantize_rows_threads_equal_single(pool4: ggml.Pool, dtype: int, shape: tuple[int, int]) -> None:
    x = np.random.default_rng(shape[0]).standard_normal(shape).astype(F32)
    single = quantize_rows(x, int(dtype), 1, None)
    for threads in (2, 3, 4):
        assert np.array_equal(quantize_rows(x, int(dtype), threads, pool4), single), f"{threads} threads"
    if dtype == DType.F16:
        assert np.array_equal(single.view(np.float16), x.astype(np.float16))
    elif dtype == ACT:  # activation rows are converted row by row
        assert all(np.array_equal(single[r], act_bytes(x[r])) for r in range(shape[0]))
    else:
        assert np.array_equal(single, quantize_ref(x, DType(dtype)))


def test_quantize_rows_errors(pool4: ggml.Pool) -> None:
    x = np.zeros((2, 64), dtype=F32)
    out = np.zeros(1024, dtype=np.uint8)

    def call(etype: int, rows: int, k: int, pool: object, threads: int) -> int:
        return int(lib.rg_quantize_rows(etype, _fptr(x), ffi.from_buffer(out), rows, k, pool, threads))

    assert call(int(DType.Q4_0), 2, 64, ffi.NULL, 1) == lib.RG_OK
    assert call(5, 2, 64, ffi.NULL, 1) == lib.RG_E_TYPE  # Q4_2: removed format
    assert call(int(lib.RG_TYPE_I32), 2, 64, ffi.NULL, 1) == lib.RG_E_UNSUPPORTED
    assert call(int(DType.Q8_0), 2, 48, ffi.NULL, 1) == lib.RG_E_SHAPE  # not a multiple of 32
    assert call(int(DType.Q8_0), -1, 64, ffi.NULL, 1) == lib.RG_E_SHAPE
    assert call(int(DType.Q8_0), 2, 64, ffi.NULL, 2) == lib.RG_E_ARG  # threads without a pool
    assert call(int(DType.Q8_0), 2, 64, pool4.ptr, 5) == lib.RG_E_ARG  # more threads than the pool
    assert call(int(DType.Q8_0), 2, 64, pool4.ptr, 0) == lib.RG_E_ARG
    assert call(int(DType.Q8_0), 0, 64, ffi.NULL, 1) == lib.RG_OK  # nothing to do


# ---- dequantization and round trip --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_dequantize_equals_reference(dtype: DType) -> None:
    rng = np.random.default_rng(7)
    k, rows = 128, 9
    quantized = quantize_ref(rng.standard_normal((rows, k)).astype(F32) * 3, dtype)
    # arbitrary bytes too (every code pattern), with the f16 scales forced finite
    raw = rng.integers(0, 256, size=quantized.shape, dtype=np.uint8)
    blocks = raw.reshape(-1, dtype.type_size)
    scales = rng.uniform(-2.0, 2.0, size=(blocks.shape[0], 2)).astype("<f2")
    n_scales = 2 if dtype in HAS_MIN else 1
    blocks[:, : 2 * n_scales] = scales[:, :n_scales].view(np.uint8).reshape(-1, 2 * n_scales)
    for data in (quantized, raw):
        got = decode(data, int(dtype), rows * k)
        want = dequantize_ref(data, dtype, (k, rows)).reshape(-1)
        assert np.array_equal(got, want)


def round_trip_bound(x: np.ndarray, dtype: DType) -> np.ndarray:
    """Per-element bound on |dequant(quant(x)) - x| for blocks of normal magnitude (formats.md §5.3).

    h = 2^-11 is the f16 relative rounding of the stored d (and m). Rounding to the nearest code gives
    d/2; the _0 types' asymmetric range clamps the largest positive code, an error of up to d; the stored
    d is off by h|d| per unit of code; the _1 types' minimum by h|min|; plus a few f32 ulps.
    """
    h = 2.0**-11
    b = x.reshape(-1, QK).astype(np.float64)
    amax = np.abs(b).max(axis=1)
    if dtype == DType.Q8_0:
        d = amax / 127
        bound = d * (0.5 + 127 * h)
    elif dtype in (DType.Q4_0, DType.Q5_0):
        levels = 8 if dtype == DType.Q4_0 else 16
        d = amax / levels
        bound = d * (1.0 + 2 * levels * h)
    else:
        top = 15 if dtype == DType.Q4_1 else 31
        mn, mx = b.min(axis=1), b.max(axis=1)
        d = (mx - mn) / top
        bound = d * (0.5 + top * h) + np.abs(mn) * h
    bound = bound + 4 * np.finfo(F32).eps * amax
    return np.repeat(bound, QK).reshape(x.shape)


@pytest.mark.parametrize("name", ["randn", "uniform_pos", "const_neg", "one_hot", "halfway", "mixed_scales"])
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_round_trip_error_bound(dtype: DType, name: str) -> None:
    x = DATASETS[name]
    if name == "mixed_scales":
        # scales from 0.1 to 1000 per block: the stored d stays in f16's normal range, where the bound's
        # relative rounding holds (the byte-exact test above covers the extreme scales)
        rng = np.random.default_rng(5)
        x = (
            rng.standard_normal(x.shape)
            * 10.0 ** rng.integers(-1, 4, size=(x.shape[0], x.shape[1] // QK)).repeat(QK, axis=1)
        ).astype(F32)
    y = decode(encode(x, int(dtype)), int(dtype), x.size).reshape(x.shape)
    err = np.abs(y.astype(np.float64) - x)
    bound = round_trip_bound(x, dtype)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"{dtype.name}/{name}: error {err[worst]:.3g} > bound {bound[worst]:.3g}"


# ---- the activation rows (§5.4) ------------------------------------------------------------------------


def act_positions(nb: int) -> np.ndarray:
    """Byte offset of code e of block b in an activation row: pairs interleaved by halves (quant.h)."""
    b = np.arange(nb)[:, None]
    e = np.arange(QK)[None, :]
    pos = 64 * (b // 2) + np.where(e < 16, 16 * (b % 2) + e, 32 + 16 * (b % 2) + (e - 16))
    if nb % 2:
        pos[nb - 1] = 32 * (nb - 1) + np.arange(QK)
    return pos


def act_emulate(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ggml's x86 activation quantization per 32-block: codes, d, s (f16-rounded, as f32) and sum q."""
    b = x.reshape(-1, QK).astype(F32)
    amax = np.abs(b).max(axis=1)
    d = (amax / F32(127)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, F32(127) / np.where(amax != 0, amax, F32(1)), F32(0)).astype(F32)
    q = np.clip(np.rint((b * inv[:, None]).astype(F32)), -128, 127).astype(np.int32)
    total = q.sum(axis=1)
    with np.errstate(over="ignore"):  # |d sum q| >= 65520 is inf in f16, in C too
        d_r = d.astype(np.float16).astype(F32)
        s_r = (d * total.astype(F32)).astype(F32).astype(np.float16).astype(F32)
    return q, d_r, s_r, total


def act_bytes(x: np.ndarray) -> np.ndarray:
    q, d, s, total = act_emulate(x)
    nb = q.shape[0]
    qs = np.zeros(32 * nb, dtype=np.int8)
    qs[act_positions(nb)] = q
    return np.concatenate(
        [qs.view(np.uint8), d.view(np.uint8), s.view(np.uint8), total.astype("<i4").view(np.uint8)]
    )


@pytest.mark.parametrize("k", [32, 96, 256, 800])
def test_activation_rows_match_emulation(simd_level: int, k: int) -> None:
    rng = np.random.default_rng(k)
    rows = [
        rng.standard_normal(k) * 3,
        rng.uniform(-1, 1, k) * 1e-3,
        np.zeros(k),
        # amax 127 makes the factor 127/amax exactly 1, so x.5 values are halfway cases (half to even)
        np.tile(np.concatenate([[127.0], np.arange(-15, 16) + 0.5]), k // 32),
        rng.standard_normal(k) * 10.0 ** rng.integers(-6, 6, size=k // 32).repeat(32),
        rng.standard_normal(k) * 1e9,  # d = amax / 127 beyond f16: inf, as in ggml
        rng.standard_normal(k) * 1e-9,
    ]  # d below f16's subnormals: 0
    assert row_bytes(ACT, k) == k // 32 * ACT_BYTES
    for x in rows:
        x = x.astype(F32)
        got = encode(x[None, :], ACT)[0]
        assert np.array_equal(got, act_bytes(x)), f"level {simd_level}"
        q, d, _, _ = act_emulate(x)
        with np.errstate(invalid="ignore"):  # 0 * inf where d overflowed
            want = (q.astype(F32) * d[:, None]).reshape(-1)
        assert np.array_equal(decode(got, ACT, k), want, equal_nan=True)


# ---- mul_mat ------------------------------------------------------------------------------------------


def emulate_mul_mat(
    w_bytes: np.ndarray, dtype: DType, k: int, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """formats.md §5.4 in numpy: y[t, m] = sum_b f32(d_w d_x) isum + m_w s_x, exact integer isum.

    Returns the sum (f64) and the sum of the terms' magnitudes, which scales the f32 rounding error of
    any summation order: |error| <= (n_blocks + small) * 2^-24 * magnitude.
    """
    m_rows = w_bytes.shape[0]
    nb = k // QK
    codes = block_codes(w_bytes, dtype).reshape(m_rows, nb, QK) - OFFSET[dtype]
    dw, mw = block_scales(w_bytes, dtype)
    dw = dw.reshape(m_rows, nb)
    y = np.zeros((x.shape[0], m_rows))
    mag = np.zeros_like(y)
    for t in range(x.shape[0]):
        q, dx, sx, _ = act_emulate(x[t])
        isum = np.einsum("mbe,be->mb", codes.astype(np.int64), q.astype(np.int64)).astype(np.float64)
        terms = (dw * dx[None, :]).astype(F32).astype(np.float64) * isum
        mag[t] = np.abs(terms).sum(axis=1)
        if mw is not None:
            ms = (mw.reshape(m_rows, nb) * sx[None, :]).astype(F32).astype(np.float64)
            terms = terms + ms
            mag[t] += np.abs(ms).sum(axis=1)
        y[t] = terms.sum(axis=1)
    return y, mag


def rounding_tol(k: int, mag: np.ndarray) -> np.ndarray:
    return (k // QK + 8) * 2.0**-24 * mag + 1e-30


def weights_for(dtype: DType, m: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((m, k)).astype(F32)
    if dtype in HAS_MIN:
        w += rng.uniform(-1, 1, size=(m, 1)).astype(F32)  # a nonzero minimum: the m * s term matters
    return quantize_ref(w, dtype)


@pytest.mark.parametrize("k", [32, 96, 512, 800, 1056])
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_mul_mat_matches_ggml_arithmetic(simd_level: int, dtype: DType, k: int) -> None:
    m = 37
    w = weights_for(dtype, m, k, seed=k)
    rng = np.random.default_rng(k + 1)
    for t in (1, 3, 4, 9, 17, 40):
        x = rng.standard_normal((t, k)).astype(F32)
        got = run_mul_mat(w, dtype, k, m, x)
        want, mag = emulate_mul_mat(w, dtype, k, x)
        err = np.abs(got - want)
        tol = rounding_tol(k, mag)
        assert np.all(err <= tol), f"T={t}: max err/tol {np.max(err / tol):.3g}"


@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_mul_mat_levels_agree(dtype: DType) -> None:
    k, m = 1056, 45  # 33 blocks: full groups, a partial group and an odd last block
    w = weights_for(dtype, m, k, seed=3)
    x = np.random.default_rng(4).standard_normal((6, k)).astype(F32)
    _, mag = emulate_mul_mat(w, dtype, k, x)
    previous = ggml.simd_level()
    try:
        results = {}
        for level in range(ggml.simd_max_level() + 1):
            assert ggml.simd_select(level) == level
            results[level] = run_mul_mat(w, dtype, k, m, x)
            # the activation quantizer of every level is bit-identical
            xq = encode(x, ACT)
            if level == 0:
                xq0 = xq
            assert np.array_equal(xq, xq0), f"activation rows differ at level {level}"
    finally:
        ggml.simd_select(previous)
    for level, y in results.items():
        assert np.all(np.abs(y - results[0]) <= 2 * rounding_tol(k, mag)), f"level {level} vs scalar"


@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_mul_mat_within_activation_quantization_bound(dtype: DType) -> None:
    """Against f32 (f64) W_deq @ x with unquantized x.

    Quantizing x block-wise costs, per element, |x - fp16(d') q| <= d'/2 + 127 d' 2^-11 = 0.5625 d' with
    d' = amax_b / 127 (rounding to the nearest code, then the f16 rounding of d). The _1 types' m * s
    term uses s = fp16(d' sum q) instead of fp16(d') sum q: at most |m| |sum q| d' 2^-10 <= |m| amax_b / 32.
    So |y - W_deq x| <= sum_b (sum_e |w_e|) 0.5625 amax_b / 127 (+ |m_b| amax_b / 32) + f32 rounding.
    """
    k, m = 512, 40
    w = weights_for(dtype, m, k, seed=11)
    w_deq = dequantize_ref(w, dtype, (k, m)).astype(np.float64)
    x = np.random.default_rng(12).standard_normal((3, k)).astype(F32)
    got = run_mul_mat(w, dtype, k, m, x)
    want = x.astype(np.float64) @ w_deq.T
    amax = np.abs(x.reshape(3, -1, QK)).max(axis=2).astype(np.float64)  # (t, nb)
    wabs = np.abs(w_deq).reshape(m, -1, QK).sum(axis=2)  # (m, nb)
    bound = 0.5625 / 127 * amax @ wabs.T
    _, mins = block_scales(w, dtype)
    if mins is not None:
        bound += amax @ np.abs(mins.reshape(m, -1).astype(np.float64)).T / 32
    bound += 1e-5 * np.abs(x).astype(np.float64) @ np.abs(w_deq).T
    err = np.abs(got - want)
    assert np.all(err <= bound), f"max err/bound {np.max(err / bound):.3g}"
    assert np.max(err / bound) > 0.01  # the bound is not vacuous: the error is really there


@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_mul_mat_threads_bit_identical(dtype: DType, threads: int) -> None:
    k, m = 800, 67
    w = weights_for(dtype, m, k, seed=5)
    for t in (1, 5):
        x = np.random.default_rng(6 + t).standard_normal((t, k)).astype(F32)
        single = run_mul_mat(w, dtype, k, m, x, threads=1)
        assert np.array_equal(run_mul_mat(w, dtype, k, m, x, threads=threads), single)


@pytest.mark.parametrize("t_cols", [4, 9, 40])
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_mul_mat_columns_equal_mat_vec(simd_level: int, dtype: DType, t_cols: int) -> None:
    """A T-column product equals T mat-vecs. Up to 9 columns the one-row kernels (weights unpacked once
    for up to 8 activation rows) add the blocks in the mat-vec's order: bit for bit. From 10 columns on,
    with AVX512_VNNI, the column-panel kernels add the same f32 terms in another order: within rounding."""
    k, m = 800, 21
    w = weights_for(dtype, m, k, seed=13)
    x = np.random.default_rng(14).standard_normal((t_cols, k)).astype(F32)
    together = run_mul_mat(w, dtype, k, m, x)
    _, mag = emulate_mul_mat(w, dtype, k, x)
    panel_route = t_cols >= 10 and quant_panel_kernels(int(dtype))
    for t in range(x.shape[0]):
        alone = run_mul_mat(w, dtype, k, m, x[t : t + 1])[0]
        if panel_route:
            assert np.all(np.abs(alone - together[t]) <= 2 * rounding_tol(k, mag[t])), f"column {t}"
        else:
            assert np.array_equal(alone, together[t]), f"column {t}"


@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_mul_mat_strided_and_broadcast_activations(dtype: DType) -> None:
    k, m, t = 96, 19, 5
    w = weights_for(dtype, m, k, seed=8)
    x = np.random.default_rng(9).standard_normal((t, k)).astype(F32)
    want, mag = emulate_mul_mat(w, dtype, k, x)
    got = run_mul_mat(w, dtype, k, m, x, transposed_x=True)
    assert np.all(np.abs(got - want) <= rounding_tol(k, mag))
    # batched activations (2 planes) against one weight plane
    with ggml.Context(16 << 20) as ctx:
        wt = ctx.external(w, engine_type=int(dtype), ne=[k, m])
        xb = np.stack([x, x[::-1]])
        y = ctx.mul_mat(wt, ctx.tensor(xb))
        ctx.graph([y]).compute()
        got_b = y.numpy()
    assert got_b.shape == (2, t, m)
    assert np.array_equal(got_b[0], got) and np.array_equal(got_b[1], got[::-1])


def _guarded_buffer(nbytes: int) -> tuple[np.ndarray, mmap.mmap]:
    """A writable uint8 array whose last byte is followed by an inaccessible page."""
    page = mmap.PAGESIZE
    body = (nbytes + page - 1) // page * page
    region = mmap.mmap(-1, body + page)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    assert libc.mprotect(base + body, page, 0) == 0, "mprotect failed"
    return np.frombuffer(region, dtype=np.uint8, count=nbytes, offset=body - nbytes), region


@pytest.mark.parametrize("k", [64, 96, 1056])
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_kernels_stay_inside_the_weights(simd_level: int, dtype: DType, k: int) -> None:
    m = 3
    w = weights_for(dtype, m, k, seed=k)
    guarded, region = _guarded_buffer(w.nbytes)
    guarded[:] = w.reshape(-1)
    # an odd start address: block scales are read unaligned
    odd = np.zeros(w.nbytes + 1, dtype=np.uint8)[1:]
    odd[:] = w.reshape(-1)
    for t in (5, 9):  # the one-row kernels, and the panel kernels' partial tile (with AVX512_VNNI)
        x = np.random.default_rng(2).standard_normal((t, k)).astype(F32)
        want, mag = emulate_mul_mat(w, dtype, k, x)
        got = run_mul_mat(guarded.reshape(w.shape), dtype, k, m, x)
        assert np.all(np.abs(got - want) <= rounding_tol(k, mag))
        assert np.array_equal(run_mul_mat(odd.reshape(w.shape), dtype, k, m, x), got)
    del guarded, region  # the mapping goes with its last reference


@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_get_rows_of_quantized_table(dtype: DType) -> None:
    k, v = 64, 10
    table = weights_for(dtype, v, k, seed=1)
    ids = np.array([3, 0, 9, 3], dtype=np.int32)
    with ggml.Context(8 << 20) as ctx:
        y = ctx.get_rows(ctx.external(table, engine_type=int(dtype), ne=[k, v]), ctx.tensor(ids))
        ctx.graph([y]).compute()
        got = y.numpy()
    assert np.array_equal(got, dequantize_ref(table, dtype, (k, v))[ids])


@pytest.mark.parametrize("dtype", [DType.Q4_0, DType.Q5_1, DType.Q8_0], ids=["Q4_0", "Q5_1", "Q8_0"])
def test_mul_mat_many_tiles_in_blocks(dtype: DType) -> None:
    """Enough rows that each thread's tiles form several blocks of tiles (and a partial last one), and
    enough k for several k-blocks: the panel route keeps a block's outputs while the k-blocks pass.
    Matches the ggml-arithmetic emulation within rounding, every thread count bit for bit."""
    k, m, t = 1056, 1000, 300
    w = weights_for(dtype, m, k, seed=21)
    x = np.random.default_rng(22).standard_normal((t, k)).astype(F32)
    got = run_mul_mat(w, dtype, k, m, x, threads=2)
    want, mag = emulate_mul_mat(w, dtype, k, x)
    assert np.all(np.abs(got - want) <= rounding_tol(k, mag))
    for threads in (1, 3):
        assert np.array_equal(run_mul_mat(w, dtype, k, m, x, threads=threads), got), f"{threads} threads"
