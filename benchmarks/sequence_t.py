"""Sequence-mode time against the number of tokens read (short inputs: a chat turn's new message).

For each model and T, the median time of ``eval_sequence`` over T tokens (logits of the last token
only, as a cached chat turn reads its message), models and T alternating within each round so that the
shared machine's drift falls on every case alike. Beside each time: its ratio to one per-token eval
(T = 1 reads all weights once, so a product route that re-reads them shows as a jump), ms per token,
and the time of the same tokens fed as power-of-two pieces (how sequence mode split them before).

    python benchmarks/sequence_t.py --models v4-169m:F16 v4-169m:F32 v7-0.1b:F16 --threads 2

Random weights are generated once into ~/.cache/rwkv_ggml_bench (RWKV_GGML_BENCH_CACHE overrides).
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

from machine import cpu_name
from models import model_file

from rwkv_ggml import Model, ggml

DEFAULT_TS = [1, 2, 3, 4, 6, 7, 8, 10, 12, 16, 24, 32]


def time_sequence(model: Model, tokens: np.ndarray, repeats: int) -> float:
    """Best of ``repeats`` wall times of one eval_sequence over tokens from the initial state (the best:
    on a shared machine the noise only ever adds)."""
    state = model.init_state()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.eval_sequence(tokens, state)
        best = min(best, time.perf_counter() - t0)
    return best


def power_of_two_pieces(n: int) -> list[int]:
    """The pieces a short input ran as before exact-length remainders (4 + 2 + 1 for 7)."""
    return [1 << b for b in reversed(range(n.bit_length())) if n >> b & 1]


def time_pieces(model: Model, tokens: np.ndarray, repeats: int) -> float:
    """As time_sequence, with the tokens fed as power_of_two_pieces, one eval_sequence each (the state
    carried): the earlier chunking, timed beside the exact-length graph in the same run."""
    best = float("inf")
    for _ in range(repeats):
        state = model.init_state()
        t0 = time.perf_counter()
        start = 0
        for length in power_of_two_pieces(len(tokens)):
            state = model.eval_sequence(tokens[start : start + length], state)[1]
            start += length
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v4-169m:F16", "v4-169m:F32", "v7-0.1b:F16"])
    ap.add_argument("--ts", type=int, nargs="+", default=DEFAULT_TS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="evals per case per round (best taken)")
    args = ap.parse_args()

    models: dict[str, Model] = {}
    for spec in args.models:
        name, fmt = spec.split(":")
        models[spec] = Model(model_file(name, fmt), threads=args.threads)
    rng = np.random.default_rng(0)
    times: dict[tuple[str, int], list[float]] = {}
    for m in models.values():  # warm up: build every graph, touch every page
        for t in args.ts:
            time_sequence(m, rng.integers(0, m.n_vocab, t), 1)
    for _ in range(args.rounds):
        for t in args.ts:
            for spec, m in models.items():
                toks = rng.integers(0, m.n_vocab, t)
                times.setdefault((spec, t), []).append(time_sequence(m, toks, args.repeats))
                times.setdefault((spec, -t), []).append(time_pieces(m, toks, args.repeats))
    print(
        f"CPU {cpu_name()}; SIMD level {ggml.simd_level()}; {args.threads} threads; "
        f"median of {args.rounds} rounds"
    )
    print("pieces: the same tokens as power-of-two pieces (the chunking before exact-length remainders)")
    print(f"{'model':<14}{'T':>4}{'ms':>9}{'x T=1':>7}{'ms/tok':>8}{'pieces ms':>11}")
    for spec in models:
        one = statistics.median(times[(spec, args.ts[0])])
        for t in args.ts:
            ms = statistics.median(times[(spec, t)])
            pieces = statistics.median(times[(spec, -t)])
            print(
                f"{spec:<14}{t:>4}{ms * 1e3:>9.2f}{ms / one:>7.2f}{ms * 1e3 / t:>8.2f}{pieces * 1e3:>11.2f}"
            )
    for m in models.values():
        m.close()


if __name__ == "__main__":
    main()
