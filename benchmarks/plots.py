"""Plots of what the benchmarks measure, as PNGs beside their JSON:

    python benchmarks/batch.py --json batch.json && python benchmarks/plots.py batch.json   # -> batch.png
    python benchmarks/serve.py --json serve.json && python benchmarks/plots.py serve.json   # -> serve.png

``batch.json`` (benchmarks/batch.py): tokens/s against the number of sequences decoded together, one panel
per model and one line per format, with each format's memory-bandwidth ceiling drawn dashed. Every step
reads all the weights once, so a step of B sequences takes at least ``weight_bytes / bandwidth`` and
``B * bandwidth / weight_bytes`` tokens/s is the most any kernel could reach; where the line leaves the
ceiling, the step has stopped being bound by memory.

``serve.json`` (benchmarks/serve.py): the server's total tokens/s against the number of concurrent
clients, and the time to the first token of a follow-up turn with the state cache and without it.

The readers take the field names both benchmarks write, and a few spellings of each; matplotlib (the
``bench`` extra) draws with its file-only backend, so no display is needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]


class PlotInputError(ValueError):
    """A benchmark JSON file that cannot be plotted, with the file and the reason."""


def pick(row: Row, *names: str, default: Any = None) -> Any:
    """The first of ``names`` present in ``row`` (the benchmarks' spellings differ a little)."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return default


def machine_of(doc: Row) -> Row:
    machine = pick(doc, "machine", default={})
    return machine if isinstance(machine, Mapping) else {}


def caption(doc: Row) -> str:
    """'CPU, N threads' for the plot's title, from what the benchmark recorded about the machine."""
    machine = machine_of(doc)
    cpu = pick(machine, "cpu", "cpu_model", default=pick(doc, "cpu", default=""))
    threads = pick(machine, "threads", default=pick(doc, "threads"))
    parts = [str(cpu)] if cpu else []
    if threads:
        parts.append(f"{threads} threads")
    return ", ".join(parts)


def rows_of(doc: Any, *keys: str) -> list[Row]:
    if isinstance(doc, list):
        return [r for r in doc if isinstance(r, Mapping)]
    for key in keys:
        found = doc.get(key)
        if isinstance(found, list):
            return [r for r in found if isinstance(r, Mapping)]
    return []


# ---------------------------------------------------------------------------------------------------
# batched decode


def batch_series(doc: Row) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """model -> format -> sorted (B, tokens/s); the plain-eval reference rows (B = 'eval') are left out."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows_of(doc, "rows", "results"):
        batch = pick(row, "batch", "B", "batch_size")
        rate = pick(row, "tokens_per_second", "tokens_s", "tok_s")
        if not isinstance(batch, int) or isinstance(batch, bool) or rate is None:
            continue
        model = str(pick(row, "model", default="model"))
        fmt = str(pick(row, "format", "dtype", default="?"))
        series[model][fmt].append((batch, float(rate)))
    return {m: {f: sorted(points) for f, points in fmts.items()} for m, fmts in series.items()}


def bandwidth_gb_s(doc: Row) -> float | None:
    machine = machine_of(doc)
    value = pick(machine, "bandwidth_gb_s", "read_bandwidth_gb_s", "bandwidth_gbs")
    value = pick(doc, "bandwidth_gb_s", "read_bandwidth_gb_s", "bandwidth_gbs", default=value)
    return float(value) if value else None


def weight_bytes(doc: Row) -> dict[tuple[str, str], int]:
    """(model, format) -> bytes of weights one step reads."""
    found: dict[tuple[str, str], int] = {}
    for row in rows_of(doc, "rows", "results"):
        size = pick(row, "weight_bytes", "streamed_bytes", "bytes_per_step")
        if size:
            key = (str(pick(row, "model", default="model")), str(pick(row, "format", "dtype", default="?")))
            found[key] = int(size)
    return found


def plot_batch(doc: Row, out: Path) -> Path:
    import matplotlib.pyplot as plt

    series = batch_series(doc)
    if not series:
        raise PlotInputError("no rows with a batch size and tokens/s")
    bandwidth = bandwidth_gb_s(doc)
    sizes = weight_bytes(doc)
    fig, axes = plt.subplots(1, len(series), figsize=(6.0 * len(series), 4.6), squeeze=False)
    for ax, (model, formats) in zip(axes[0], series.items(), strict=True):
        for i, (fmt, points) in enumerate(formats.items()):
            color = f"C{i}"
            batches = [b for b, _ in points]
            ax.plot(batches, [r for _, r in points], "o-", color=color, label=fmt)
            size = sizes.get((model, fmt))
            if bandwidth and size:
                ceiling = [b * bandwidth * 1e9 / size for b in batches]
                ax.plot(batches, ceiling, "--", color=color, alpha=0.6, label=f"{fmt} bandwidth ceiling")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({b for pts in formats.values() for b, _ in pts}))
        ax.get_xaxis().set_major_formatter("{x:g}")
        ax.yaxis.set_major_formatter("{x:g}")
        ax.yaxis.set_minor_formatter("{x:g}")
        ax.tick_params(axis="y", which="minor", labelsize="x-small")
        ax.set_xlabel("sequences per step (B)")
        ax.set_ylabel("tokens/s")
        ax.set_title(model)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    note = f"read bandwidth {bandwidth:.1f} GB/s" if bandwidth else "no bandwidth recorded: no ceiling"
    fig.suptitle(f"Batched decode, tokens/s against B\n{caption(doc)}; {note}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------------
# serving


def concurrency_points(doc: Row) -> list[tuple[int, float]]:
    points = []
    for row in rows_of(doc, "concurrency", "throughput", "rows"):
        clients = pick(row, "concurrency", "clients")
        rate = pick(row, "tokens_per_second", "tokens_s", "tok_s")
        if isinstance(clients, int) and rate is not None:
            points.append((clients, float(rate)))
    return sorted(points)


def ttft_pairs(doc: Row) -> dict[str, dict[bool, float]]:
    """label (e.g. the prompt length) -> {cached: ttft in ms}."""
    pairs: dict[str, dict[bool, float]] = defaultdict(dict)
    for row in rows_of(doc, "ttft", "first_token"):
        ms = pick(row, "ttft_ms", "ms")
        if ms is None and pick(row, "ttft_s") is not None:
            ms = 1e3 * float(row["ttft_s"])
        cached = pick(row, "cached", "state_cache", "cache")
        if ms is None or cached is None:
            continue
        if isinstance(cached, str):
            cached = cached.lower() in ("on", "true", "yes", "warm", "cached")
        label = pick(row, "label", default=None)
        if label is None:
            tokens = pick(row, "prompt_tokens", "history_tokens")
            label = f"{tokens} tokens" if tokens is not None else ""
        pairs[str(label)][bool(cached)] = float(ms)
    return dict(pairs)


def plot_serve(doc: Row, out: Path) -> Path:
    import matplotlib.pyplot as plt

    points = concurrency_points(doc)
    pairs = ttft_pairs(doc)
    if not points and not pairs:
        raise PlotInputError("no concurrency rows and no time-to-first-token rows")
    panels = [p for p in (points, pairs) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    axes_left = list(axes[0])
    if points:
        ax = axes_left.pop(0)
        ax.plot([c for c, _ in points], [r for _, r in points], "o-")
        ax.set_xscale("log", base=2)
        ax.set_xticks([c for c, _ in points])
        ax.get_xaxis().set_major_formatter("{x:g}")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("generated tokens/s (all clients)")
        ax.set_title("Throughput")
        ax.grid(True, alpha=0.3)
    if pairs:
        ax = axes_left.pop(0)
        labels = list(pairs)
        width = 0.38
        kinds = ((-0.5, False, "without the state cache", "C3"), (0.5, True, "with the state cache", "C2"))
        for offset, cached, name, color in kinds:
            xs = [i + offset * width for i in range(len(labels))]
            heights = [pairs[label].get(cached, math.nan) for label in labels]
            bars = ax.bar(xs, heights, width, label=name, color=color)
            ax.bar_label(bars, fmt="%.0f ms", fontsize="small")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("conversation so far")
        ax.set_ylabel("time to first token (ms)")
        ax.set_title("Follow-up turn: time to first token")
        ax.legend(fontsize="small")
    fig.suptitle(f"rwkv-ggml serve\n{caption(doc)}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------------


def kind_of(doc: Any) -> str:
    """'batch' or 'serve': the benchmark's own "benchmark" field, else what the rows hold."""
    if isinstance(doc, Mapping) and doc.get("benchmark") in ("batch", "serve"):
        return str(doc["benchmark"])
    if isinstance(doc, Mapping) and (concurrency_points(doc) or ttft_pairs(doc)):
        return "serve"
    return "batch"


def plot_file(path: Path, out_dir: Path | None = None) -> Path:
    """The PNG of one benchmark JSON file, written beside it (or into ``out_dir``); returns its path."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlotInputError(f"{path}: cannot read it as JSON: {exc}") from exc
    out = (out_dir or path.parent) / (path.stem + ".png")
    try:
        if kind_of(doc) == "serve":
            return plot_serve(doc, out)
        return plot_batch(doc if isinstance(doc, Mapping) else {"rows": doc}, out)
    except PlotInputError as exc:
        raise PlotInputError(f"{path}: {exc}") from exc


def main(argv: Iterable[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", type=Path, help="files written by batch.py --json or serve.py --json")
    ap.add_argument("--out-dir", type=Path, help="where the PNGs go (default: beside each JSON file)")
    args = ap.parse_args(None if argv is None else list(argv))
    for path in args.json:
        try:
            print(plot_file(path, args.out_dir))
        except PlotInputError as exc:
            print(f"plots.py: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
