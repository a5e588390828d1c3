"""Plots of what the benchmarks measure, as PNGs beside their JSON:

    python benchmarks/batch.py --json batch.json && python benchmarks/plots.py batch.json   # -> batch.png
    python benchmarks/serve.py --json serve.json && python benchmarks/plots.py serve.json   # -> serve.png

``batch.json`` (benchmarks/batch.py): tokens/s against the number of sequences decoded together, one panel
per model and one line per format, with each format's memory-bandwidth ceiling drawn dashed. Every step
reads all the weights once, so a step of B sequences takes at least ``weight_bytes / bandwidth`` and
``B * bandwidth / weight_bytes`` tokens/s is the most any kernel could reach; where the measured line
falls away from its ceiling, the step is no longer bound by reading the weights. The weight bytes are
counted in the benchmark's own model files (benchmarks/models.py's cache); the bandwidth is ``--bandwidth``
GB/s, or else measured when plotting, on this machine with the run's thread count (batch.py records the
arithmetic peaks, not the bandwidth).

``serve.json`` (benchmarks/serve.py): the server's total tokens/s against the number of concurrent
clients (one line per model), and the time to the first token of a follow-up chat turn whose history
comes from the state cache beside one whose history has to be read again.

matplotlib (the ``bench`` extra) draws with its file-only backend, so no display is needed.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine.py and models.py beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Row = Mapping[str, Any]


class PlotInputError(ValueError):
    """A benchmark JSON file that cannot be plotted, with the file and the reason."""


def pick(row: Row, *names: str, default: Any = None) -> Any:
    """The first of ``names`` present in ``row`` (the benchmarks' spellings differ a little)."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return default


def plain_log_labels(ax: Any) -> None:
    """A log y axis labelled 10, 20, 50, 100, ... instead of powers of ten."""
    ax.yaxis.set_major_formatter("{x:g}")
    ax.yaxis.set_minor_formatter(
        lambda y, _pos: f"{y:g}" if y > 0 and round(y / 10 ** math.floor(math.log10(y))) in (2, 5) else ""
    )
    ax.tick_params(axis="y", which="minor", labelsize="small")


def machine_of(doc: Row) -> Row:
    machine = pick(doc, "machine", default={})
    return machine if isinstance(machine, Mapping) else {}


def caption(doc: Row) -> str:
    """'CPU, N threads' for the plot's title, from what the benchmark recorded about the machine."""
    machine = machine_of(doc)
    cpu = pick(machine, "cpu", "cpu_model", default=pick(doc, "cpu", default=""))
    threads = pick(machine, "threads", default=pick(doc, "threads"))
    cores = pick(machine, "cores", default=pick(doc, "cores"))
    parts = [str(cpu)] if cpu else []
    if cores:
        parts.append(f"{cores} cores")
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
    """model -> format -> sorted (B, tokens/s) from batch.py's ``results``; its plain-eval reference rows
    (``batch`` 0) are left out."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows_of(doc, "results", "rows"):
        batch = pick(row, "batch")
        rate = pick(row, "tokens_per_s", "tokens_per_second")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1 or rate is None:
            continue
        series[str(pick(row, "model", default="model"))][str(pick(row, "format", default="?"))].append(
            (batch, float(rate))
        )
    return {m: {f: sorted(points) for f, points in fmts.items()} for m, fmts in series.items()}


def weight_bytes(doc: Row, cache: Path | None = None) -> dict[tuple[str, str], int]:
    """(model, format) -> bytes of weights one step reads: a row's ``weight_bytes`` where the JSON has it,
    else counted in the benchmark's own model file in ``cache`` (benchmarks/models.py's folder) where that
    file is there. The embedding table is read one row per token, so only that row counts."""
    from models import CACHE, streamed_bytes

    found: dict[tuple[str, str], int] = {}
    for model, formats in batch_series(doc).items():
        for fmt in formats:
            path = (cache or CACHE) / f"{model}-{fmt}.bin"
            if path.is_file():
                found[(model, fmt)] = streamed_bytes(path)
    for row in rows_of(doc, "results", "rows"):
        if pick(row, "weight_bytes"):
            found[(str(pick(row, "model")), str(pick(row, "format")))] = int(row["weight_bytes"])
    return found


def measured_bandwidth_gb_s(threads: int) -> float:
    """Read bandwidth now, with the engine's pool, when the JSON carries none (machine.py)."""
    from machine import read_bandwidth

    from rwkv_ggml import ggml

    pool = ggml.Pool(threads)
    try:
        return read_bandwidth(pool, threads)
    finally:
        pool.close()


