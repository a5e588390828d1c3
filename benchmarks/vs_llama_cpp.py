"""Side by side with llama.cpp on one set of random RWKV-7 weights: per-token latency and prompt rate.

The weights of a shape (benchmarks/models.py) are written as our ``.bin`` and, with the ``gguf``
package, as an F16 GGUF file in the layout llama.cpp's rwkv7 loader reads (formats.md §7.3; the World
vocabulary as its converter writes it, the LoRA ranks as metadata). llama.cpp itself quantizes that file
to Q8_0, Q4_0 and Q4_K_M (``llama_model_quantize``, its default mixes: the head of a Q4_0 file is Q6_K).
Three engines run per format: ours on the ``.bin`` (our quantizer's file, emb and head F16), ours on the
very GGUF file llama.cpp runs, and llama.cpp through llama-cpp-python. Before timing, both engines run a
short prompt and then single tokens on the same GGUF file and their logits are compared (a mismatch
means the GGUF layout is wrong and the timings compare different models).

Each of ``--rounds`` rounds measures the read bandwidth (2 MiB and 4 KiB pages: the floor of a token is
its weight and state bytes over it), then every engine in turn (the order rotates per round): the median
of ``--tokens`` single-token evals and one ``--prompt``-token prompt from a fresh state. The table gives
medians over rounds and the median of the per-round ratios ours(GGUF)/llama.cpp with their range: on a
shared host the speed drifts between minutes, a ratio within a round does not.

llama-cpp-python is not a dependency of the package; it builds llama.cpp from its source distribution
(several minutes; on a busy machine limit the parallel jobs)::

    CMAKE_BUILD_PARALLEL_LEVEL=2 pip install llama-cpp-python
    python benchmarks/vs_llama_cpp.py --models v7-0.1b --formats F16 Q8_0 Q4_0 Q4_K_M

Files are cached beside the other random models (~/.cache/rwkv_ggml_bench; RWKV_GGML_BENCH_CACHE).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name, read_bandwidth
from models import CACHE, SHAPES, model_file

from rwkv_ggml import Model, ggml
from rwkv_ggml.gguf_model import open_model_file

# llama.cpp's llama_ftype values (llama.h) of the files compared
LLAMA_FTYPES = {"Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15}
BIN_FORMATS = ("F16", "Q8_0", "Q4_0")  # our .bin of the same weights (our quantizer)
BF16_LABEL = "ours GGUF bf16"  # --bf16: F16 prompts through the opt-in bf16 mat-mat route


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """llama.cpp logs to fd 2 from C; silence it for a load or a quantization."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def gguf_file(name: str, fmt: str, threads: int) -> Path:
    """The cached GGUF file of a shape: F16 written here, the others quantized from it by llama.cpp."""
    path = CACHE / f"{name}-{fmt}.gguf"
    if path.exists():
        return path
    if fmt == "F16":
        from tests.reference.gguf_files import world_token_texts, write_gguf

        partial = path.with_suffix(".gguf.part")
        write_gguf(model_file(name, "F16"), partial, tokens=world_token_texts(SHAPES[name][3]))
        partial.rename(path)
        return path
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[fmt]
    params.nthread = threads
    partial = path.with_suffix(".gguf.part")
    src = gguf_file(name, "F16", threads)
    with quiet_stderr():
        status = llama_cpp.llama_model_quantize(
            str(src).encode(), str(partial).encode(), ctypes.byref(params)
        )
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {fmt}) failed with status {status}")
    partial.rename(path)
    return path


def bytes_per_token(path: Path, state_floats: int) -> int:
    """Bytes a token moves: every weight but the embedding table (one row of it), and the state read and
    written once."""
    with open_model_file(path) as mf:
        emb = mf.tensors["emb.weight"]
        weights = sum(r.nbytes for n, r in mf.tensors.items() if n != "emb.weight")
        return weights + emb.nbytes // emb.ne[1] + 2 * 4 * state_floats


