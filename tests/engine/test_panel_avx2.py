"""The AVX2 level's column-panel kernels (simd/k_gemm_panel_avx2.c; simd/k_quant_panel_avx2.c with
AVX-VNNI and, through ggml.cpu_mask, as on a CPU without it): mul_mat of many columns at level 1 against
the float64 product, for odd shapes (partial tiles of rows, partial panels of columns, several groups of
panels, k walked in blocks with a tail), every thread count (bit-identical), and bit for bit against the
AVX-512 level where the CPU has it (each output lane is one multiply-add chain over k in order at both
levels).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml.fileformat import DType

from .helpers import assert_norm_close, bits_equal, cpu_without, rand
from .test_ops_matmul import TOL, reference
from .test_quant_engine import QIDS, QTYPES, emulate_mul_mat, rounding_tol, run_mul_mat, weights_for

pytestmark = pytest.mark.skipif(ggml.simd_max_level() < 1, reason="this CPU has no AVX2")

# (M, K, T): M around the 6-row tiles, K around the 128-element k-blocks, T from the first panel size on
# (33) through partial panels and more than one group of 4 panels (100, 131)
SHAPES = [(1, 7, 33), (5, 128, 33), (7, 129, 47), (13, 300, 64), (19, 257, 100), (12, 33, 131), (6, 1, 40)]


def mul_mat_at(level: int, w: np.ndarray, x: np.ndarray, threads: int) -> np.ndarray:
    previous = ggml.simd_level()
    ggml.simd_select(level)
    try:
        with ggml.Context(64 << 20, threads=threads) as ctx:
            y = ctx.mul_mat(ctx.tensor(w), ctx.tensor(x))
            ctx.graph([y]).compute()
            return y.numpy().copy()
    finally:
        ggml.simd_select(previous)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{k}xT{t}" for m, k, t in SHAPES])
@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_avx2_float_panels_against_float64(shape: tuple[int, int, int], wtype: type, threads: int) -> None:
    m, k, t = shape
    w = rand((m, k), seed=m * 7 + k, dtype=wtype)
    x = rand((t, k), seed=t * 3 + k)
    got = mul_mat_at(1, w, x, threads)
    want, bound = reference(w, x)
    assert_norm_close(got, want, bound, tol=TOL, name="mul_mat/panel-avx2")
    assert bits_equal(got, mul_mat_at(1, w, x, 1)), "thread count changed the result"


@pytest.mark.skipif(ggml.simd_max_level() < 2, reason="no AVX-512 level to compare with")
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{k}xT{t}" for m, k, t in SHAPES])
@pytest.mark.parametrize("wtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_avx2_float_panels_equal_the_avx512_panels(shape: tuple[int, int, int], wtype: type) -> None:
    """The AVX2 kernel computes the same chains as the AVX-512 one (and not the f32 tiles' k-lane sums)."""
    m, k, t = shape
    w = rand((m, k), seed=m + k, dtype=wtype)
    x = rand((t, k), seed=t + 5 * k)
    assert bits_equal(mul_mat_at(1, w, x, 2), mul_mat_at(2, w, x, 2))


# ---- the block types (k_quant_panel_avx2.c, with AVX-VNNI) ----
# (M, K, T): M around the 12-row tiles, K around the 16-block k-steps of the route (512 = 16 blocks) with
# odd block counts, T from the first panel size (10) through partial panels and pairs of panels (33)
QSHAPES = [(1, 32, 10), (13, 96, 16), (12, 512, 17), (25, 544, 33), (7, 1056, 40)]
NARROW_4BIT_MAX_T = 16  # RG_QNARROW_4BIT_MAX_T in ops_matmul.c
avx_vnni = pytest.mark.skipif(not ggml.cpu_features()["avx_vnni"], reason="this CPU has no AVX-VNNI")


def quant_mul_mat_at(
    level: int, w: np.ndarray, dtype: DType, k: int, m: int, x: np.ndarray, threads: int
) -> np.ndarray:
    previous = ggml.simd_level()
    ggml.simd_select(level)
    try:
        return run_mul_mat(w, dtype, k, m, x, threads=threads)
    finally:
        ggml.simd_select(previous)


@avx_vnni
@pytest.mark.parametrize("shape", QSHAPES, ids=[f"{m}x{k}xT{t}" for m, k, t in QSHAPES])
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_avx2_quant_panels_against_the_block_arithmetic(
    shape: tuple[int, int, int], dtype: DType, threads: int
) -> None:
    """formats.md §5.4 in float64 with exact integer sums: the kernel differs only by f32 rounding."""
    m, k, t = shape
    w = weights_for(dtype, m, k, seed=m + k)
    x = np.random.default_rng(t + k).standard_normal((t, k)).astype(np.float32)
    got = quant_mul_mat_at(1, w, dtype, k, m, x, threads)
    want, mag = emulate_mul_mat(w, dtype, k, x)
    assert np.all(np.abs(got - want) <= 2 * rounding_tol(k, mag)), "beyond f32 rounding"
    assert bits_equal(got, quant_mul_mat_at(1, w, dtype, k, m, x, 1)), "thread count changed the result"


@avx_vnni
@pytest.mark.skipif(
    ggml.simd_max_level() < 2 or not ggml.cpu_features()["avx512_vnni"], reason="no AVX512_VNNI panels"
)
@pytest.mark.parametrize("shape", QSHAPES, ids=[f"{m}x{k}xT{t}" for m, k, t in QSHAPES])
@pytest.mark.parametrize("dtype", QTYPES, ids=QIDS)
def test_avx2_quant_panels_equal_the_avx512_panels(shape: tuple[int, int, int], dtype: DType) -> None:
    """The same integer sums and the same f32 operations in the same order as the AVX512_VNNI kernel (and
    not the one-row kernels' order)."""
    m, k, t = shape
    w = weights_for(dtype, m, k, seed=3 * m + k)
    x = np.random.default_rng(2 * t + k).standard_normal((t, k)).astype(np.float32)
    with cpu_without("amx_int8"):  # Q8_0 takes the AMX route before the panels where the CPU has it
        assert bits_equal(
            quant_mul_mat_at(1, w, dtype, k, m, x, 2), quant_mul_mat_at(2, w, dtype, k, m, x, 2)
        )


# ---- the block types without AVX-VNNI (vpmaddubsw + vpmaddwd; ggml.cpu_mask hides AVX-VNNI) ----
# Q4_0 and Q5_0 take the panels there; the other types keep the one-row kernels.
PANEL_TYPES = [DType.Q4_0, DType.Q5_0]
ROW_TYPES = [t for t in QTYPES if t not in PANEL_TYPES]


def saturating_q8_0(m: int, k: int, seed: int) -> np.ndarray:
    """Q8_0 weights whose codes are all -128, -127 or 127: against activations quantized to +-127 every
    vpmaddubsw pair of the panels' unsigned (+128) activations would saturate."""
    w = weights_for(DType.Q8_0, m, k, seed=seed).reshape(m, k // 32, 34).copy()
    codes = np.random.default_rng(seed).choice(
        np.array([0x80, 0x81, 0x7F], dtype=np.uint8), size=(m, k // 32, 32)
    )
    w[:, :, 2:] = codes
    return w.reshape(m, -1)


def case(dtype: DType | str, m: int, k: int, t: int) -> tuple[DType, np.ndarray, np.ndarray]:
    if dtype == "Q5_0_extreme":
        # every code -16 (qs and qh all zero bits) against activations at +127 (255 in the panels): each
        # vpmaddubsw pair is -8160, and more than 4 slots of them would leave the i16 range
        w = weights_for(DType.Q5_0, m, k, seed=m + k).reshape(m, k // 32, 22).copy()
        w[:, :, 2:] = 0
        return DType.Q5_0, w.reshape(m, -1), np.ones((t, k), dtype=np.float32)
    if dtype == "Q8_0_extreme":
        x = np.where(np.random.default_rng(t).random((t, k)) < 0.5, -1.0, 1.0).astype(np.float32)
        return DType.Q8_0, saturating_q8_0(m, k, seed=m * k), x
    assert isinstance(dtype, DType)
    x = np.random.default_rng(t + k).standard_normal((t, k)).astype(np.float32)
    return dtype, weights_for(dtype, m, k, seed=m + k), x


@pytest.mark.parametrize("shape", QSHAPES, ids=[f"{m}x{k}xT{t}" for m, k, t in QSHAPES])
@pytest.mark.parametrize(
    "dtype", [*QTYPES, "Q5_0_extreme", "Q8_0_extreme"], ids=[*QIDS, "Q5_0_extreme", "Q8_0_extreme"]
)
def test_avx2_quant_without_avx_vnni_against_the_block_arithmetic(
    shape: tuple[int, int, int], dtype: DType | str, threads: int
) -> None:
    m, k, t = shape
    qtype, w, x = case(dtype, m, k, t)
    with cpu_without("avx_vnni"):
        assert not ggml.cpu_features()["avx_vnni"]
        got = quant_mul_mat_at(1, w, qtype, k, m, x, threads)
        one = quant_mul_mat_at(1, w, qtype, k, m, x, 1)
    want, mag = emulate_mul_mat(w, qtype, k, x)
    assert np.all(np.abs(got - want) <= 2 * rounding_tol(k, mag)), "beyond f32 rounding"
    assert bits_equal(got, one), "thread count changed the result"


@pytest.mark.parametrize("shape", QSHAPES, ids=[f"{m}x{k}xT{t}" for m, k, t in QSHAPES])
@pytest.mark.parametrize("dtype", PANEL_TYPES, ids=[t.name for t in PANEL_TYPES])
def test_avx2_quant_panels_without_avx_vnni_equal_the_vnni_panels(
    shape: tuple[int, int, int], dtype: DType
) -> None:
    """Exact integer sums (the i16 pair sums never saturate), so the same bits as the AVX-VNNI kernel and
    the AVX512_VNNI one, whichever this CPU has (not the one-row kernels' order, nor the narrow panels',
    which take up to NARROW_4BIT_MAX_T columns at the AVX-512 level)."""
    m, k, t = shape
    qtype, w, x = case(dtype, m, k, t)
    with cpu_without("avx_vnni"):
        got = quant_mul_mat_at(1, w, qtype, k, m, x, 2)
    features = ggml.cpu_features()
    if features["avx_vnni"]:
        assert bits_equal(got, quant_mul_mat_at(1, w, qtype, k, m, x, 2)), "differs from the AVX-VNNI kernel"
    if ggml.simd_max_level() >= 2 and features["avx512_vnni"] and t > NARROW_4BIT_MAX_T:
        assert bits_equal(got, quant_mul_mat_at(2, w, qtype, k, m, x, 2)), (
            "differs from the AVX512_VNNI kernel"
        )


@pytest.mark.parametrize(
    "dtype", [*ROW_TYPES, "Q8_0_extreme"], ids=[*(t.name for t in ROW_TYPES), "Q8_0_extreme"]
)
def test_avx2_other_types_without_avx_vnni_keep_the_one_row_kernels(dtype: DType | str) -> None:
    """Q4_1, Q5_1 and Q8_0 are not in the AVX2 panels' types without AVX-VNNI: 16 columns add the blocks in
    the mat-vec's order, each column equal to its own product bit for bit."""
    m, k, t = 13, 544, 16
    qtype, w, x = case(dtype, m, k, t)
    with cpu_without("avx_vnni"):
        together = quant_mul_mat_at(1, w, qtype, k, m, x, 2)
        for c in range(t):
            assert bits_equal(together[c], quant_mul_mat_at(1, w, qtype, k, m, x[c : c + 1], 1)[0]), (
                f"column {c}"
            )


# ---- the feature mask itself ----


def test_cpu_mask_hides_features_and_the_levels_follow() -> None:
    before = ggml.simd_level()
    try:
        assert ggml.cpu_mask(["avx_vnni"])["avx_vnni"] is False
        assert ggml.simd_level() == before, "hiding AVX-VNNI keeps the level"
        ggml.cpu_mask(["avx2"])
        assert ggml.simd_max_level() == 0 and ggml.simd_level() == 0, "no AVX2, no level 1"
    finally:
        ggml.cpu_mask([])
    assert ggml.simd_level() == before


def test_cpu_mask_rejects_unknown_names_and_a_string() -> None:
    with pytest.raises(ValueError, match="unknown CPU feature 'avx9'"):
        ggml.cpu_mask(["avx9"])
    with pytest.raises(TypeError, match="list of feature names"):
        ggml.cpu_mask("avx_vnni")


def test_cpu_mask_environment_variable_at_start_up() -> None:
    """RWKV_GGML_CPU_MASK hides features before the kernel table is first filled (unknown names ignored)."""
    code = (
        "from rwkv_ggml import ggml; f = ggml.cpu_features(); "
        "print(f['avx_vnni'], f['avx2'], ggml.simd_level())"
    )
    env = {**os.environ, "RWKV_GGML_CPU_MASK": "avx_vnni,avx2,no_such_feature"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "0"]
