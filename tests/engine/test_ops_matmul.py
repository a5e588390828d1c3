"""mul_mat (ops_matmul.c and the dot kernels of simd/) against PyTorch.

``ctx.mul_mat(a, b)`` with numpy shapes a (..., M, K) and b (..., T, K) is ``b @ a.T`` (PyTorch:
``torch.matmul(b, a.transpose(-1, -2))``), a broadcast over the batch dims where its size is 1.

Tolerance: a dot product's rounding error scales with the norms of its operands, not with its result
(which may cancel to ~0), so each output element must satisfy |err| <= 1e-5 * ||a_row|| * ||b_row||
against the f64 product of the same values. F16 weights enter the reference already rounded to f16, so
the check isolates the kernel from the (intended) weight rounding. Covered: mat-vec and mat-mat with
T = 1, 2, 3, 4, 5, 17, 64, 100 (from 8 columns on, with AVX-512, the column-panel kernels: partial
panels and tiles, several panel groups, k walked in blocks), K = 1, 7, 33, 4097, F32 and F16 weights,
batched 3-D/4-D operands with a
broadcast, transposed / permuted / padded b (which the kernel packs or reads with a row stride), padded a
rows, 1/2/4 threads (bit-identical) and every SIMD level.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rwkv_ggml import ggml

from .helpers import assert_norm_close, bits_equal, rand, run_engine

TOL = 1e-5
KS = [1, 7, 33, 4097]
TS = [1, 2, 3, 4, 5, 17, 64, 100]
WTYPES = [np.float32, np.float16]
WTYPE_IDS = ["f32", "f16"]


def _mul_mat(c: ggml.Context, a: ggml.Tensor, b: ggml.Tensor) -> ggml.Tensor:
    return c.mul_mat(a, b)


def reference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact product of the given (f16-rounded) values in f64, and each element's error bound scale."""
    a64 = torch.from_numpy(a.astype(np.float64))
    b64 = torch.from_numpy(b.astype(np.float64))
    want = torch.matmul(b64, a64.transpose(-1, -2)).numpy()
    norm_a = np.linalg.norm(a.astype(np.float64), axis=-1)  # (..., M)
    norm_b = np.linalg.norm(b.astype(np.float64), axis=-1)  # (..., T)
    bound = norm_b[..., :, None] * norm_a[..., None, :]
    return want, np.broadcast_to(bound, want.shape)


def check_mul_mat(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    *,
    threads: int = 1,
    layouts: tuple[str, str] = ("contiguous", "contiguous"),
) -> np.ndarray:
    got = run_engine(_mul_mat, [a, b], threads=threads, layouts=list(layouts))
    want, bound = reference(a, b)
    assert_norm_close(got, want, bound, tol=TOL, name=name)
    return got


def _m_for(k: int) -> int:
    return 5 if k > 1000 else 13


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("t", TS)
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat(k: int, t: int, wtype: type, threads: int) -> None:
    a = rand((_m_for(k), k), seed=k, dtype=wtype)
    b = rand((t, k), seed=k + t)
    check_mul_mat(f"mul_mat/{'f16' if wtype is np.float16 else 'f32'}", a, b, threads=threads)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("t", [1, 4, 5, 17])
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat_every_simd_level(k: int, t: int, wtype: type, simd_level: int) -> None:
    a = rand((_m_for(k), k), seed=2 * k, dtype=wtype)
    b = rand((t, k), seed=3 * k + t)
    check_mul_mat(f"mul_mat/{'f16' if wtype is np.float16 else 'f32'}", a, b, threads=2)


@pytest.mark.parametrize("k", [15, 16, 17, 31, 32, 33, 63, 64, 65, 100])
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat_lane_boundaries(k: int, wtype: type, simd_level: int) -> None:
    """Row lengths around the 8/16-lane vectors and the 32/64-element unrolled loops of the kernels."""
    a = rand((6, k), seed=k, dtype=wtype)
    for t in (1, 4, 6):
        check_mul_mat("mul_mat/lanes", a, rand((t, k), seed=k + t), threads=1)


def test_mul_mat_vector_b() -> None:
    """A 1-D b (one token) gives a (1, M) result."""
    a = rand((9, 33), seed=1)
    b = rand((33,), seed=2)
    got = run_engine(_mul_mat, [a, b])
    want, bound = reference(a, b[None, :])
    assert_norm_close(got, want, bound, tol=TOL, name="mul_mat/f32")


# (a shape, b shape): batches over dims 2 and 3, a broadcast where its size is 1.
BATCHED = [
    ((3, 6, 33), (3, 5, 33)),
    ((1, 6, 33), (3, 5, 33)),
    ((1, 6, 7), (2, 1, 7)),
    ((2, 3, 6, 33), (2, 3, 4, 33)),
    ((1, 3, 6, 33), (2, 3, 4, 33)),
    ((2, 1, 6, 33), (2, 3, 4, 33)),
    ((1, 1, 6, 17), (2, 3, 17, 17)),
]


