"""Per-token (RNN mode) latency beside the memory-bandwidth floor, measured in the same run.

A token reads every weight once and reads and writes the recurrent state (a few MB for v5-v7, whose
state holds a matrix per head; negligible for v4), so the best possible latency is those bytes divided
by the machine's read bandwidth from huge pages (the floor). The table gives our median latency, the
floor, and their ratio, per model shape, format, weight placement and thread count; and, when the
official ``rwkv`` package (PyTorch) is installed (``pip install .[bench]``), its latency on the same
random weights.

    python benchmarks/per_token.py --models v4-169m v4-1.5b --formats F32 F16 --threads 1 2

Random weights are generated once into ~/.cache/rwkv_ggml_bench (RWKV_GGML_BENCH_CACHE overrides).
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

from machine import read_bandwidth, read_bandwidth_of, select_level
from models import SHAPES, load_official, model_file, streamed_bytes

from rwkv_ggml import Model, ggml


def median_latency(model: Model, tokens: int, warm_up: int = 5) -> float:
    state = model.init_state()
    logits = np.empty(model.n_vocab, dtype=np.float32)
    for t in range(warm_up):  # first touches, thread wake-up
        model.eval(t, state, state_out=state, logits_out=logits)
    times = []
    for t in range(tokens):
        t0 = time.perf_counter()
        model.eval(t % model.n_vocab, state, state_out=state, logits_out=logits)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_rounds(
    model: Model, pool: ggml.Pool, threads: int, nbytes: int, tokens: int, rounds: int
) -> tuple[float, float, float, float | None]:
    """(median latency, median floor, median ratio, median ratio to the own-pages floor).

    The floor and ratio: rounds of [bandwidth of a fresh buffer, latency] measured back to back; on
    shared machines the bandwidth drifts (seen here: 35 to 65 GB/s from one minute to the next), so each
    ratio pairs numbers taken within a second of each other. The own-pages ratio (hugepage placement)
    pairs finer still: many [one read of the model's own weight pages, three tokens] pairs, each a
    fraction of a second, the median of their ratios; and reading the weights' own pages removes the
    other uncertainty of a fresh buffer, which on this VM can land in faster or slower host memory."""
    lats, floors, ratios = [], [], []
    for _ in range(rounds):
        bw = read_bandwidth(pool, threads, nbytes=512 << 20, repeats=3)
        lat = median_latency(model, max(10, tokens // rounds))
        floor = nbytes / (bw * 1e9)
        lats.append(lat)
        floors.append(floor)
        ratios.append(lat / floor)
    own = getattr(model._store, "_anon", None) if model.placement == "hugepage" else None
    own_ratio = None
    if own is not None:
        own_ratios = []
        for _ in range(max(10, tokens // 3)):
            floor_now = nbytes / (read_bandwidth_of(pool, threads, own, repeats=1) * 1e9)
            own_ratios.append(median_latency(model, 3, warm_up=1) / floor_now)
        own_ratio = statistics.median(own_ratios)
    return statistics.median(lats), statistics.median(floors), statistics.median(ratios), own_ratio


def official_latency(name: str, threads: int, tokens: int) -> float | None:
    model = load_official(name, "cpu fp32", threads)
    if model is None:
        return None
    state = None
    for t in range(3):
        _, state = model.forward([t], state)
    times = []
    for t in range(tokens):
        t0 = time.perf_counter()
        _, state = model.forward([t], state)
        times.append(time.perf_counter() - t0)
    del model
    gc.collect()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v4-169m", "v4-1.5b"], choices=list(SHAPES))
    ap.add_argument("--formats", nargs="+", default=["F32", "F16"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--placements", nargs="+", default=["hugepage", "mmap"])
    ap.add_argument("--tokens", type=int, default=0, help="tokens timed per case (default: by model size)")
    ap.add_argument("--official", action="store_true", help="also time the official rwkv package (fp32)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="rounds of [bandwidth, latency] per case (more: steadier ratios on a noisy host)",
    )
    ap.add_argument("--level", type=int, default=None, help="cap the SIMD level (0 scalar, 1 AVX2, 2 AVX512)")
    args = ap.parse_args()
    select_level(args.level)

    pool = ggml.Pool(max(args.threads))
    print(
        f"SIMD level {ggml.simd_level()}; latency = median over the timed tokens; floor = streamed bytes / "
        f"read bandwidth (2 MiB pages); ratio = median of {args.rounds} rounds of [bandwidth, latency] "
        "measured "
        "back to back; own = median ratio of many [read of the model's own weight pages, 3 tokens] pairs"
    )
    print(
        f"{'model':<10}{'format':<7}{'placement':<10}{'thr':>4}{'ms/token':>10}{'floor ms':>10}{'ratio':>7}"
        f"{'own':>7}{'GB/s':>7}"
    )
    for name in args.models:
        for fmt in args.formats:
            path = model_file(name, fmt)
            nbytes = streamed_bytes(path)
            tokens = args.tokens or (70 if nbytes > 1e9 else 150)
            for placement in args.placements:
                for threads in args.threads:
                    with Model(path, threads=threads, placement=placement) as m:
                        moved = nbytes + 2 * 4 * m.state_size  # weights + state read and written
                        lat, floor, ratio, own = paired_rounds(m, pool, threads, moved, tokens, args.rounds)
                    own_text = f"{own:>7.2f}" if own is not None else f"{'-':>7}"
                    print(
                        f"{name:<10}{fmt:<7}{placement:<10}{threads:>4}{lat * 1e3:>10.2f}{floor * 1e3:>10.2f}"
                        f"{ratio:>7.2f}{own_text}{moved / lat / 1e9:>7.1f}",
                        flush=True,
                    )
        if args.official:
            for threads in args.threads:
                lat = official_latency(name, threads, max(10, (args.tokens or 40) // 2))
                if lat is None:
                    print("official rwkv package not installed (pip install .[bench])")
                    break
                print(f"{name:<10}{'torch':<7}{'official':<10}{threads:>4}{lat * 1e3:>10.2f}", flush=True)
    pool.close()


if __name__ == "__main__":
    main()
