"""Batched decode throughput: one token for each of B sequences per step (Model.eval_batch on a StateBank),
tokens/s and ms per step for each B, with the achieved GFLOP/s beside the machine's F32 FMA and int8 dot
peaks measured in the same run, and plain per-token ``Model.eval`` as the B = 1 reference.

    python benchmarks/batch.py                                   # every shape, F16 Q8_0 Q4_0, B = 1..32
    python benchmarks/batch.py --quick                           # the small shapes, B = 1 4 16, fewer steps
    python benchmarks/batch.py --models v7-1.5b --formats Q8_0 --batch 1 8 32 --json out.json
    python benchmarks/batch.py --models v7-1.5b --formats Q8_0 --quantized-head   # head in Q8_0 too

Random weights are generated once into ~/.cache/rwkv_ggml_bench (RWKV_GGML_BENCH_CACHE overrides; the
1.5B shapes take ~12 GB there with their F32 sources). The machine is shared and noisy, so the steps are
measured in rounds: each round times ``eval`` and then every B, a few steps each, and a B's figures are the
medians over the rounds of its time and of its speed-up against that round's ``eval``. The speed-up is a
ratio within one round, so a slow round moves both sides.

'% peak' is the achieved rate against the arithmetic peak of the kernels the step runs: the quantized
matrices on the int8 dot units, the float ones (F16/F32, and the F16 head of a quantized file) on the F32
FMA units, so the ceiling of a step is flops_int8 / int8_peak + flops_float / f32_peak.

--quantized-head runs the block formats from files whose head is quantized too (``quantize(..., head=True)``,
written once beside the others as <shape>-<format>-qhead.bin), as llama.cpp's files of the same formats
have it; the default files keep the head F16 (rwkv.cpp's rule). Plain eval and eval_batch use the same head
either way, so a batch still equals separate evals.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name, fma_peak
from models import CACHE, SHAPES, model_file

from rwkv_ggml import Model, ggml
from rwkv_ggml.batch import StateBank
from rwkv_ggml.fileformat import DType, read_model_file
from rwkv_ggml.quantization import quantize

QUICK_MODELS = ["v4-169m", "v7-0.1b"]
QUICK_BATCH = [1, 4, 16]


@dataclass
class Result:
    model: str
    format: str
    batch: int  # 0: plain eval
    ms_per_step: float
    tokens_per_s: float
    x_eval: float
    gflops: float
    pct_peak: float


def matrix_flops(path: Path) -> tuple[int, int]:
    """Flops per token of the matrix products, (on block-quantized weights, on float weights): every 2-D
    tensor but the embedding (a row lookup), the head included, since every sequence of a step gets its
    logits."""
    quant = flt = 0
    with read_model_file(path) as mf:
        for name, rec in mf.tensors.items():
            if len(rec.ne) != 2 or name == "emb.weight":
                continue
            flops = 2 * int(np.prod(rec.ne))
            if DType(rec.dtype) in (DType.F32, DType.F16):
                flt += flops
            else:
                quant += flops
    return quant, flt


def quantized_head_file(name: str, fmt: str) -> Path:
    """The cached file of a shape in a block format with the head in that format too (F16 and F32 files are
    the plain ones)."""
    if fmt in ("F16", "F32"):
        return model_file(name, fmt)
    path = CACHE / f"{name}-{fmt}-qhead.bin"
    if not path.exists():
        quantize(model_file(name, "F16"), path, fmt, progress=False, head=True)
    return path


def time_steps(step: Callable[[], None], steps: int) -> float:
    """Median seconds of ``steps`` calls."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def eval_step(m: Model) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    state = m.init_state()
    logits = np.empty(m.n_vocab, dtype=np.float32)

    def step() -> None:
        m.eval(int(rng.integers(m.n_vocab)), state, state_out=state, logits_out=logits)

    return step


def batch_step(m: Model, B: int) -> tuple[StateBank, Callable[[], None]]:
    rng = np.random.default_rng(B)
    bank = StateBank(m, B)
    slots = [bank.allocate() for _ in range(B)]
    logits = np.empty((B, m.n_vocab), dtype=np.float32)

    def step() -> None:
        bank.eval_batch(rng.integers(0, m.n_vocab, B), slots, logits_out=logits)

    return bank, step


