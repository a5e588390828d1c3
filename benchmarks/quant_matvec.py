"""Quantized mat-vec (per-token inference) against the memory bandwidth floor and the F16 path.

For each weight type the matrix is replicated until the copies span ``--budget`` MB (far beyond the
caches) and every compute reads a different copy, so the figure is memory throughput: weight bytes
streamed per second. The read bandwidth of the same kind of pages (2 MiB huge pages) is measured in the
same run with the engine's own pool, and so is the F16 path, so the ratios compare like with like. The
cases and the bandwidth probe run interleaved in rounds and the best of each is kept, so a noisy
neighbour on a shared machine hits them all alike.

    python benchmarks/quant_matvec.py [--shape 2048 8192] [--threads 1 2] [--types f16 q8_0 q4_0] [--level 1]

--level 1 forces the AVX2 kernels on an AVX-512 machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import anonymous_buffer, cpu_name, read_bandwidth, select_level

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib

TYPES = {
    "f32": ggml.F32,
    "f16": ggml.F16,
    "q8_0": ggml.Q8_0,
    "q5_1": ggml.Q5_1,
    "q5_0": ggml.Q5_0,
    "q4_1": ggml.Q4_1,
    "q4_0": ggml.Q4_0,
}


def encode(weights: np.ndarray, etype: int) -> np.ndarray:
    """The weights in the engine's storage format as uint8 rows (quantized on 2 threads)."""
    rows, k = weights.shape
    out = np.empty((rows, int(lib.rg_type_row_bytes(etype, k))), dtype=np.uint8)
    src = np.ascontiguousarray(weights, dtype=np.float32)
    pool = ggml.Pool(2)
    status = lib.rg_quantize_rows(
        etype, ffi.cast("float *", ffi.from_buffer(src)), ffi.from_buffer(out), rows, k, pool.ptr, 2
    )
    pool.close()
    if status != 0:
        raise RuntimeError(f"type {etype} cannot be encoded (status {status})")
    return out


class Case:
    """One weight type: its copies in huge-page memory and one built graph per copy."""

    def __init__(self, pool: ggml.Pool, name: str, w: np.ndarray, budget: int) -> None:
        self.name = name
        etype = TYPES[name]
        out_dim, in_dim = w.shape
        enc = encode(w, etype)
        self.nbytes = enc.nbytes
        self.copies = max(2, budget // enc.nbytes)
        self.buf = anonymous_buffer(self.copies * enc.nbytes, huge=True)
        self.all_w = np.frombuffer(self.buf, dtype=np.uint8).reshape(self.copies, *enc.shape)
        self.all_w[:] = enc
        x = np.random.default_rng(1).standard_normal((1, in_dim)).astype(np.float32)
        self.ctx = ggml.Context(64 << 20, pool=pool)
        xt = self.ctx.tensor(x)
        self.graphs = [
            self.ctx.graph(
                [
                    self.ctx.mul_mat(
                        self.ctx.external(self.all_w[i], engine_type=etype, ne=[in_dim, out_dim]), xt
                    )
                ]
            )
            for i in range(self.copies)
        ]

    def seconds(self, threads: int) -> float:
        """Seconds per mat-vec over one pass through all copies."""
        t0 = time.perf_counter()
        for g in self.graphs:
            g.compute(threads)
        return (time.perf_counter() - t0) / self.copies

    def close(self) -> None:
        self.graphs.clear()
        self.ctx.close()
        del self.all_w
        self.buf.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=2, default=[2048, 8192], metavar=("OUT", "IN"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--types", nargs="+", default=["f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"], choices=list(TYPES)
    )
    ap.add_argument("--budget", type=int, default=256, help="MB of weight copies per type")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the best of each is kept")
    ap.add_argument(
        "--level", type=int, default=None, help="cap the SIMD level (0 scalar, 1 AVX2, 2 AVX-512)"
    )
    args = ap.parse_args()
    select_level(args.level)
    out_dim, in_dim = args.shape
    pool = ggml.Pool(max(args.threads))
    level = ggml.simd_level()
    print(
        f"{cpu_name()}; SIMD level {level} ({['scalar', 'AVX2', 'AVX-512'][level]}), "
        f"AVX512_VNNI: {ggml.cpu_features()['avx512_vnni']}, AVX-VNNI: {ggml.cpu_features()['avx_vnni']}"
    )
    w = np.random.default_rng(0).standard_normal((out_dim, in_dim)).astype(np.float32) / np.sqrt(in_dim)
    cases = [Case(pool, name, w, args.budget << 20) for name in args.types]
    # Rounds interleave every case and the bandwidth probe, so a noisy neighbour hits all of them alike.
    bw = dict.fromkeys(args.threads, 0.0)
    best = {(c.name, t): float("inf") for c in cases for t in args.threads}
    for _ in range(args.rounds):
        for t in args.threads:
            bw[t] = max(bw[t], read_bandwidth(pool, t, nbytes=512 << 20, repeats=1))
            for c in cases:
                c.seconds(t)  # warm: wake the pool, fault nothing new
                best[(c.name, t)] = min(best[(c.name, t)], c.seconds(t))
    print("memory read (2 MiB pages): " + ", ".join(f"{t} thr {bw[t]:.1f} GB/s" for t in args.threads))
    print(f"\n{out_dim}x{in_dim} mat-vec{'':<4}{'threads':>8}{'MB':>7}{'us':>9}{'GB/s':>8}{'x floor':>9}")
    for c in cases:
        for t in args.threads:
            sec = best[(c.name, t)]
            gbs = c.nbytes / sec / 1e9
            print(f"{c.name:<22}{t:>8}{c.nbytes / 1e6:>7.1f}{sec * 1e6:>9.0f}{gbs:>8.1f}{bw[t] / gbs:>9.2f}")
    for c in cases:
        c.close()
    pool.close()


if __name__ == "__main__":
    main()