class Engine:
    label: str

    def start_decoding(self) -> None:
        """A fresh state for :meth:`decode`."""
        raise NotImplementedError

    def decode(self, tokens: np.ndarray) -> list[float]:
        """Seconds of each single-token eval, continuing the state of the previous call."""
        raise NotImplementedError

    def prompt(self, tokens: np.ndarray) -> float:
        """Tokens per second of one prompt from a fresh state."""
        raise NotImplementedError

    def logits_steps(self, prompt: np.ndarray, steps: np.ndarray) -> list[np.ndarray]:
        """Logits after the prompt (one sequence eval), then after each single-token step."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Ours(Engine):
    def __init__(self, label: str, path: Path, threads: int, bf16: bool = False) -> None:
        self.label = label
        self.model = Model(path, threads=threads, bf16=bf16)
        self.logits = np.empty(self.model.n_vocab, dtype=np.float32)
        self.state = self.model.init_state()

    def start_decoding(self) -> None:
        self.state = self.model.init_state()

    def decode(self, tokens: np.ndarray) -> list[float]:
        times = []
        for t in tokens:
            t0 = time.perf_counter()
            self.model.eval(int(t), self.state, state_out=self.state, logits_out=self.logits)
            times.append(time.perf_counter() - t0)
        return times

    def prompt(self, tokens: np.ndarray) -> float:
        t0 = time.perf_counter()
        self.model.eval_sequence(tokens)
        return len(tokens) / (time.perf_counter() - t0)

    def logits_steps(self, prompt: np.ndarray, steps: np.ndarray) -> list[np.ndarray]:
        logits, state = self.model.eval_sequence(prompt)
        assert logits is not None
        out = [logits.copy()]
        for t in steps:
            logits, state = self.model.eval(int(t), state)
            out.append(logits.copy())
        return out

    def close(self) -> None:
        self.model.close()


class LlamaCpp(Engine):
    def __init__(self, path: Path, threads: int, n_ctx: int, extra_buffers: bool) -> None:
        import llama_cpp.llama_cpp as low_level
        from llama_cpp import Llama

        self.label = "llama.cpp"
        defaults = low_level.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = defaults()
            params.use_extra_bufts = False
            return params

        if not extra_buffers:  # the wrapper has no argument for it: its defaults are patched for the load
            low_level.llama_model_default_params = without_extra_buffers
        try:
            with quiet_stderr():
                self.llm: Any = Llama(
                    model_path=str(path),
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_ctx=n_ctx,
                    n_batch=512,
                    verbose=False,
                )
        finally:
            low_level.llama_model_default_params = defaults

    def last_logits(self) -> np.ndarray:
        # without logits_all the wrapper keeps no copy: the context's one output row is the last token's
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))
        return np.array(row, dtype=np.float32)

    def start_decoding(self) -> None:
        self.llm.reset()

    def decode(self, tokens: np.ndarray) -> list[float]:
        times = []
        for t in tokens:
            t0 = time.perf_counter()
            self.llm.eval([int(t)])
            times.append(time.perf_counter() - t0)
        return times

    def prompt(self, tokens: np.ndarray) -> float:
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval([int(t) for t in tokens])
        return len(tokens) / (time.perf_counter() - t0)

    def logits_steps(self, prompt: np.ndarray, steps: np.ndarray) -> list[np.ndarray]:
        self.llm.reset()
        self.llm.eval([int(t) for t in prompt])
        out = [self.last_logits()]
        for t in steps:
            self.llm.eval([int(t)])
            out.append(self.last_logits())
        return out

    def close(self) -> None:
        self.llm.close()


def agreement(ours: Engine, theirs: Engine, vocab: int) -> str:
    """Top-token agreement and the largest logit difference over a 16-token prompt and 8 single steps."""
    rng = np.random.default_rng(7)
    prompt, steps = rng.integers(1, vocab, 16), rng.integers(1, vocab, 8)
    a, b = ours.logits_steps(prompt, steps), theirs.logits_steps(prompt, steps)
    same_top = sum(int(np.argmax(x) == np.argmax(y)) for x, y in zip(a, b, strict=True))
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
    scale = max(float(np.abs(y).max()) for y in b)
    return (
        f"top token same in {same_top}/{len(a)} evals, max |logit diff| {diff:.2e} (max |logit| {scale:.1f})"
    )


@dataclass
class Cells:
    token_ms: dict[str, list[float]] = field(default_factory=dict)
    prompt_rate: dict[str, list[float]] = field(default_factory=dict)
    floor_ms: list[float] = field(default_factory=list)  # from 2 MiB pages
    floor_4k_ms: list[float] = field(default_factory=list)


def fmt_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def timed_round(engines: list[Engine], decode: np.ndarray, prompt: np.ndarray, block: int) -> dict[str, Any]:
    """One round: the engines decode in turns of ``block`` tokens (so a slow second of the host hits all of
    them alike; the first block only warms up), then each runs the prompt, in turn."""
    times: dict[str, list[float]] = {e.label: [] for e in engines}
    for e in engines:
        e.start_decoding()
    for start in range(0, len(decode), block):
        for e in engines:
            spent = e.decode(decode[start : start + block])
            if start > 0:
                times[e.label] += spent
    rates = {e.label: e.prompt(prompt) for e in engines}
    return {"token_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()}, "prompt": rates}


def run_format(name: str, fmt: str, args: argparse.Namespace, pool: ggml.Pool) -> Cells:
    gguf_path = gguf_file(name, fmt, args.threads)
    engines: list[Engine] = []
    if fmt in BIN_FORMATS and not args.no_bin:
        engines.append(Ours("ours .bin", model_file(name, fmt), args.threads))
    ours_gguf = Ours("ours GGUF", gguf_path, args.threads)
    engines.append(ours_gguf)
    if fmt == "F16" and args.bf16:
        engines.append(Ours(BF16_LABEL, gguf_path, args.threads, bf16=True))
    llama = LlamaCpp(gguf_path, args.threads, max(1024, args.prompt + args.tokens), not args.llama_no_extra)
    engines.append(llama)
    try:
        vocab = SHAPES[name][3]
        print(
            f"{name} {fmt}: agreement on {gguf_path.name}: {agreement(ours_gguf, llama, vocab)}", flush=True
        )
        moved = bytes_per_token(gguf_path, ours_gguf.model.state_size)
        rng = np.random.default_rng(1)
        block = 16
        decode, prompt = rng.integers(1, vocab, args.tokens + block), rng.integers(1, vocab, args.prompt)
        for e in engines:  # untimed: builds the graphs of these lengths, pages the weights in
            e.prompt(prompt[:64])
            e.start_decoding()
            e.decode(decode[:8])
        cells = Cells()
        for r in range(args.rounds):
            bw = read_bandwidth(pool, args.threads, nbytes=512 << 20, repeats=3)
            bw_4k = read_bandwidth(pool, args.threads, huge=False, nbytes=512 << 20, repeats=3)
            cells.floor_ms.append(moved / bw / 1e6)
            cells.floor_4k_ms.append(moved / bw_4k / 1e6)
            order = engines[r % len(engines) :] + engines[: r % len(engines)]
            result = timed_round(order, decode, prompt, block)
            for e in engines:
                cells.token_ms.setdefault(e.label, []).append(result["token_ms"][e.label])
                cells.prompt_rate.setdefault(e.label, []).append(result["prompt"][e.label])
            line = "  ".join(
                f"{e.label} {cells.token_ms[e.label][-1]:.2f} ms {cells.prompt_rate[e.label][-1]:.0f} tok/s"
                for e in engines
            )
            print(
                f"  round {r + 1}: floor {cells.floor_ms[-1]:.2f} ms "
                f"(4 KiB pages {cells.floor_4k_ms[-1]:.2f}); {line}",
                flush=True,
            )
        print(f"  {moved / 1e6:.0f} MB per token", flush=True)
        return cells
    finally:
        for e in engines:
            e.close()


def table(name: str, results: dict[str, Cells]) -> None:
    print(f"\n{name}: per token ms (median of rounds; floor = bytes per token / read bandwidth, 2 MiB pages)")
    print(
        f"{'format':<8}{'floor':>7}{'ours .bin':>11}{'ours GGUF':>11}{'llama.cpp':>11}"
        f"{'   ours GGUF / llama.cpp time':<30}{'ours GGUF / floor':>18}{'llama.cpp / floor':>18}"
    )
    for fmt, c in results.items():
        ours, theirs = c.token_ms["ours GGUF"], c.token_ms["llama.cpp"]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        # per round: each time over the floor measured in that round, as the bandwidth drifts
        ours_floor = [a / f for a, f in zip(ours, c.floor_ms, strict=True)]
        theirs_floor = [a / f for a, f in zip(theirs, c.floor_ms, strict=True)]
        bin_ms = c.token_ms.get("ours .bin")
        bin_text = f"{statistics.median(bin_ms):>11.2f}" if bin_ms else f"{'-':>11}"
        print(
            f"{fmt:<8}{statistics.median(c.floor_ms):>7.2f}{bin_text}{statistics.median(ours):>11.2f}"
            f"{statistics.median(theirs):>11.2f}   {fmt_range(ratios):<27}"
            f"{statistics.median(ours_floor):>18.2f}{statistics.median(theirs_floor):>18.2f}"
        )
    print(f"\n{name}: prompt tokens/s (median of rounds)")
    print(f"{'format':<8}{'ours .bin':>11}{'ours GGUF':>11}{'llama.cpp':>11}   ours GGUF / llama.cpp speed")
    for fmt, c in results.items():
        ours, theirs = c.prompt_rate["ours GGUF"], c.prompt_rate["llama.cpp"]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        bin_rate = c.prompt_rate.get("ours .bin")
        bin_text = f"{statistics.median(bin_rate):>11.0f}" if bin_rate else f"{'-':>11}"
        print(
            f"{fmt:<8}{bin_text}{statistics.median(ours):>11.0f}{statistics.median(theirs):>11.0f}"
            f"   {fmt_range(ratios)}"
        )
        if BF16_LABEL in c.prompt_rate:
            fast = c.prompt_rate[BF16_LABEL]
            ratios = [a / b for a, b in zip(fast, theirs, strict=True)]
            print(f"{fmt + ' bf16':<19}{statistics.median(fast):>11.0f}{'':>11}   {fmt_range(ratios)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v7_shapes = [n for n, s in SHAPES.items() if s[0] == "7"]
    ap.add_argument("--models", nargs="+", default=["v7-0.1b"], choices=v7_shapes)
    ap.add_argument("--formats", nargs="+", default=["F16", "Q8_0", "Q4_0", "Q4_K_M"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128, help="single-token evals timed per round")
    ap.add_argument("--prompt", type=int, default=512, help="prompt length")
    ap.add_argument(
        "--llama-no-extra",
        action="store_true",
        help="llama.cpp without its extra weight buffers (AMX, repacked blocks): on a CPU whose AMX "
        "llama.cpp uses but the host does not allow, its quantized batches crash",
    )
    ap.add_argument("--no-bin", action="store_true", help="skip our .bin (less memory on large shapes)")
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="also run the F16 GGUF with Model(bf16=True): prompts on bf16 dot products (where the CPU has "
        "them) instead of f32 multiply-adds; mat-vec, and so per token, is unchanged",
    )
    args = ap.parse_args()
    bad = [f for f in args.formats if f != "F16" and f not in LLAMA_FTYPES]
    if bad:
        ap.error(f"formats {bad} not handled (choose from F16 {' '.join(LLAMA_FTYPES)})")
    missing = [m for m in ("llama_cpp", "gguf") if not _importable(m)]
    if missing:
        print(
            f"skipped: {' and '.join(missing)} not installed (CMAKE_BUILD_PARALLEL_LEVEL=2 pip install "
            "llama-cpp-python gguf; llama-cpp-python builds llama.cpp from source)"
        )
        return
    import llama_cpp

    print(
        f"CPU: {cpu_name()}; {args.threads} threads; our SIMD level {ggml.simd_level()}; "
        f"llama-cpp-python {llama_cpp.__version__}; {args.rounds} rounds, engines alternating; "
        f"{args.tokens} decoded tokens, {args.prompt}-token prompt",
        flush=True,
    )
    print(f"llama.cpp CPU features: {llama_cpp.llama_print_system_info().decode().strip()}", flush=True)
    pool = ggml.Pool(args.threads)
    try:
        for name in args.models:
            results: dict[str, Cells] = {}
            for fmt in args.formats:
                results[fmt] = run_format(name, fmt, args, pool)
            table(name, results)
    finally:
        pool.close()


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
