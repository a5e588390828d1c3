"""Time per token with and without a structured-output constraint (a JSON schema), single and batched.

For each model: generation from a fixed state (no prompt in the timing) at temperature 1.0, top_p 1.0,
``--tokens`` tokens per run, in rounds that alternate the three settings so that a drifting machine load
hits them alike:

* ``free``: no constraint;
* ``json``: a JSON-schema constraint whose mask is computed on the worker thread while the model evaluates
  the previous token (the default);
* ``json-sync``: the same, with the mask computed only when the sampler needs it (no overlap).

Then a batch of 8 sequences (:class:`~rwkv_ggml.batch_generation.BatchGenerator`), each with its own
constraint, against 8 free ones: time per step (one token for each of the 8). Random weights make random
text, so strings run to their maxLength and the mask is often the expensive "inside a string" one: a worst
case for the constraint. The per-request set-up (grammar compile + matcher) is reported apart.

    python benchmarks/structured.py --models v4-169m-world v4-1.5b --threads 2

Models come from benchmarks/models.py (random weights cached in ~/.cache/rwkv_ggml_bench); the
``-world`` shapes are RWKV-4 with the World vocabulary (65536), written on first use.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models
from models import SHAPES, model_file

from rwkv_ggml import Model, structured
from rwkv_ggml.batch_generation import BatchGenerator
from rwkv_ggml.generation import generate
from rwkv_ggml.sampling import SamplingParams
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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def single_run(
    model: Model, start: tuple[Any, Any], tokens: int, seed: int, setting: str
) -> tuple[float, int]:
    """(seconds, tokens) of one generation from ``start`` (state, logits) with the given setting."""
    state, logits = start
    options: dict[str, Any] = {} if setting == "free" else {"response_format": RESPONSE_FORMAT}
    gen = generate(model, [], tokens, state=state, logits=logits, params=PARAMS, seed=seed, **options)
    if setting == "json-sync":
        assert gen.constraint is not None
        gen.constraint.prefetch = lambda: None  # type: ignore[method-assign]
    t0 = time.perf_counter()
    for _ in gen:
        pass
    return time.perf_counter() - t0, len(gen.tokens)


def batch_run(model: Model, tokens: int, seed: int, constrained: bool, width: int = 8) -> tuple[float, int]:
    """(seconds, steps) of a batch of ``width`` requests, after the first step (which reads the prompts)."""
    tok = model.tokenizer
    batch = BatchGenerator(model, capacity=width)
    for i in range(width):
        c = (
            constraint_from_options(tok, model.n_vocab, response_format=RESPONSE_FORMAT)
            if constrained
            else None
        )
        batch.add(
            "Data:", tokens, params=SamplingParams(temperature=1.0, top_p=1.0, seed=seed + i), constraint=c
        )
    batch.step()
    steps = 0
    t0 = time.perf_counter()
    while batch.running and len(batch.running) == width:  # only full-width steps count
        batch.step()
        steps += 1
    elapsed = time.perf_counter() - t0
    for rid in batch.running:
        batch.cancel(rid)
    return elapsed, steps


def bench_model(name: str, threads: int, tokens: int, rounds: int, batch_tokens: int) -> None:
    path = model_file(name, "F16")
    with Model(path, threads=threads) as model:
        structured.ll_tokenizer(model.tokenizer)  # built once per tokenizer, not per request
        logits, state = model.eval_sequence(model.tokenize("Data:"))
        start = (state, logits)
        t0 = time.perf_counter()
        for _ in range(20):
            constraint_from_options(model.tokenizer, model.n_vocab, response_format=RESPONSE_FORMAT)
        setup_ms = (time.perf_counter() - t0) / 20 * 1e3
        single_run(model, start, 8, 0, "json")  # warm up
        per_token: dict[str, list[float]] = {"free": [], "json": [], "json-sync": []}
        for r in range(rounds):
            for setting in per_token:
                secs, n = single_run(model, start, tokens, r, setting)
                per_token[setting].append(secs / max(n, 1) * 1e3)
        med = {k: statistics.median(v) for k, v in per_token.items()}
        print(
            f"{name} F16, {threads} threads, vocab {model.n_vocab}: "
            f"constraint set-up {setup_ms:.2f} ms/request"
        )
        for setting, ms in med.items():
            extra = "" if setting == "free" else f"  (+{(ms / med['free'] - 1) * 100:5.1f}%)"
            print(f"  single  {setting:9s} {ms:8.2f} ms/token{extra}")
        if batch_tokens:
            steps: dict[bool, list[float]] = {False: [], True: []}
            for r in range(max(1, rounds // 2)):
                for constrained in (False, True):
                    secs, n = batch_run(model, batch_tokens, 100 * r, constrained)
                    steps[constrained].append(secs / max(n, 1) * 1e3)
            free, json_ms = statistics.median(steps[False]), statistics.median(steps[True])
            print(f"  batch 8 free      {free:8.2f} ms/step ({free / 8:.2f} ms/token)")
            print(
                f"  batch 8 json      {json_ms:8.2f} ms/step ({json_ms / 8:.2f} ms/token)"
                f"  (+{(json_ms / free - 1) * 100:5.1f}%)"
            )
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v4-169m-world"], choices=sorted(SHAPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=48, help="tokens per single run (default 48)")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    ap.add_argument("--batch-tokens", type=int, default=24, help="tokens per batch request; 0: no batch")
    args = ap.parse_args()
    print(f"CPU: {cpu_name()}; {args.threads} threads; cache {models.CACHE}")
    for name in args.models:
        bench_model(name, args.threads, args.tokens, args.rounds, args.batch_tokens)


if __name__ == "__main__":
    main()