@pytest.mark.parametrize(
    "shapes", BATCHED, ids=lambda s: "{}-{}".format("x".join(map(str, s[0])), "x".join(map(str, s[1])))
)
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat_batched(shapes: tuple[tuple[int, ...], tuple[int, ...]], wtype: type, threads: int) -> None:
    a_shape, b_shape = shapes
    a = rand(a_shape, seed=len(a_shape) + a_shape[0], dtype=wtype)
    b = rand(b_shape, seed=sum(b_shape))
    check_mul_mat("mul_mat/batched", a, b, threads=threads)


@pytest.mark.parametrize("b_layout", ["transposed", "padded", "permuted"])
@pytest.mark.parametrize("t", [1, 3, 4, 17])
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat_non_contiguous_b(b_layout: str, t: int, wtype: type, threads: int) -> None:
    a = rand((2, 7, 33), seed=t, dtype=wtype)
    b = rand((2, t, 33), seed=t + 1)
    check_mul_mat("mul_mat/strided-b", a, b, threads=threads, layouts=("contiguous", b_layout))


@pytest.mark.parametrize("t", [1, 5])
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat_padded_a_rows(t: int, wtype: type) -> None:
    """Weight rows that are contiguous but spaced wider than K (a view into a larger matrix)."""
    a = rand((11, 37), seed=3, dtype=wtype)
    b = rand((t, 37), seed=4)
    check_mul_mat("mul_mat/padded-a", a, b, threads=2, layouts=("padded", "contiguous"))


def test_mul_mat_non_contiguous_b_broadcast_a() -> None:
    a = rand((1, 6, 33), seed=5, dtype=np.float16)
    b = rand((3, 5, 33), seed=6)
    check_mul_mat("mul_mat/strided-b", a, b, threads=2, layouts=("contiguous", "transposed"))


@pytest.mark.parametrize("t", [1, 17])
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat_identical_for_every_thread_count(t: int, wtype: type) -> None:
    a = rand((37, 4097), seed=8, dtype=wtype)
    b = rand((t, 4097), seed=9)
    ref = run_engine(_mul_mat, [a, b], threads=1)
    for n in (2, 3, 4):
        assert bits_equal(run_engine(_mul_mat, [a, b], threads=n), ref), f"{n} threads differ from 1 (T={t})"


def test_mul_mat_cancellation_is_bounded_by_norms() -> None:
    """Rows whose products nearly cancel: the result is tiny, its error still bounded by the norms."""
    k = 4097
    b = rand((3, k), seed=10)
    a = np.stack([b[0], -b[0], b[1] + 1e-3 * b[2]]).astype(np.float32)
    a[1, -1] += 1e-4
    check_mul_mat("mul_mat/cancel", a, b, threads=2)


def test_mul_mat_large_dynamic_range_f16() -> None:
    """F16 weights spanning the half range (subnormals to 60000) against small and large activations."""
    k = 257
    r = np.random.default_rng(12)
    mags = 2.0 ** r.uniform(-24, 15.8, size=(4, k))
    a = (mags * np.where(r.random((4, k)) < 0.5, -1, 1)).astype(np.float16)
    b = (r.standard_normal((5, k)) * 2.0 ** r.uniform(-10, 10, size=(5, 1))).astype(np.float32)
    check_mul_mat("mul_mat/f16-range", a, b, threads=2)


def _bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even), returned as float64."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


@pytest.mark.skipif(
    not ggml.cpu_features()["avx512_bf16"] or ggml.simd_max_level() < 2, reason="this CPU has no AVX512_BF16"
)
@pytest.mark.parametrize("wtype", [np.float32, np.float16])
@pytest.mark.parametrize("k, t", [(1, 2), (33, 7), (64, 6), (777, 13), (2048, 64), (4097, 100)])
def test_mul_mat_bf16_computes_with_bf16_operands(wtype: type, k: int, t: int) -> None:
    """rg_mul_mat_bf16: the exact sum of bf16-rounded products, accumulated in f32."""
    ggml.simd_select(ggml.simd_max_level())
    rng = np.random.default_rng(k + t)
    w = rng.standard_normal((37, k)).astype(wtype)
    x = rng.standard_normal((t, k)).astype(np.float32)
    with ggml.Context(threads=2) as ctx:
        y = ctx.mul_mat(ctx.tensor(w), ctx.tensor(x), bf16=True)
        ctx.graph([y]).compute()
        got = y.numpy()
    want = _bf16_round(x) @ _bf16_round(w.astype(np.float32)).T
    scale = np.abs(_bf16_round(x)) @ np.abs(_bf16_round(w.astype(np.float32))).T
    assert np.all(np.abs(got - want) <= 1e-6 * scale + 1e-30)


