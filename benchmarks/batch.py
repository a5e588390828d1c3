"""Batched decode throughput: one token for each of B sequences per step (Model.eval_batch on a StateBank),
tokens/s and ms per step for each B, with the achieved GFLOP/s beside the machine's F32 FMA and int8 dot
peaks measured in the same run, and plain per-token ``Model.eval`` as the B = 1 reference.

    python benchmarks/batch.py --models v4-169m v7-0.1b --formats F16 Q8_0 --batch 1 2 4 8 16 --threads 2

Random weights are generated once into ~/.cache/rwkv_ggml_bench (RWKV_GGML_BENCH_CACHE overrides). On a
shared machine the numbers are noisy: each entry is the median step of ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import fma_peak
from models import SHAPES, model_file

from rwkv_ggml import Model, ggml
from rwkv_ggml.batch import StateBank
from rwkv_ggml.fileformat import read_model_file


def matrix_params(path: Path) -> int:
    """Weights multiplied per token: every 2-D tensor but the embedding (a row lookup); the head included,
    since every sequence of a step gets its logits."""
    with read_model_file(path) as mf:
        return sum(int(np.prod(r.ne)) for n, r in mf.tensors.items() if len(r.ne) == 2 and n != "emb.weight")


def median_step(step, steps: int, warm_up: int = 3) -> float:
    for _ in range(warm_up):  # graph build, first touches, thread wake-up
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def eval_rate(m: Model, steps: int) -> float:
    """Median seconds of one plain per-token eval (the B = 1 reference)."""
    rng = np.random.default_rng(0)
    state = m.init_state()
    logits = np.empty(m.n_vocab, dtype=np.float32)

    def step() -> None:
        m.eval(int(rng.integers(m.n_vocab)), state, state_out=state, logits_out=logits)

    return median_step(step, steps)


def batch_step(m: Model, B: int, steps: int) -> float:
    """Median seconds of one eval_batch step of B sequences in a bank of B slots."""
    rng = np.random.default_rng(B)
    bank = StateBank(m, B)
    slots = [bank.allocate() for _ in range(B)]
    logits = np.empty((B, m.n_vocab), dtype=np.float32)

    def step() -> None:
        bank.eval_batch(rng.integers(0, m.n_vocab, B), slots, logits_out=logits)

    return median_step(step, steps)


def row(
    name: str,
    fmt: str,
    B: str,
    sec: float,
    n_tokens: int,
    base_rate: float,
    flops_per_token: int,
    unit: float,
) -> str:
    gflops = n_tokens * flops_per_token / sec / 1e9
    rate = n_tokens / sec
    return (
        f"{name:<10}{fmt:<8}{B:>4}{1e3 * sec:>10.2f}{rate:>10.1f}{rate / base_rate:>7.2f}"
        f"{gflops:>9.1f}{100 * gflops / unit:>7.0f}%"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v4-169m", "v7-0.1b"], choices=list(SHAPES))
    ap.add_argument("--formats", nargs="+", default=["F16", "Q8_0", "Q4_0"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    pool = ggml.Pool(args.threads)
    peaks = {kind: fma_peak(pool, args.threads, kind=kind) for kind in ("f32", "int8")}
    pool.close()
    print(
        f"{args.threads} threads, SIMD level {ggml.simd_level()}, peaks (G-ops/s): "
        f"F32 FMA {peaks['f32']:.0f}, int8 dot {peaks['int8']:.0f}; "
        "'% unit': of the peak of the unit the products run on"
    )
    print(
        f"{'model':<10}{'format':<8}{'B':>4}{'ms/step':>10}{'tokens/s':>10}{'x eval':>7}{'GFLOP/s':>9}"
        f"{'% unit':>8}"
    )
    for name in args.models:
        for fmt in args.formats:
            path = model_file(name, fmt)
            flops_per_token = 2 * matrix_params(path)
            unit = peaks["f32"] if fmt in ("F32", "F16") else peaks["int8"]
            with Model(path, threads=args.threads) as m:
                sec = eval_rate(m, args.steps)
                base_rate = 1 / sec
                print(row(name, fmt, "eval", sec, 1, base_rate, flops_per_token, unit), flush=True)
                for B in args.batch:
                    sec = batch_step(m, B, args.steps)
                    print(row(name, fmt, str(B), sec, B, base_rate, flops_per_token, unit), flush=True)


if __name__ == "__main__":
    main()