def measure(
    name: str, fmt: str, batches: list[int], args: argparse.Namespace, peaks: dict[str, float]
) -> list[Result]:
    path = quantized_head_file(name, fmt) if args.quantized_head else model_file(name, fmt)
    qflops, fflops = matrix_flops(path)
    # seconds per token at the peaks: the ceiling of the kernels this file's products run on
    ideal = qflops / (peaks["int8"] * 1e9) + fflops / (peaks["f32"] * 1e9)
    with Model(path, threads=args.threads) as m:
        steps: dict[int, Callable[[], None]] = {0: eval_step(m)}
        banks = []  # kept alive while their steps run
        for B in batches:
            bank, steps[B] = batch_step(m, B)
            banks.append(bank)
        for step in steps.values():  # graph builds, first touches, thread wake-up
            step()
            step()
        secs: dict[int, list[float]] = {k: [] for k in steps}
        ratios: dict[int, list[float]] = {k: [] for k in steps}
        for _ in range(args.rounds):
            base = time_steps(steps[0], args.steps)
            for k, step in steps.items():
                sec = base if k == 0 else time_steps(step, args.steps)
                secs[k].append(sec)
                ratios[k].append(max(k, 1) * base / sec)
        del banks
    results = []
    for k in steps:
        sec = statistics.median(secs[k])
        tokens = max(k, 1)
        results.append(
            Result(
                model=name,
                format=fmt + ("+qh" if args.quantized_head and fmt not in ("F16", "F32") else ""),
                batch=k,
                ms_per_step=1e3 * sec,
                tokens_per_s=tokens / sec,
                x_eval=statistics.median(ratios[k]),
                gflops=tokens * (qflops + fflops) / sec / 1e9,
                pct_peak=100 * tokens * ideal / sec,
            )
        )
    return results


def measure_peaks(threads: int) -> dict[str, float]:
    pool = ggml.Pool(threads)
    try:
        return {kind: fma_peak(pool, threads, kind=kind) for kind in ("f32", "int8")}
    finally:
        pool.close()


def row(r: Result) -> str:
    b = "eval" if r.batch == 0 else str(r.batch)
    return (
        f"{r.model:<10}{r.format:<8}{b:>5}{r.ms_per_step:>10.2f}{r.tokens_per_s:>10.1f}{r.x_eval:>8.2f}"
        f"{r.gflops:>9.1f}{r.pct_peak:>8.0f}%"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--formats", nargs="+", default=["F16", "Q8_0", "Q4_0"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="steps per B per round (median)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of eval + every B (median over rounds)")
    ap.add_argument(
        "--quick", action="store_true", help=f"{' '.join(QUICK_MODELS)}, B = {QUICK_BATCH}, 3 rounds"
    )
    ap.add_argument(
        "--quantized-head",
        action="store_true",
        help="block formats with the head quantized too (llama.cpp's way)",
    )
    ap.add_argument("--json", type=Path, help="also write the results and the peaks to this file")
    args = ap.parse_args()
    if args.quick:
        args.models, args.batch, args.rounds = QUICK_MODELS, QUICK_BATCH, 3
    if any(b < 1 for b in args.batch) or args.steps < 1 or args.rounds < 1:
        ap.error("--batch, --steps and --rounds take positive numbers")

    peaks = measure_peaks(args.threads)
    print(
        f"{cpu_name()}: {args.threads} threads, SIMD level {ggml.simd_level()}, peaks (G-ops/s): "
        f"F32 FMA {peaks['f32']:.0f}, int8 dot {peaks['int8']:.0f}\n"
        "'x eval': tokens/s against plain eval in the same round; '% peak': of the kernels' arithmetic peak"
    )
    print(
        f"{'model':<10}{'format':<8}{'B':>5}{'ms/step':>10}{'tokens/s':>10}{'x eval':>8}"
        f"{'GFLOP/s':>9}{'% peak':>9}"
    )
    results: list[Result] = []
    for name in args.models:
        for fmt in args.formats:
            for r in measure(name, fmt, args.batch, args, peaks):
                results.append(r)
                print(row(r), flush=True)
    after = measure_peaks(args.threads)  # the machine may have got busier or quieter meanwhile
    print(f"peaks after the run: F32 FMA {after['f32']:.0f}, int8 dot {after['int8']:.0f}")
    if args.json is not None:
        doc = {
            "cpu": cpu_name(),
            "threads": args.threads,
            "simd_level": ggml.simd_level(),
            "peaks_gops": {"before": peaks, "after": after},
            "steps": args.steps,
            "rounds": args.rounds,
            "quantized_head": args.quantized_head,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
