"""mul_mat throughput beside the machine's memory read bandwidth and FMA peak, measured in the same run.

Mat-vec (one activation column, per-token inference) is bound by memory bandwidth: the figure of merit
is the weight bytes streamed per second against the read bandwidth of the same pages. Mat-mat (64
columns, prompt ingestion) is bound by arithmetic: GFLOP/s against the FMA peak.

    python benchmarks/matmul.py [--threads 1 2] [--columns 64] [--types f32 f16 q8_0 ...]
                                [--shapes 2048x2048] [--level 1] [--torch]

'% unit' is the share of the peak of the unit the product runs on: the F32 FMA peak for float weights
(the bf16 dot peak with +bf16), the int8 dot peak for the block types (vpdpbusd, or vpmaddubsw +
vpmaddwd on AVX2 without AVX-VNNI). --level 1 forces the AVX2 kernels on an AVX-512 machine (and torch
to AVX2 too); --torch adds torch's fp32 matmul of the same shape and columns (its own threads set to
the same count) and our rate over its rate.

The weights of each case are replicated until they span 512 MB, far beyond the caches, and every
compute reads a different copy, so the numbers are memory numbers, not cache numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import anonymous_buffer, cpu_name, fma_peak, read_bandwidth, select_level

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib

# (out, in): rows x row length of the weight, as in an nn.Linear weight; names after RWKV shapes
SHAPES = [(2048, 2048), (3072, 768), (8192, 2048), (2048, 8192)]
# "+bf16": the opt-in bf16 mat-mat route (rg_mul_mat_bf16; mat-vec is unaffected)
TYPES = {
    "f32": ggml.F32,
    "f16": ggml.F16,
    "f32+bf16": ggml.F32,
    "f16+bf16": ggml.F16,
    "q8_0": ggml.Q8_0,
    "q5_1": ggml.Q5_1,
    "q5_0": ggml.Q5_0,
    "q4_1": ggml.Q4_1,
    "q4_0": ggml.Q4_0,
}


def encode(weights: np.ndarray, etype: int) -> np.ndarray:
    """The weights in the engine's storage format, as raw bytes (uint8 rows)."""
    rows, k = weights.shape
    row_bytes = int(lib.rg_type_row_bytes(etype, k))
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    src = np.ascontiguousarray(weights, dtype=np.float32)
    status = lib.rg_type_from_f32(
        etype, ffi.cast("float *", ffi.from_buffer(src)), ffi.from_buffer(out), rows * k
    )
    if status != 0:
        raise RuntimeError(f"type {etype} cannot be encoded here (status {status})")
    return out


