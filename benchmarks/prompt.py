"""Prompt ingestion (sequence mode) throughput beside the FMA peak, measured in the same run.

For each model shape, format and prompt length T: tokens per second of ``Model.eval_sequence`` on a
fresh state, the achieved GFLOP/s (2 flops per weight per token for the matrix products, which
dominate) and its share of the machine's F32 FMA peak and of the peak of the unit the products run on
(bf16 or int8 dot products, measured by rg_bench_peak). With ``--official`` and the official ``rwkv``
package installed (``pip install .[bench]``): its 'cpu fp32' and 'cpu bf16' strategies on the same
random weights in the same run (RWKV-4 and RWKV-7 shapes); with ``--paired N`` also F16+bf16, F32+bf16 and
the official 'cpu bf16' alternately, N rounds, and the median of the per-round ratios.

    python benchmarks/prompt.py --models v4-169m --formats F32 F16 Q8_0 --lengths 256 1024

--level 1 forces the AVX2 kernels on an AVX-512 machine (torch too, for --official and --torch-matmuls).
--torch-matmuls (needs torch, not the official package): the rate at which torch fp32 does the model's
matrix products alone for T tokens (every 2-D weight but emb and head, x @ W.T), an upper bound of a
torch implementation's prompt rate on the same ISA.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import fma_peak, select_level
from models import SHAPES, load_official, model_file

from rwkv_ggml import Model, ggml
from rwkv_ggml.fileformat import read_model_file


def matrix_params(path: Path) -> int:
    """Weights multiplied per token: every 2-D tensor but the embedding (a row lookup) and the head
    (only the last token goes through it)."""
    with read_model_file(path) as mf:
        return sum(
            int(np.prod(r.ne))
            for n, r in mf.tensors.items()
            if len(r.ne) == 2 and n not in ("emb.weight", "head.weight")
        )


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_matmul_rate(path: Path, threads: int, T: int, repeats: int) -> float:
    """Tokens/s of torch fp32 doing only the model's matrix products for T tokens (random weights of the
    same shapes; the weights' values do not change the time)."""
    import torch

    torch.set_num_threads(threads)
    with read_model_file(path) as mf:
        shapes = [
            tuple(int(v) for v in reversed(r.ne))
            for n, r in mf.tensors.items()
            if len(r.ne) == 2 and n not in ("emb.weight", "head.weight")
        ]
    weights = [torch.randn(rows, cols) for rows, cols in shapes]
    inputs = {cols: torch.randn(T, cols) for _, cols in shapes}

    def products() -> None:
        for w in weights:
            torch.matmul(inputs[w.shape[1]], w.T)

    products()
    return T / best_time(products, repeats)


def official_rate(name: str, strategy: str, threads: int, T: int, repeats: int) -> float | None:
    model = load_official(name, strategy, threads)
    if model is None:
        return None
    tokens = list(np.random.default_rng(0).integers(0, 50000, T))
    model.forward(tokens[:16], None)
    sec = best_time(lambda: model.forward(tokens, None), repeats)
    return T / sec


