"""``rwkv-ggml serve`` through HTTP: throughput and latency at several concurrencies, the state cache's
effect on a chat turn after a long history, and what a long prompt joining does to running streams.

    python benchmarks/serve.py --json serve.json                  # default model + random-weight v4-169m
    python benchmarks/serve.py --models default --concurrency 1 4 --tokens 64

For each model a server runs as a subprocess (``--max-batch`` = the largest concurrency). Per concurrency
c, c clients stream a completion of ``--tokens`` tokens at once; reported: generated tokens/s over the
round (all tokens / wall time), time to first token (median over clients) and the gaps between streamed
tokens (p50, p99 over all clients). The cache scenario sends a chat turn after a ~1000-token history
twice: once when the history's previous turn was served (its state is cached) and once for a history the
server never saw (same length); the time to first token of each, median of ``--repeats``. The join
scenario (169M only) runs 4 streams and lets a 2000-token prompt join: the running streams' largest gap
between tokens with ``--prefill-chunk 256`` and with the prompt read whole in one step.

Random weights are generated once into ~/.cache/rwkv_ggml_bench (RWKV_GGML_BENCH_CACHE overrides). On a
shared machine the numbers are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from machine import cpu_name  # noqa: E402
from models import model_file  # noqa: E402

from rwkv_ggml.generation import default_model_path  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(model: Path, *args: str) -> Iterator[str]:
    """A running server on a free port; yields its base URL."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rwkv_ggml", "serve", "-m", str(model), "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.stderr.read() if proc.stderr else ''}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_local = threading.local()


def _client() -> httpx.Client:
    """This thread's client: one kept-alive connection, so a request's timing has no connection set-up
    (a new httpx client costs ~50 ms of its own, more than a tiny model's first token)."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=600)
    return client


def stream(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed request: send time, the arrival time of each content chunk, the usage."""
    client = _client()
    sent = time.perf_counter()
    arrivals: list[float] = []
    usage: dict[str, Any] = {}
    with client.stream(
        "POST",
        f"{url}{path}",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        timeout=600,
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if chunk.get("usage"):
                usage = chunk["usage"]
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("text") or (choices[0].get("delta") or {}).get("content")):
                arrivals.append(time.perf_counter())
    return {"sent": sent, "arrivals": arrivals, "usage": usage}


def _parallel(n: int, work: Any) -> list[Any]:
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        _client()  # connection set-up before the timing starts
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def concurrency_round(url: str, c: int, tokens: int) -> dict[str, float]:
    # greedy: random weights give nearly flat logits, where top-p sampling sorts most of the vocabulary
    # for every token (~20 ms for 50k tokens in numpy), which a trained model's peaked logits never need
    start = time.perf_counter()
    results = _parallel(
        c,
        lambda i: stream(
            url,
            "/v1/completions",
            {"prompt": f"Story {i}. The history of the city begins", "max_tokens": tokens, "temperature": 0},
        ),
    )
    wall = time.perf_counter() - start
    generated = sum(r["usage"].get("completion_tokens", 0) for r in results)
    ttft = [r["arrivals"][0] - r["sent"] for r in results if r["arrivals"]]
    gaps = [b - a for r in results for a, b in zip(r["arrivals"], r["arrivals"][1:], strict=False)]
    return {
        "concurrency": c,
        "tokens_per_second": generated / wall,
        "ttft_ms_p50": 1e3 * statistics.median(ttft),
        "itl_ms_p50": 1e3 * _percentile(gaps, 50),
        "itl_ms_p99": 1e3 * _percentile(gaps, 99),
        "generated_tokens": generated,
        "wall_s": wall,
    }


