"""Ray Data batch generation throughput (rwkv_ggml.ray.data) against the plain in-process batch API.

The same workload each time: ``--prompts`` prompts of ``--prompt-tokens`` random token ids, ``--max-tokens``
greedy tokens each, in batches of ``--batch-size`` rows (``generate_batch`` per batch in-process; one
``map_batches`` batch on a Ray actor). Reported: generated tokens/s of

* the in-process API, threads=1 (what one actor does, without Ray), and threads=2 for reference;
* Ray Data with 1 and 2 actors of threads=1 each (``num_cpus=1`` each) on a local cluster, end to end
  (from building the dataset to the last row on the driver, actor start and model load included) and
  without the fixed start-up cost, measured by a run over a single tiny batch;

then the per-batch overhead Ray adds (the 1-actor steady time minus the in-process time, per batch), the
scaling from 1 to 2 actors, and a projection per added node (stated as such: not measured here).

    python benchmarks/ray_data.py --model v4-169m --format F16 --prompts 128 --max-tokens 16

Random weights are generated once into ~/.cache/rwkv_ggml_bench (RWKV_GGML_BENCH_CACHE overrides). The
numbers are noisy on a shared machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import SHAPES, model_file

from rwkv_ggml import Model
from rwkv_ggml.batch_generation import generate_batch
from rwkv_ggml.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)


def prompts(n: int, length: int, n_vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [[int(t) for t in rng.integers(0, n_vocab, length)] for _ in range(n)]


def in_process(path: Path, items: list[list[int]], batch_size: int, max_tokens: int, threads: int) -> float:
    """Seconds to generate for every prompt with generate_batch, batch by batch, model already loaded."""
    with Model(path, threads=threads, placement="mmap") as m:
        generate_batch(m, items[:2], 2, params=GREEDY)  # warm-up: graphs built, pages touched
        start = time.perf_counter()
        for i in range(0, len(items), batch_size):
            generate_batch(m, items[i : i + batch_size], max_tokens, params=GREEDY)
        return time.perf_counter() - start


def ray_run(path: Path, items: list[list[int]], batch_size: int, max_tokens: int, actors: int) -> float:
    """Seconds for a whole Ray Data pipeline, from the dataset to the last row on the driver."""
    import ray.data

    from rwkv_ggml.ray import data as rd

    start = time.perf_counter()
    ds = ray.data.from_items(
        [{"id": i, "prompt": p} for i, p in enumerate(items)], override_num_blocks=actors * 4
    )
    out = rd.generate(
        ds, str(path), actors=actors, threads=1, batch_size=batch_size, max_tokens=max_tokens, temperature=0.0
    )
    rows = out.take_all()
    elapsed = time.perf_counter() - start
    assert len(rows) == len(items) and all(int(r["completion_tokens"]) == max_tokens for r in rows)
    return elapsed


class PassThrough:
    """A no-op actor: what Ray costs per batch with no model work at all."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch


def ray_noop(items: list[list[int]], batch_size: int) -> float:
    """Seconds for a pipeline of one PassThrough actor over the rows, in batches of batch_size."""
    import ray.data

    start = time.perf_counter()
    ds = ray.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(items)], override_num_blocks=4)
    rows = ds.map_batches(
        PassThrough, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_size=batch_size
    ).take_all()
    assert len(rows) == len(items)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="v4-169m", choices=list(SHAPES))
    ap.add_argument("--format", default="F16")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--repeats", type=int, default=3, help="each measurement's best of this many, interleaved"
    )
    ap.add_argument(
        "--cpus", type=int, default=4, help="logical CPUs of the local cluster (read tasks need one)"
    )
    args = ap.parse_args()

    import ray

    path = model_file(args.model, args.format)
    items = prompts(args.prompts, args.prompt_tokens, SHAPES[args.model][3])
    tokens = args.prompts * args.max_tokens
    n_batches = -(-args.prompts // args.batch_size)
    print(
        f"{args.model} {args.format}: {args.prompts} prompts x {args.prompt_tokens} tokens, "
        f"{args.max_tokens} new tokens each ({tokens} in all), {n_batches} batches of {args.batch_size}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; best of {args.repeats}"
    )
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    best: dict[str, float] = {}

    def keep(name: str, sec: float) -> None:
        best[name] = min(best.get(name, float("inf")), sec)

    try:
        for _ in range(args.repeats):
            for threads in (1, 2):
                keep(
                    f"in-process, threads={threads}",
                    in_process(path, items, args.batch_size, args.max_tokens, threads),
                )
            keep("no-op 1", ray_noop(items[:1], 1))
            keep("no-op all", ray_noop(items, 1))
            for actors in (1, 2):
                # start-up alone: the actors, the model load and one tiny batch
                keep(f"start-up {actors}", ray_run(path, items[: actors * 2], 2, 1, actors))
                keep(f"Ray {actors}", ray_run(path, items, args.batch_size, args.max_tokens, actors))
    finally:
        ray.shutdown()
    for threads in (1, 2):
        sec = best[f"in-process, threads={threads}"]
        print(f"{'in-process, threads=' + str(threads):<34}{sec:8.2f} s {tokens / sec:9.1f} tokens/s")
    steady = {}
    for actors in (1, 2):
        sec, fixed = best[f"Ray {actors}"], best[f"start-up {actors}"]
        steady[actors] = max(sec - fixed, 1e-9)
        print(
            f"{f'Ray Data, {actors} actor(s) x 1 thread':<34}{sec:8.2f} s {tokens / sec:9.1f} tokens/s"
            f"   without the start-up ({fixed:.2f} s): {tokens / steady[actors]:9.1f} tokens/s"
        )
    base = best["in-process, threads=1"]
    overhead = (steady[1] - base) / n_batches
    share = overhead / (base / n_batches)
    print(
        f"overhead Ray adds per batch (1 actor, without the start-up): {overhead * 1e3:.0f} ms ({share:.0%})"
    )
    noop = (best["no-op all"] - best["no-op 1"]) / (len(items) - 1)
    print(
        f"Ray's own cost per batch (a no-op actor, {len(items)} batches of 1 row): {noop * 1e3:.1f} ms, "
        f"{noop / (base / n_batches):.1%} of an in-process batch of {args.batch_size} rows here"
    )
    scaling = steady[1] / steady[2]
    print(f"scaling 1 -> 2 actors (without the start-up): x{scaling:.2f} on {os.cpu_count()} cores")
    per_actor = tokens / steady[1]
    print(
        f"projection (not measured): a node of C cores adds about C x {per_actor:.0f} tokens/s "
        "(C actors of 1 thread) while its memory bandwidth keeps up; docs/scale-out.md"
    )


if __name__ == "__main__":
    main()
