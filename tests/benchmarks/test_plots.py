"""benchmarks/plots.py: PNGs drawn from the JSON written by benchmarks/batch.py and benchmarks/serve.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rwkv_ggml.fileformat import read_model_file
from tests.conftest import REPO_ROOT, tiny_path

pytest.importorskip("matplotlib", reason="matplotlib (the bench extra) is not installed")
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

BATCH = {  # the shape benchmarks/batch.py writes
    "cpu": "Test CPU",
    "threads": 2,
    "results": [
        {"model": "m", "format": "F16", "batch": 0, "ms_per_step": 100.0, "tokens_per_s": 10.0},
        {"model": "m", "format": "F16", "batch": 4, "ms_per_step": 120.0, "tokens_per_s": 33.3},
        {"model": "m", "format": "F16", "batch": 1, "ms_per_step": 100.0, "tokens_per_s": 10.0},
        {"model": "m", "format": "Q8_0", "batch": 1, "ms_per_step": 60.0, "tokens_per_s": 16.7},
    ],
}
SERVE = {  # the shape benchmarks/serve.py writes
    "cpu": "Test CPU",
    "cores": 2,
    "models": {
        "default": {
            "rounds": [
                {"concurrency": 4, "tokens_per_second": 250.0, "ttft_ms_p50": 20.0},
                {"concurrency": 1, "tokens_per_second": 100.0, "ttft_ms_p50": 10.0},
            ],
            "cache": {"history_tokens": 1030, "ttft_ms_cached": 6.0, "ttft_ms_uncached": 90.0},
        },
        "v4-169m": {"rounds": [{"concurrency": 1, "tokens_per_second": 20.0}]},
    },
}


def run_plots(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "plots.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_batch_rows_are_grouped_by_model_and_format_without_the_eval_reference() -> None:
    assert plots.batch_series(BATCH) == {"m": {"F16": [(1, 10.0), (4, 33.3)], "Q8_0": [(1, 16.7)]}}
    assert plots.caption(BATCH) == "Test CPU, 2 threads"
    assert plots.batch_bandwidth(BATCH, "12.5") == (12.5, "given")
    assert plots.batch_bandwidth(BATCH, "none") is None


def test_the_ceiling_counts_the_weights_in_the_benchmarks_model_file(tmp_path: Path) -> None:
    model = tiny_path("tiny-rwkv-4v0-660K-FP16.bin")
    shutil.copy(model, tmp_path / "m-F16.bin")
    with read_model_file(model) as mf:
        emb = mf.tensors["emb.weight"]
        expected = (
            sum(r.nbytes for n, r in mf.tensors.items() if n != "emb.weight") + emb.nbytes // emb.shape[0]
        )
    # the file's bytes but the embedding table, of which a token reads one row; no file, no ceiling
    assert plots.weight_bytes(BATCH, cache=tmp_path) == {("m", "F16"): expected}


def test_serve_rounds_and_the_cache_scenario_are_read_per_model() -> None:
    models = plots.serve_models(SERVE)
    assert plots.concurrency_points(models["default"]) == [(1, 100.0), (4, 250.0)]
    assert plots.ttft_pair(models["default"]) == (90.0, 6.0, 1030)
    assert plots.ttft_pair(models["v4-169m"]) is None
    assert plots.caption(SERVE) == "Test CPU, 2 cores"
    assert plots.kind_of(SERVE) == "serve" and plots.kind_of(BATCH) == "batch"


def test_each_json_gets_a_png_beside_it(tmp_path: Path) -> None:
    (tmp_path / "batch.json").write_text(json.dumps(BATCH))
    (tmp_path / "serve.json").write_text(json.dumps(SERVE))
    proc = run_plots(str(tmp_path / "batch.json"), str(tmp_path / "serve.json"), "--bandwidth", "10")
    assert proc.returncode == 0, proc.stderr
    for name in ("batch.png", "serve.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    assert proc.stdout.split() == [str(tmp_path / "batch.png"), str(tmp_path / "serve.png")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read it as JSON"),
        ('{"results": []}', "no rows with a batch size and tokens/s"),
        ("[1, 2]", "not a benchmark report (a JSON object)"),
    ],
)
def test_a_file_that_cannot_be_plotted_is_named(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = run_plots(str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"plots.py: {bad}: {message}")
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad.png").exists()
