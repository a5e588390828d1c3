"""A checkpoint given where a model file is expected: ``Model(...)`` and ``-m`` name the command that
converts it (before: "not an rwkv.cpp model file (magic bytes ...)"), and that command, run as written,
produces a file that loads."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from rwkv_ggml import Model
from rwkv_ggml.errors import ModelFormatError, ModelIOError
from tests.conftest import run_cli
from tests.formats.test_convert import model, save_pth, save_safetensors

COMMAND = re.compile(r"`(rwkv-ggml convert [^`]*)`")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=300)


def convert_command(path: Path) -> list[str]:
    with pytest.raises(ModelFormatError) as info:
        Model(path, threads=1)
    message = str(info.value)
    assert "not an rwkv.cpp model file" in message and "magic bytes" not in message, message
    found = COMMAND.search(message)
    assert found, message
    return shlex.split(found.group(1))


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_checkpoint_file_names_the_command_that_converts_it(tmp_path: Path, kind: str) -> None:
    _, raw = model("4")
    src = tmp_path / f"RWKV 4 tiny.{kind}"  # a space: the command must be quoted to run as written
    (save_pth if kind == "pth" else save_safetensors)(src, raw)
    argv = convert_command(src)
    assert argv[:3] == ["rwkv-ggml", "convert", str(src)]
    assert argv[3] == str(tmp_path / "RWKV 4 tiny.bin")
    proc = cli(*argv[1:])
    assert proc.returncode == 0, proc.stderr
    with Model(argv[3], threads=1) as converted:
        assert converted.n_vocab == 64


def test_checkpoint_folder_and_shard_index(tmp_path: Path) -> None:
    _, raw = model("7")
    folder = tmp_path / "rwkv7-tiny"
    folder.mkdir()
    save_safetensors(folder / "model.safetensors", raw)
    argv = convert_command(folder)
    assert argv[2:] == [str(folder), str(tmp_path / "rwkv7-tiny.bin")]
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": dict.fromkeys(raw, "model.safetensors")}))
    assert convert_command(index)[2:] == [str(index), str(folder / "model.bin")]
    # a folder without a checkpoint is still just "not a regular file"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelIOError, match="not a regular file"):
        Model(tmp_path / "empty", threads=1)


def test_cli_model_option_names_the_command(tmp_path: Path) -> None:
    _, raw = model("4")
    src = tmp_path / "x.pth"
    save_pth(src, raw)
    for target in (src, tmp_path):
        proc = cli("generate", "hi", "-m", str(target))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "rwkv-ggml convert " in lines[0], proc.stderr