def plot_batch(doc: Row, out: Path, bandwidth: tuple[float, str] | None) -> Path:
    """``bandwidth``: (GB/s, where the figure comes from) for the ceilings, or None for none."""
    import matplotlib.pyplot as plt

    series = batch_series(doc)
    if not series:
        raise PlotInputError("no rows with a batch size and tokens/s")
    sizes = weight_bytes(doc) if bandwidth else {}
    cols = min(2, len(series))
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.4 * rows + 0.8), squeeze=False)
    for ax in axes.flat[len(series) :]:
        ax.set_visible(False)
    for ax, (model, formats) in zip(axes.flat, series.items(), strict=False):
        for i, (fmt, points) in enumerate(formats.items()):
            color = f"C{i}"
            batches = [b for b, _ in points]
            ax.plot(batches, [r for _, r in points], "o-", color=color, label=fmt)
            size = sizes.get((model, fmt))
            if bandwidth and size:
                ceiling = [b * bandwidth[0] * 1e9 / size for b in batches]
                ax.plot(batches, ceiling, "--", color=color, alpha=0.6, label=f"{fmt} bandwidth ceiling")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({b for pts in formats.values() for b, _ in pts}))
        ax.get_xaxis().set_major_formatter("{x:g}")
        plain_log_labels(ax)
        ax.set_xlabel("sequences per step (B)")
        ax.set_ylabel("tokens/s")
        ax.set_title(model)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    note = f"read bandwidth {bandwidth[0]:.1f} GB/s ({bandwidth[1]})" if bandwidth else "no bandwidth ceiling"
    fig.suptitle(f"Batched decode, tokens/s against B\n{caption(doc)}\n{note}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------------
# serving


def serve_models(doc: Row) -> dict[str, Row]:
    """name -> the model's entry: serve.py writes ``{"cpu", "cores", "models": {name: {"rounds": [...],
    "cache": {...}}}}``."""
    models = pick(doc, "models", default={})
    if not isinstance(models, Mapping):
        return {}
    return {str(k): v for k, v in models.items() if isinstance(v, Mapping)}


def model_label(name: str, entry: Row) -> str:
    """The model's file stem when serve.py recorded it (it names the format too), else its name."""
    file = pick(entry, "file")
    return Path(str(file)).stem if file else name


def concurrency_points(entry: Row) -> list[tuple[int, float]]:
    """Sorted (concurrent clients, generated tokens/s of all of them) of one model's rounds."""
    points = []
    for row in rows_of(entry, "rounds"):
        clients = pick(row, "concurrency", "clients")
        rate = pick(row, "tokens_per_second")
        if isinstance(clients, int) and rate is not None:
            points.append((clients, float(rate)))
    return sorted(points)


def ttft_pair(entry: Row) -> tuple[float, float, int | None] | None:
    """(uncached ms, cached ms, history tokens) of the follow-up chat turn, or None if not measured."""
    cache = pick(entry, "cache", default={})
    if not isinstance(cache, Mapping):
        return None
    uncached, cached = pick(cache, "ttft_ms_uncached"), pick(cache, "ttft_ms_cached")
    if uncached is None or cached is None:
        return None
    return float(uncached), float(cached), pick(cache, "history_tokens")


def plot_serve(doc: Row, out: Path) -> Path:
    import matplotlib.pyplot as plt

    models = serve_models(doc)
    throughput = {name: concurrency_points(e) for name, e in models.items() if concurrency_points(e)}
    pairs = {name: p for name, e in models.items() if (p := ttft_pair(e)) is not None}
    if not throughput and not pairs:
        raise PlotInputError("no model with concurrency rounds or a cache scenario")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.6))
    for i, (name, points) in enumerate(throughput.items()):
        label = model_label(name, models[name])
        left.plot([c for c, _ in points], [r for _, r in points], "o-", color=f"C{i}", label=label)
    clients = sorted({c for points in throughput.values() for c, _ in points})
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xticks(clients)
    left.get_xaxis().set_major_formatter("{x:g}")
    plain_log_labels(left)
    left.set_xlabel("concurrent clients")
    left.set_ylabel("generated tokens/s, all clients together")
    left.set_title("Throughput")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize="small")

    names = list(pairs)
    width = 0.38
    kinds = ((-0.5, 0, "history read again (no cache)", "C3"), (0.5, 1, "history from the state cache", "C2"))
    for offset, which, label, color in kinds:
        xs = [i + offset * width for i in range(len(names))]
        bars = right.bar(xs, [pairs[n][which] for n in names], width, label=label, color=color)
        right.bar_label(bars, fmt="%.0f ms", fontsize="small")
    right.set_xticks(
        range(len(names)),
        [
            model_label(n, models[n]) + ("" if pairs[n][2] is None else f"\n({pairs[n][2]}-token history)")
            for n in names
        ],
    )
    right.set_ylabel("time to first token (ms)")
    right.set_title("Follow-up chat turn: time to first token")
    right.legend(fontsize="small")
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
    if isinstance(doc, Mapping) and serve_models(doc):
        return "serve"
    return "batch"


