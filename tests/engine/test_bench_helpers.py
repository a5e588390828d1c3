"""The benchmark helpers of rwkv_ggml_bench.h count what they do (timing is the caller's business):
rg_bench_peak returns the multiply-add operations it ran, 0 where the CPU lacks the unit, -1 for bad
arguments."""

from __future__ import annotations

import pytest

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib

# (kind, ops per iteration per thread, the CPU feature it needs beyond AVX-512)
KINDS = [
    (lib.RG_PEAK_F32, 8 * 16 * 2, None),
    (lib.RG_PEAK_BF16, 12 * 16 * 4, "avx512_bf16"),
    (lib.RG_PEAK_INT8, 12 * 16 * 8, "avx512_vnni"),
]


def peak_ops(kind: int, iters: int, threads: int) -> float:
    pool = ggml.Pool(threads)
    try:
        return float(lib.rg_bench_peak(kind, iters, pool.ptr, threads))
    finally:
        pool.close()


@pytest.mark.parametrize("kind, ops, feature", KINDS, ids=["f32", "bf16", "int8"])
def test_peak_counts_its_operations(kind: int, ops: int, feature: str | None) -> None:
    if ggml.simd_level() < 2:  # the level in effect: 0 under RWKV_GGML_FORCE_SCALAR=1
        pytest.skip("counts below are for the AVX-512 loops")
    has_unit = feature is None or ggml.cpu_features()[feature]
    if not has_unit and kind == lib.RG_PEAK_INT8:
        # AVX-512 without AVX512_VNNI (Skylake-SP) keeps the AVX2 integer kernels, so the peak is theirs
        ops = dict(AVX2_KINDS)[kind]
        has_unit = True
    assert peak_ops(kind, 1000, 2) == (2 * 1000 * ops if has_unit else 0.0)


# at the AVX2 level: 8 chains of 8-lane FMAs; 12 chains of 32 int8 multiply-adds (vpdpbusd with AVX-VNNI,
# else vpmaddubsw + vpmaddwd); no bf16 unit
AVX2_KINDS = [(lib.RG_PEAK_F32, 8 * 8 * 2), (lib.RG_PEAK_BF16, 0), (lib.RG_PEAK_INT8, 12 * 32 * 2)]


@pytest.mark.parametrize("kind, ops", AVX2_KINDS, ids=["f32", "bf16", "int8"])
def test_peak_counts_its_operations_at_the_avx2_level(kind: int, ops: int) -> None:
    if ggml.simd_level() < 1:
        pytest.skip("no AVX2 (or RWKV_GGML_FORCE_SCALAR=1)")
    previous = ggml.simd_level()
    ggml.simd_select(1)
    try:
        assert peak_ops(kind, 1000, 2) == 2 * 1000 * ops
    finally:
        ggml.simd_select(previous)


def test_peak_rejects_bad_arguments() -> None:
    pool = ggml.Pool(2)
    try:
        assert lib.rg_bench_peak(7, 10, pool.ptr, 2) == -1.0
        assert lib.rg_bench_peak(lib.RG_PEAK_F32, -1, pool.ptr, 2) == -1.0
        assert lib.rg_bench_peak(lib.RG_PEAK_F32, 10, pool.ptr, 0) == -1.0
        assert lib.rg_bench_peak(lib.RG_PEAK_F32, 10, ffi.NULL, 2) == -1.0
    finally:
        pool.close()
