"""Time per token with and without a structured-output constraint (a JSON schema), single and batched.

Paired measurement, because the machines this runs on are often shared and their load swings by 2x within
seconds: two generations from the same state run side by side, one free and one constrained, advancing in
turn a chunk at a time (a token or a few), each advance timed; the reported cost is the median over the
pairs of (constrained ms/token) / (free ms/token), two advances taken within ~0.1 s of each other. The
medians of the ms/token themselves are printed too. Settings compared with ``free`` (no constraint), at
temperature 1.0, top_p 1.0:

* ``json``: a JSON-schema constraint as it runs by default (the next mask is computed on the worker thread
  while the model evaluates the token only when masks take over ``Constraint.prefetch_threshold_s``, 1 ms);
* ``json-async``: the mask always computed on the worker thread, overlapping the eval.

Then a batch of 8 sequences (:class:`~rwkv_ggml.batch_generation.BatchGenerator`) each with its own
constraint, against 8 free ones, stepped in turn: time per step (one token for each of the 8). Random
weights make random text, so strings run to their maxLength and the mask is often the expensive "inside a
string" one: a worst case for the constraint. The per-request set-up (grammar compile + matcher) is
reported apart, and so are the parts of the added work on the main thread (mask, sampling with the mask,
consume), measured alone.

    python benchmarks/structured.py --models v4-169m-world v4-1.5b --threads 2

Models come from benchmarks/models.py (random weights cached in ~/.cache/rwkv_ggml_bench); the
``-world`` shapes are RWKV-4 with the World vocabulary (65536), written on first use.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models
from machine import cpu_name
from models import SHAPES, model_file

from rwkv_ggml import Model, structured
from rwkv_ggml.batch_generation import BatchGenerator
from rwkv_ggml.generation import Generation, generate
from rwkv_ggml.sampling import Sampler, SamplingParams
from rwkv_ggml.structured import constraint_from_options

SHAPES.setdefault("v4-169m-world", ("4", 12, 768, 65536, 3072))
SHAPES.setdefault("v4-1.5b-world", ("4", 24, 2048, 65536, 8192))

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "pattern": "^[a-z]{1,12}@[a-z]{1,12}\\.(com|org)$"},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string", "maxLength": 30}, "zip": {"type": "string"}},
            "required": ["street", "zip"],
        },
    },
    "required": ["name", "age", "email", "tags", "address"],
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
PARAMS = SamplingParams(temperature=1.0, top_p=1.0)


def _generation(model: Model, start: tuple[Any, Any], tokens: int, seed: int, setting: str) -> Generation:
    state, logits = start
    options: dict[str, Any] = {} if setting == "free" else {"response_format": RESPONSE_FORMAT}
    gen = generate(model, [], tokens, state=state, logits=logits, params=PARAMS, seed=seed, **options)
    if setting == "json-async":
        assert gen.constraint is not None
        gen.constraint.prefetch_threshold_s = 0.0
    return gen


def paired_single(
    model: Model, start: tuple[Any, Any], setting: str, pairs: int
) -> tuple[float, float, float]:
    """(median ratio constrained/free of ms per token, median free ms/token, median constrained ms/token)."""
    seeds = iter(range(10**6))
    gens = {name: _generation(model, start, 64, next(seeds), name) for name in ("free", setting)}
    per_token: dict[str, list[float]] = {"free": [], setting: []}
    ratios = []
    while len(ratios) < pairs:
        now: dict[str, float] = {}
        order = ("free", setting) if len(ratios) % 2 else (setting, "free")
        for name in order:
            gen = gens[name]
            before = len(gen.tokens)
            t0 = time.perf_counter()
            try:
                next(gen)
            except StopIteration:
                gens[name] = _generation(model, start, 64, next(seeds), name)
                continue
            n = len(gen.tokens) - before
            if n:
                now[name] = (time.perf_counter() - t0) / n * 1e3
                per_token[name].append(now[name])
        if len(now) == 2:
            ratios.append(now[setting] / now["free"])
    return (
        statistics.median(ratios),
        statistics.median(per_token["free"]),
        statistics.median(per_token[setting]),
    )


def _batch(model: Model, constrained: bool, seed: int, width: int) -> BatchGenerator:
    batch = BatchGenerator(model, capacity=width)
    for i in range(width):
        c = None
        if constrained:
            c = constraint_from_options(model.tokenizer, model.n_vocab, response_format=RESPONSE_FORMAT)
        params = SamplingParams(temperature=1.0, top_p=1.0, seed=seed + i)
        batch.add("Data:", 10**6, params=params, constraint=c)
    batch.step()  # reads the prompts
    return batch


def paired_batch(model: Model, pairs: int, width: int = 8) -> tuple[float, float, float]:
    """As paired_single for two batches of ``width``, per step; a batch with a finished request is renewed."""
    batches = {False: _batch(model, False, 0, width), True: _batch(model, True, 0, width)}
    per_step: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    while len(ratios) < pairs:
        now: dict[bool, float] = {}
        for constrained in (False, True) if len(ratios) % 2 else (True, False):
            batch = batches[constrained]
            if len(batch.running) < width:
                batches[constrained] = _batch(model, constrained, 100 * len(ratios), width)
                continue
            t0 = time.perf_counter()
            batch.step()
            now[constrained] = (time.perf_counter() - t0) * 1e3
            per_step[constrained].append(now[constrained])
        if len(now) == 2:
            ratios.append(now[True] / now[False])
    return statistics.median(ratios), statistics.median(per_step[False]), statistics.median(per_step[True])


def main_thread_parts(model: Model, start: tuple[Any, Any]) -> dict[str, float]:
    """Median ms per token of each part of the constraint's work on the main thread, measured alone on the
    tokens of real constrained runs: the mask, sampling with the mask instead of without, consuming."""
    runs = []
    for seed in range(4):
        gen = _generation(model, start, 48, seed, "json")
        for _ in gen:
            pass
        runs.append(list(gen.tokens))
    sampler = Sampler(PARAMS, model.n_vocab)
    logits = np.asarray(start[1], dtype=np.float32)
    parts: dict[str, list[float]] = {"mask": [], "sample with mask - without": [], "consume": []}
    for tokens in runs:
        c = constraint_from_options(model.tokenizer, model.n_vocab, response_format=RESPONSE_FORMAT)
        assert c is not None
        for t in tokens:
            t0 = time.perf_counter()
            mask = c.allowed_tokens()
            t1 = time.perf_counter()
            sampler.sample(logits, mask)
            t2 = time.perf_counter()
            sampler.sample(logits)
            t3 = time.perf_counter()
            c.consume(t)
            t4 = time.perf_counter()
            parts["mask"].append(t1 - t0)
            parts["sample with mask - without"].append((t2 - t1) - (t3 - t2))
            parts["consume"].append(t4 - t3)
    return {k: statistics.median(v) * 1e3 for k, v in parts.items()}


def bench_model(name: str, threads: int, pairs: int, batch_pairs: int) -> None:
    path = model_file(name, "F16")
    with Model(path, threads=threads) as model:
        structured.ll_tokenizer(model.tokenizer)  # built once per tokenizer, not per request
        logits, state = model.eval_sequence(model.tokenize("Data:"))
        start = (state, logits)
        t0 = time.perf_counter()
        for _ in range(20):
            constraint_from_options(model.tokenizer, model.n_vocab, response_format=RESPONSE_FORMAT)
        setup_ms = (time.perf_counter() - t0) / 20 * 1e3
        print(f"{name} F16, {threads} threads, vocab {model.n_vocab}: set-up {setup_ms:.2f} ms/request")
        parts = main_thread_parts(model, start)
        print("  main-thread parts (median ms/token): " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
        for setting in ("json", "json-async"):
            ratio, free, json_ms = paired_single(model, start, setting, pairs)
            print(
                f"  single  {setting:10s} +{(ratio - 1) * 100:5.1f}% per token (paired median); "
                f"medians: free {free:.2f}, constrained {json_ms:.2f} ms/token"
            )
        if batch_pairs:
            ratio, free, json_ms = paired_batch(model, batch_pairs)
            print(
                f"  batch 8 json       +{(ratio - 1) * 100:5.1f}% per step (paired median); "
                f"medians: free {free:.2f}, constrained {json_ms:.2f} ms/step ({free / 8:.2f} / "
                f"{json_ms / 8:.2f} ms/token)"
            )
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v4-169m-world"], choices=sorted(SHAPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=60, help="paired advances per setting (default 60)")
    ap.add_argument(
        "--batch-pairs", type=int, default=20, help="paired batch steps; 0: no batch (default 20)"
    )
    args = ap.parse_args()
    print(f"CPU: {cpu_name()}; {args.threads} threads; cache {models.CACHE}")
    for name in args.models:
        bench_model(name, args.threads, args.pairs, args.batch_pairs)


if __name__ == "__main__":
    main()
