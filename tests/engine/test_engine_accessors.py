"""The engine's small accessors (rwkv_ggml.h) that the Python layer does not wrap, each against what it
reports on: the type table against the file format's, the pool's size, a context's tensor count and a
graph's planned work size."""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib
from rwkv_ggml.fileformat import DType

from .test_quant_engine import encode


def test_type_table_agrees_with_the_file_format() -> None:
    for dt in DType:
        assert lib.rg_type_is_valid(int(dt)), dt.name
        assert lib.rg_type_block_size(int(dt)) == dt.block_size, dt.name
        assert lib.rg_type_block_bytes(int(dt)) == dt.type_size, dt.name
    assert lib.rg_type_is_valid(lib.RG_TYPE_I32) and lib.rg_type_block_bytes(lib.RG_TYPE_I32) == 4
    for bad in (-1, 4, 5, 6, 10, 1000):  # unused ids answer "invalid" and size 0
        assert not lib.rg_type_is_valid(bad)
        assert lib.rg_type_block_size(bad) == 0 and lib.rg_type_block_bytes(bad) == 0


def test_pool_n_threads() -> None:
    for n in (1, 3):
        pool = ggml.Pool(n)
        try:
            assert lib.rg_pool_n_threads(pool.ptr) == n
        finally:
            pool.close()
    assert lib.rg_pool_n_threads(ffi.NULL) == 0


def test_context_counts_its_tensors() -> None:
    with ggml.Context(1 << 20) as ctx:
        assert lib.rg_ctx_n_tensors(ctx.ptr) == 0
        a = ctx.tensor(np.ones(4, np.float32))
        ctx.add(a, ctx.tensor(np.ones(4, np.float32)))
        assert lib.rg_ctx_n_tensors(ctx.ptr) == 3
    assert lib.rg_ctx_n_tensors(ffi.NULL) == 0


def test_graph_work_size_holds_the_quantized_activations() -> None:
    """A quantized mul_mat quantizes its T activation rows into the work buffer first (Q8 activation rows of
    44 bytes per 32 elements), so the planned work size is at least that."""
    k, m, t = 256, 8, 5
    with ggml.Context(8 << 20) as ctx:
        w = ctx.external(np.zeros((m, k // 32 * 34), np.uint8), engine_type=ggml.Q8_0, ne=[k, m])
        y = ctx.mul_mat(w, ctx.tensor(np.ones((t, k), np.float32)))
        g = ctx.graph([y])
        assert lib.rg_graph_work_size(g._ptr) >= t * int(lib.rg_type_row_bytes(lib.RG_TYPE_Q8_ACT, k))
    assert lib.rg_graph_work_size(ffi.NULL) == 0


# byte offsets of the f16 scales in a 256-element K-quant block (formats.md)
K_QUANT_SCALES = {"Q4_K": (0, 2), "Q6_K": (208,)}


@pytest.mark.parametrize("etype", ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_1", "Q4_K", "Q6_K"])
def test_graph_work_size_covers_every_level(etype: str) -> None:
    """The kernel level may change between building a graph and computing it (simd_select), so a
    mul_mat's planned work must hold what every route of every level needs for its shape: a quantized
    graph built at the AVX2 level (whose panel kernels take only some types without AVX-VNNI) and then
    computed at AVX-512 once overran its work buffer. Same size whatever the level at build time, and the
    same result as a graph built at the level it computes at."""
    levels = list(range(ggml.simd_max_level() + 1))
    k, m = 512, 24
    et = int(getattr(lib, f"RG_TYPE_{etype}"))
    w = np.empty((m, int(lib.rg_type_row_bytes(et, k))), np.uint8)
    if etype in K_QUANT_SCALES:  # no quantizer for these: random blocks with small finite f16 scales
        w[:] = np.random.default_rng(1).integers(0, 256, w.shape, dtype=np.uint8)
        blocks = w.reshape(m, k // 256, -1)
        for off in K_QUANT_SCALES[etype]:
            blocks[:, :, off : off + 2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    else:
        w[:] = encode(np.random.default_rng(1).uniform(-1, 1, (m, k)), et)
    before = ggml.simd_level()
    try:
        for t in (1, 4, 8, 12, 17, 33, 64):
            x = np.random.default_rng(t).uniform(-1, 1, (t, k)).astype(np.float32)
            with ggml.Context(32 << 20, threads=2) as ctx:
                y = ctx.mul_mat(ctx.external(w, engine_type=et, ne=[k, m]), ctx.tensor(x))
                graphs = []
                for lv in levels:
                    ggml.simd_select(lv)
                    graphs.append(ctx.graph([y]))
                sizes = [int(lib.rg_graph_work_size(g._ptr)) for g in graphs]
                assert len(set(sizes)) == 1, f"T={t}: work size by build level {sizes}"
                for lv in levels:  # every graph computed at every level equals the one built there
                    ggml.simd_select(lv)
                    outs = []
                    for g in graphs:
                        g.compute(2)
                        outs.append(y.numpy().copy())
                    for built, out in zip(levels, outs, strict=True):
                        assert np.array_equal(out, outs[lv]), f"T={t}: built at {built}, computed at {lv}"
    finally:
        ggml.simd_select(before)


def test_cpu_features_are_the_header_bits() -> None:
    """ggml.cpu_features reads the RG_CPU_* names of rwkv_ggml.h; the levels follow from them."""
    features = ggml.cpu_features()
    assert list(features) == [
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "amx_int8",
    ]
    bits = int(lib.rg_cpu_features())
    assert bits == sum(int(getattr(lib, "RG_CPU_" + n.upper())) for n, on in features.items() if on)
    level1 = all(features[n] for n in ("avx2", "fma", "f16c"))
    level2 = level1 and all(features[n] for n in ("avx512f", "avx512bw", "avx512vl"))
    assert ggml.simd_max_level() == (2 if level2 else 1 if level1 else 0)