def _history(tag: str, approx_tokens: int, chars_per_token: float) -> list[dict[str, str]]:
    """A conversation of about ``approx_tokens`` tokens; ``tag`` makes its start unique."""
    line = "We talked about the rivers, the hills and the old mill by the bridge. "
    text = (tag + " " + line * int(approx_tokens * chars_per_token / len(line) + 1))[
        : int(approx_tokens * chars_per_token)
    ]
    return [
        {"role": "user", "content": text[: len(text) // 2]},
        {"role": "assistant", "content": text[len(text) // 2 :]},
    ]


def cache_scenario(url: str, repeats: int, chars_per_token: float) -> dict[str, float]:
    def ttft(messages: list[dict[str, str]]) -> tuple[float, int]:
        r = stream(url, "/v1/chat/completions", {"messages": messages, "max_tokens": 4, "temperature": 0})
        return r["arrivals"][0] - r["sent"], int(r["usage"]["prompt_tokens_details"]["cached_tokens"])

    cached, uncached, cached_tokens, prompt_tokens = [], [], 0, 0
    for i in range(repeats):
        history = _history(f"Session {i}.", 1000, chars_per_token)
        first = [*history, {"role": "user", "content": "What did we talk about?"}]
        reply = (
            _client()
            .post(
                f"{url}/v1/chat/completions",
                json={"messages": first, "max_tokens": 16, "temperature": 0},
                timeout=600,
            )
            .json()
        )
        follow = [
            *first,
            {"role": "assistant", "content": reply["choices"][0]["message"]["content"] or "ok"},
            {"role": "user", "content": "And then?"},
        ]
        prompt_tokens = reply["usage"]["prompt_tokens"]
        t, cached_tokens = ttft(follow)
        cached.append(t)
        fresh = [*_history(f"Other {i}.", 1000, chars_per_token), *follow[len(history) :]]
        uncached.append(ttft(fresh)[0])
    return {
        "history_tokens": prompt_tokens,
        "cached_prompt_tokens": cached_tokens,
        "ttft_ms_cached": 1e3 * statistics.median(cached),
        "ttft_ms_uncached": 1e3 * statistics.median(uncached),
        "ratio": statistics.median(cached) / statistics.median(uncached),
    }


def join_scenario(model: Path, prefill_chunk: int, tokens: int) -> dict[str, float]:
    """4 streams run; a 2000-token prompt joins; the running streams' gaps between tokens."""
    with server(model, "--max-batch", "8", "--prefill-chunk", str(prefill_chunk)) as url:
        stream(url, "/v1/completions", {"prompt": "warm up", "max_tokens": 4})

        def work(i: int) -> dict[str, Any]:
            if i < 4:
                body = {"prompt": f"Once {i}", "max_tokens": tokens, "temperature": 0}
                return stream(url, "/v1/completions", body)
            time.sleep(1.0)  # let the four streams get going
            ids = [(17 * k) % 50000 + 100 for k in range(2000)]
            return stream(url, "/v1/completions", {"prompt": ids, "max_tokens": 4})

        results = _parallel(5, work)
    gaps = [b - a for r in results[:4] for a, b in zip(r["arrivals"], r["arrivals"][1:], strict=False)]
    return {
        "prefill_chunk": prefill_chunk,
        "itl_ms_p50": 1e3 * _percentile(gaps, 50),
        "itl_ms_max": 1e3 * max(gaps),
        "joiner_ttft_ms": 1e3 * (results[4]["arrivals"][0] - results[4]["sent"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["default", "v4-169m"], help="default and/or shapes")
    parser.add_argument("--format", default="F16", help="format of the random-weight models (default F16)")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the cache scenario")
    parser.add_argument("--no-join", action="store_true", help="skip the long-prompt join scenario")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    report: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "models": {},
    }
    print(f"CPU: {report['cpu']} ({report['cores']} logical cores)")
    for name in args.models:
        path = default_model_path() if name == "default" else model_file(name, args.format)
        chars_per_token = 1.0 if name == "default" else 4.0
        entry: dict[str, Any] = {"file": path.name, "rounds": []}
        with server(path, "--max-batch", str(max(args.concurrency)), "--max-tokens-cap", "100000") as url:
            stream(url, "/v1/completions", {"prompt": "warm up", "max_tokens": 4})
            for c in args.concurrency:
                r = concurrency_round(url, c, args.tokens)
                entry["rounds"].append(r)
                print(
                    f"{name:10s} c={c:<3d} {r['tokens_per_second']:8.1f} tok/s  "
                    f"TTFT p50 {r['ttft_ms_p50']:7.1f} ms  "
                    f"ITL p50 {r['itl_ms_p50']:6.1f} ms  p99 {r['itl_ms_p99']:6.1f} ms",
                    flush=True,
                )
            base = entry["rounds"][0]["tokens_per_second"]
            entry["speedup_max_vs_c1"] = entry["rounds"][-1]["tokens_per_second"] / base
            entry["cache"] = cache_scenario(url, args.repeats, chars_per_token)
            cache = entry["cache"]
            print(
                f"{name:10s} chat turn after {cache['history_tokens']} tokens: TTFT cached "
                f"{cache['ttft_ms_cached']:.1f} ms ({cache['cached_prompt_tokens']} cached tokens), uncached "
                f"{cache['ttft_ms_uncached']:.1f} ms, ratio {cache['ratio']:.3f}",
                flush=True,
            )
        if name != "default" and not args.no_join:
            entry["join"] = [join_scenario(path, chunk, args.tokens * 2) for chunk in (256, 1_000_000)]
            for j in entry["join"]:
                print(
                    f"{name:10s} 2000-token prompt joins 4 streams, prefill chunk "
                    f"{j['prefill_chunk']}: running ITL p50 {j['itl_ms_p50']:.1f} ms, "
                    f"max {j['itl_ms_max']:.1f} ms; joiner TTFT "
                    f"{j['joiner_ttft_ms']:.0f} ms",
                    flush=True,
                )
        report["models"][name] = entry
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
