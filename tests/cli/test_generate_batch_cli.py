"""``rwkv-ggml generate --prompts-file FILE``: every line of FILE continued in one batch, JSON lines out,
each equal to generating that prompt alone (greedy; batches are exact, tests/model/test_batch.py)."""

from __future__ import annotations

import json
from pathlib import Path

from rwkv_ggml import Model
from rwkv_ggml.generation import default_model_path
from tests.conftest import run_cli

PROMPTS = ["The quick brown fox", "Hello", "In 1990,"]


def test_prompts_file_gives_one_json_line_per_prompt(tmp_path: Path) -> None:
    f = tmp_path / "prompts.txt"
    f.write_text(PROMPTS[0] + "\n\n" + "\n".join(PROMPTS[1:]) + "\n", encoding="utf-8")  # a blank line
    proc = run_cli("generate", "--prompts-file", str(f), "-n", "10", "--temperature", "0", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    assert [r["prompt"] for r in records] == PROMPTS
    with Model(default_model_path(), threads=1) as m:
        for r in records:
            alone = m.generate(r["prompt"], 10, temperature=0.0)
            assert r["text"] == "".join(alone) and r["tokens"] == alone.tokens
            assert r["finish_reason"] == "length" and r["completion_tokens"] == 10


def test_prompts_from_stdin_with_a_stop_string() -> None:
    proc = run_cli(
        "generate", "--prompts-file", "-", "-n", "30", "--seed", "3", "--stop", " ", stdin="Hi\nYo\n"
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 2
    for r in records:
        assert " " not in r["text"] and r["finish_reason"] in ("stop", "length")


def test_prompts_file_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    cases = [
        (["generate", "x", "--prompts-file", str(empty)], "not both"),
        (["generate", "--prompts-file", str(tmp_path / "missing.txt")], "cannot read the prompts file"),
        (["generate", "--prompts-file", str(empty)], "has no prompts"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