def bench_case(
    pool: ggml.Pool,
    out_dim: int,
    in_dim: int,
    etype: int,
    columns: int,
    threads_list: list[int],
    budget_bytes: int = 512 << 20,
    bf16: bool = False,
) -> dict[int, tuple[float, float]]:
    """For each thread count: (seconds per mul_mat, read bandwidth in GB/s measured right after it).

    Both are best-of-several. The bandwidth is re-measured per case because on shared machines it
    drifts over minutes; a ratio of two numbers taken seconds apart is what stays meaningful."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((out_dim, in_dim)).astype(np.float32) / np.sqrt(in_dim)
    enc = encode(w, etype)
    # Mat-vec reads every weight once, so its copies must overflow the caches; mat-mat is compute-bound.
    copies = max(2, budget_bytes // enc.nbytes) if columns == 1 else 2
    buf = anonymous_buffer(copies * enc.nbytes, huge=True)
    all_w = np.frombuffer(buf, dtype=np.uint8).reshape(copies, *enc.shape)
    all_w[:] = enc
    x = rng.standard_normal((columns, in_dim)).astype(np.float32)
    results: dict[int, tuple[float, float]] = {}
    # per graph: the output, its node list and its work buffer (activation copies, weight tiles)
    mem = (
        (16 << 20) + copies * (4 * out_dim * columns + 6 * in_dim * columns + 64 * in_dim + 65536) + x.nbytes
    )
    with ggml.Context(mem, pool=pool) as ctx:
        xt = ctx.tensor(x)
        graphs = [
            ctx.graph(
                [ctx.mul_mat(ctx.external(all_w[i], engine_type=etype, ne=[in_dim, out_dim]), xt, bf16=bf16)]
            )
            for i in range(copies)
        ]
        for threads in threads_list:
            for g in graphs:
                g.compute(threads)
            best = float("inf")
            passes = 0
            t_end = time.perf_counter() + 1.0
            while passes < 3 or (time.perf_counter() < t_end and passes < 30):
                t0 = time.perf_counter()
                for g in graphs:
                    g.compute(threads)
                best = min(best, (time.perf_counter() - t0) / copies)
                passes += 1
            results[threads] = (best, read_bandwidth(pool, threads, nbytes=256 << 20, repeats=5))
    return results


def torch_seconds(out_dim: int, in_dim: int, columns: int, threads: int) -> float:
    """Best seconds of torch's fp32 x @ w.T (the nn.Linear product) of the same shape."""
    import torch

    torch.set_num_threads(threads)
    w = torch.randn(out_dim, in_dim) / in_dim**0.5
    x = torch.randn(columns, in_dim)
    out = torch.empty(columns, out_dim)
    torch.matmul(x, w.T, out=out)
    best = float("inf")
    passes = 0
    t_end = time.perf_counter() + 1.0
    while passes < 3 or (time.perf_counter() < t_end and passes < 30):
        t0 = time.perf_counter()
        torch.matmul(x, w.T, out=out)
        best = min(best, time.perf_counter() - t0)
        passes += 1
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--columns", type=int, default=64, help="activation columns of the mat-mat cases (1: none)"
    )
    ap.add_argument("--types", nargs="+", default=["f32", "f16"], choices=list(TYPES))
    ap.add_argument("--shapes", nargs="+", default=None, help="OUTxIN weight shapes (default: the RWKV ones)")
    ap.add_argument(
        "--level", type=int, default=None, help="cap the SIMD level (0 scalar, 1 AVX2, 2 AVX-512)"
    )
    ap.add_argument("--torch", action="store_true", help="also time torch's fp32 matmul of each mat-mat case")
    args = ap.parse_args()
    select_level(args.level)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes] if args.shapes else SHAPES
    pool = ggml.Pool(max(args.threads))
    print(
        f"{cpu_name()}; SIMD level {ggml.simd_level()} ({['scalar', 'AVX2', 'AVX-512'][ggml.simd_level()]})"
    )
    if args.torch:
        import torch

        print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    bw = {t: read_bandwidth(pool, t) for t in args.threads}
    peak = {t: fma_peak(pool, t) for t in args.threads}
    peak_bf16 = {t: fma_peak(pool, t, kind="bf16") for t in args.threads}
    peak_int8 = {t: fma_peak(pool, t, kind="int8") for t in args.threads}
    for t in args.threads:
        print(
            f"{t} thread(s): memory read {bw[t]:.1f} GB/s (2 MiB pages), peaks (G-ops/s): "
            f"F32 FMA {peak[t]:.0f}, bf16 dot {peak_bf16[t]:.0f}, int8 dot {peak_int8[t]:.0f}"
        )
    print()
    print("(% of bw: against the read bandwidth re-measured right after each case)")
    print(
        f"{'case':<28}{'threads':>8}{'time':>11}{'GB/s':>9}{'% of bw':>9}{'GFLOP/s':>9}"
        f"{'% peak':>8}{'% unit':>8}" + (f"{'torch':>9}{'ours/torch':>11}" if args.torch else "")
    )
    for name in args.types:
        etype = TYPES[name]
        bf16 = name.endswith("+bf16")
        float_weights = etype in (ggml.F32, ggml.F16)
        for out_dim, in_dim in shapes:
            for cols in sorted({1, args.columns}):  # --columns 1: mat-vec only
                try:
                    res = bench_case(pool, out_dim, in_dim, etype, cols, args.threads, bf16=bf16)
                except RuntimeError as exc:
                    print(f"{name} {out_dim}x{in_dim}: skipped ({exc})")
                    break
                wbytes = int(lib.rg_type_row_bytes(etype, in_dim)) * out_dim
                for t, (sec, bw_now) in res.items():
                    gbs = wbytes / sec / 1e9
                    gflops = 2 * out_dim * in_dim * cols / sec / 1e9
                    unit = (peak_bf16 if bf16 else peak if float_weights else peak_int8)[t]
                    unit_share = f"{100 * gflops / unit:>7.0f}%" if unit > 0 else f"{'-':>8}"
                    label = f"{name} {out_dim}x{in_dim} T={cols}"
                    line = (
                        f"{label:<28}{t:>8}{sec * 1e6:>9.0f}us{gbs:>9.1f}{100 * gbs / bw_now:>8.0f}%"
                        f"{gflops:>9.1f}{100 * gflops / peak[t]:>7.0f}%{unit_share}"
                    )
                    if args.torch and cols > 1:
                        tsec = torch_seconds(out_dim, in_dim, cols, t)
                        line += f"{2 * out_dim * in_dim * cols / tsec / 1e9:>9.1f}{tsec / sec:>10.2f}x"
                    print(line, flush=True)
    pool.close()


if __name__ == "__main__":
    main()