def batch_bandwidth(doc: Row, given: str) -> tuple[float, str] | None:
    """The bandwidth for the ceilings: ``given`` GB/s, "none", or "auto" (the JSON's own figure if it has
    one, else measured now on this machine with the run's thread count)."""
    if given == "none":
        return None
    if given != "auto":
        return float(given), "given"
    recorded = pick(machine_of(doc), "bandwidth_gb_s", default=pick(doc, "bandwidth_gb_s"))
    if recorded:
        return float(recorded), "measured in the run"
    return measured_bandwidth_gb_s(int(pick(doc, "threads", default=2))), "measured when plotting"


def plot_file(path: Path, out_dir: Path | None = None, bandwidth: str = "auto") -> Path:
    """The PNG of one benchmark JSON file, written beside it (or into ``out_dir``); returns its path."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlotInputError(f"{path}: cannot read it as JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise PlotInputError(f"{path}: not a benchmark report (a JSON object)")
    out = (out_dir or path.parent) / (path.stem + ".png")
    try:
        if kind_of(doc) == "serve":
            return plot_serve(doc, out)
        if not batch_series(doc):
            raise PlotInputError("no rows with a batch size and tokens/s")
        return plot_batch(doc, out, batch_bandwidth(doc, bandwidth))
    except PlotInputError as exc:
        raise PlotInputError(f"{path}: {exc}") from exc


def bandwidth_option(text: str) -> str:
    if text in ("auto", "none"):
        return text
    try:
        if float(text) > 0:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"'{text}' is not auto, none or a bandwidth in GB/s above 0")


def main(argv: Iterable[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", type=Path, help="files written by batch.py --json or serve.py --json")
    ap.add_argument("--out-dir", type=Path, help="where the PNGs go (default: beside each JSON file)")
    ap.add_argument(
        "--bandwidth",
        type=bandwidth_option,
        default="auto",
        metavar="GB/S|auto|none",
        help="memory read bandwidth for the batch plot's ceilings (default auto: the JSON's own figure, "
        "else measured now with the run's thread count)",
    )
    args = ap.parse_args(None if argv is None else list(argv))
    for path in args.json:
        try:
            print(plot_file(path, args.out_dir, args.bandwidth))
        except PlotInputError as exc:
            print(f"plots.py: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