def test_mul_mat_bf16_falls_back_to_f32() -> None:
    """T = 1, quantized weights or a CPU without AVX512_BF16: the same numbers as rg_mul_mat."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 64)).astype(np.float32)
    level = ggml.simd_level()
    try:
        for lvl in sorted({0, 1, ggml.simd_max_level()}):
            ggml.simd_select(lvl)
            for t in (1, 5):
                x = rng.standard_normal((t, 64)).astype(np.float32)
                with ggml.Context(threads=1) as ctx:
                    wt, xt = ctx.tensor(w), ctx.tensor(x)
                    a, b = ctx.mul_mat(wt, xt), ctx.mul_mat(wt, xt, bf16=True)
                    ctx.graph([a, b]).compute()
                    if t == 1 or lvl < 2 or not ggml.cpu_features()["avx512_bf16"]:
                        np.testing.assert_array_equal(a.numpy(), b.numpy())
    finally:
        ggml.simd_select(level)


@pytest.mark.parametrize("bf16", [False, True], ids=["f32-acc", "bf16"])
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat_panel_kernels_stay_inside_the_weights(wtype: type, bf16: bool) -> None:
    """The column-panel routes (T >= 8) read weight rows in place or a k-block at a time: against weights
    that end right before an inaccessible page, and at an odd start address (as in a mapped file), the
    result is the same."""
    from .test_quant_engine import _guarded_buffer

    if bf16 and not (ggml.cpu_features()["avx512_bf16"] and ggml.simd_level() >= 2):
        pytest.skip("this CPU has no AVX512_BF16")
    k, m = 777, 13  # two full tiles of 6 rows and a partial one; k-blocks with a tail
    w = rand((m, k), seed=21, dtype=wtype)
    x = rand((9, k), seed=22)
    engine_type = ggml.F32 if wtype is np.float32 else ggml.F16
    raw = w.view(np.uint8).reshape(-1)

    def run(buf: np.ndarray) -> np.ndarray:
        with ggml.Context(32 << 20, threads=2) as ctx:
            y = ctx.mul_mat(ctx.external(buf, engine_type=engine_type, ne=[k, m]), ctx.tensor(x), bf16=bf16)
            ctx.graph([y]).compute(2)
            return y.numpy().copy()

    want = run(raw.copy())
    guarded, region = _guarded_buffer(raw.nbytes)
    guarded[:] = raw
    assert bits_equal(run(guarded), want)
    odd = np.zeros(raw.nbytes + 1, dtype=np.uint8)[1:]
    odd[:] = raw
    assert bits_equal(run(odd), want)
    if not bf16:
        ref, bound = reference(w, x)
        assert_norm_close(want, ref, bound, tol=TOL, name="mul_mat/panel")
    del guarded, region


@pytest.mark.parametrize("rows", [1, 7, 1001, 4099])
def test_mat_vec_row_claims_cover_every_row_for_any_thread_count(rows: int) -> None:
    """Mat-vec rows are claimed per thread part (rg_claim_parts) with up to 8 threads and from one shared
    counter beyond: every row computed exactly once, whatever the thread count (odd ones split unevenly),
    and the same bits as one thread."""
    w = rand((rows, 96), 5).astype(np.float16)
    x = rand((1, 96), 6)
    want = (w.astype(np.float64) @ x[0].astype(np.float64)).astype(np.float32)
    results = {}
    for threads in (1, 2, 3, 5, 8, 9, 12):
        with ggml.Context(1 << 20, threads=threads) as ctx:
            out = ctx.mul_mat(ctx.external(w, constant=True), ctx.tensor(x))
            ctx.graph([out]).compute()  # a row no thread computes would stay 0
            results[threads] = out.numpy()[0].copy()
    np.testing.assert_allclose(results[1], want, rtol=1e-4, atol=1e-5)
    for threads, got in results.items():
        assert bits_equal(got, results[1]), f"{threads} threads"


@pytest.mark.parametrize("bf16", [False, True], ids=["f32", "bf16"])
@pytest.mark.parametrize("wtype", WTYPES, ids=WTYPE_IDS)
def test_mul_mat_panel_blocks_of_tiles(wtype: type, bf16: bool) -> None:
    """1000 rows x 300 columns: each thread's tiles form several blocks (the panel routes keep a block
    of tiles' outputs while the k-blocks of the panels pass) with a partial last block, over several
    k-blocks. Against float64 (bf16: on bf16-rounded operands), and 1 and 3 threads bit for bit."""
    if bf16 and (not ggml.cpu_features()["avx512_bf16"] or ggml.simd_max_level() < 2):
        pytest.skip("this CPU has no AVX512_BF16")
    rng = np.random.default_rng(31)
    w = rng.standard_normal((1000, 300)).astype(wtype)
    x = rng.standard_normal((300, 300)).astype(np.float32)
    results = {}
    for threads in (1, 2, 3):
        with ggml.Context(64 << 20, threads=threads) as ctx:
            y = ctx.mul_mat(ctx.tensor(w), ctx.tensor(x), bf16=bf16)
            ctx.graph([y]).compute()
            results[threads] = y.numpy()
    wf, xf = w.astype(np.float32), x
    if bf16:
        want = _bf16_round(xf) @ _bf16_round(wf).T
        scale = np.abs(_bf16_round(xf)) @ np.abs(_bf16_round(wf)).T
    else:
        want = xf.astype(np.float64) @ wf.astype(np.float64).T
        scale = np.abs(xf.astype(np.float64)) @ np.abs(wf.astype(np.float64)).T
    assert np.all(np.abs(results[2] - want) <= 1e-5 * scale + 1e-30)
    for threads in (1, 3):
        assert bits_equal(results[threads], results[2]), f"{threads} threads"