def paired_with_official(
    name: str, formats: list[str], bf16: bool, threads: int, lengths: list[int], rounds: int
) -> None:
    """Each of our formats and the official model ('cpu bf16', loaded once) alternately, one pass each per
    round: the median of the per-round ratios is steady on a host whose speed drifts between minutes."""
    official = load_official(name, "cpu bf16", threads)
    if official is None:
        print("official rwkv package not installed (pip install .[bench])")
        return
    for fmt in formats:
        label = fmt + ("+bf16" if bf16 else "")
        with Model(model_file(name, fmt), threads=threads, bf16=bf16) as m:
            for T in lengths:
                tokens = np.random.default_rng(T).integers(0, min(m.n_vocab, 50000), T)
                m.eval_sequence(tokens)
                official.forward(list(tokens[:16]), None)
                ours, theirs, ratios = [], [], []
                for _ in range(rounds):
                    ours.append(T / best_time(lambda toks=tokens: m.eval_sequence(toks), 1))
                    theirs.append(T / best_time(lambda toks=tokens: official.forward(list(toks), None), 1))
                    ratios.append(ours[-1] / theirs[-1])
                print(
                    f"{name:<10}{label:<9}{T:>5}{statistics.median(ours):>10.1f}   "
                    "paired with official bf16: "
                    f"{statistics.median(theirs):.1f} tokens/s, ours/theirs {statistics.median(ratios):.2f} "
                    f"(median of {rounds} alternating rounds)",
                    flush=True,
                )
    official = None  # the official model holds GBs: free it before the next one is loaded
    gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v4-169m", "v4-1.5b"], choices=list(SHAPES))
    ap.add_argument("--formats", nargs="+", default=["F32", "F16", "Q8_0", "Q5_1", "Q4_0"])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--bf16", action="store_true", help="also run F32/F16 models with Model(bf16=True)")
    ap.add_argument("--official", action="store_true")
    ap.add_argument(
        "--level", type=int, default=None, help="cap the SIMD level (0 scalar, 1 AVX2, 2 AVX-512)"
    )
    ap.add_argument("--torch-matmuls", action="store_true", help="torch fp32 doing the matrix products alone")
    ap.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="with --official: also time F16 and F32 (+bf16 with --bf16) and the official 'cpu bf16' "
        "alternately for this many rounds",
    )
    args = ap.parse_args()
    select_level(args.level)

    pool = ggml.Pool(args.threads)
    peaks = {kind: fma_peak(pool, args.threads, kind=kind) for kind in ("f32", "bf16", "int8")}
    pool.close()
    peak = peaks["f32"]
    print(
        f"{args.threads} threads, SIMD level {ggml.simd_level()}, peaks (G-ops/s): F32 FMA {peak:.0f}, "
        f"bf16 dot {peaks['bf16']:.0f}, int8 dot {peaks['int8']:.0f}"
    )
    print(
        "'% peak': of the F32 FMA peak; '% unit': of the peak of the unit the products run on "
        "(F32 FMA, bf16 dot for +bf16, int8 dot for the quantized formats)"
    )
    print(f"{'model':<10}{'format':<9}{'T':>5}{'tokens/s':>10}{'GFLOP/s':>9}{'% peak':>8}{'% unit':>8}")
    for name in args.models:
        runs = [(fmt, False) for fmt in args.formats]
        if args.bf16:
            runs += [(fmt, True) for fmt in args.formats if fmt in ("F32", "F16")]
        for fmt, bf16 in runs:
            path = model_file(name, fmt)
            flops_per_token = 2 * matrix_params(path)
            label = fmt + ("+bf16" if bf16 else "")
            with Model(path, threads=args.threads, bf16=bf16) as m:
                for T in args.lengths:
                    tokens = np.random.default_rng(T).integers(0, m.n_vocab, T)
                    # untimed first pass: builds (and plans memory for) the graphs of these chunk lengths, a
                    # once-per-model cost, so the timed passes measure steady-state ingestion
                    m.eval_sequence(tokens, chunk_size=args.chunk_size)
                    repeats = 3 if T * flops_per_token < 2e11 else 1

                    def ingest(toks: list[int] = tokens) -> None:
                        m.eval_sequence(toks, chunk_size=args.chunk_size)

                    sec = best_time(ingest, repeats)
                    gflops = T * flops_per_token / sec / 1e9
                    unit = peaks["bf16"] if bf16 else peak if fmt in ("F32", "F16") else peaks["int8"]
                    unit_share = f"{100 * gflops / unit:>7.0f}%" if unit > 0 else f"{'-':>8}"
                    print(
                        f"{name:<10}{label:<9}{T:>5}{T / sec:>10.1f}{gflops:>9.1f}"
                        f"{100 * gflops / peak:>7.0f}%"
                        f"{unit_share}",
                        flush=True,
                    )
        if args.torch_matmuls:
            import torch

            for T in args.lengths:
                rate = torch_matmul_rate(model_file(name, args.formats[0]), args.threads, T, 3)
                print(
                    f"{name:<10}{'torch*':<9}{T:>5}{rate:>10.1f}   "
                    f"(torch {torch.__version__} fp32 matmuls only, "
                    f"{torch.backends.cpu.get_cpu_capability()})",
                    flush=True,
                )
        if args.official:
            # without bf16 dot products (the AVX2 level, or a CPU without AVX512_BF16) torch emulates bf16:
            # minutes per prompt on a 1.5B shape, and no rival worth timing
            strategies = ("cpu fp32", "cpu bf16") if peaks["bf16"] > 0 else ("cpu fp32",)
            for strategy in strategies:
                for T in args.lengths:
                    rate = official_rate(name, strategy, args.threads, T, 1)
                    if rate is None:
                        print("official rwkv package not installed (pip install .[bench])")
                        break
                    print(
                        f"{name:<10}{strategy.split()[1] + '*':<9}{T:>5}{rate:>10.1f}"
                        "   (official rwkv, torch)",
                        flush=True,
                    )
            if args.paired > 0:
                paired_with_official(name, ["F16", "F32"], args.bf16, args.threads, args.lengths, args.paired)


if __name__ == "__main__":
    main()
