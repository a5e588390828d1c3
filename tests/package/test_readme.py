"""Every code block of README.md runs as written.

The rule, so that what a reader copies works:

* ```python blocks run in order in one interpreter (a reader pastes them one after another), in a
  subprocess whose working directory is a fresh temporary folder, with a time limit.
* ```sh / ```bash / ```console blocks run command by command (commands are the lines, and the parts of
  a line joined by ``&&``) with ``bash -e`` in another temporary folder, ``rwkv-ggml`` being this
  checkout's command line. Skipped: commands that install packages (``pip ...``) or run this test suite
  (``python -m pytest``, ``pytest``), and a whole block preceded by a ``<!-- readme-test: skip (reason) -->``
  line (for commands that need a download or a file a reader brings, such as a real checkpoint).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
TIME_LIMIT_S = 600
FENCE = re.compile(
    r"^(?P<skip><!-- readme-test: skip[^\n]*-->\n)?```(?P<lang>[\w-]*)\n(?P<body>.*?)^```\s*$",
    re.MULTILINE | re.DOTALL,
)
SKIPPED_COMMANDS = re.compile(r"^(pip3?|python3? -m pip|python3? -m pytest|pytest)\b")


def blocks(*languages: str) -> list[tuple[int, str]]:
    """(line number, code) of each fenced block in one of ``languages`` that is not marked skip."""
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start("body")) + 1, m.group("body"))
        for m in FENCE.finditer(text)
        if m.group("lang") in languages and not m.group("skip")
    ]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("RWKV_GGML_DEBUG", None)
    return e


def test_readme_has_the_python_examples_the_issue_asks_for() -> None:
    code = "\n".join(body for _, body in blocks("python"))
    for needle in (
        "default_model_path()",
        ".generate(",
        ".complete(",
        "create_completion(",
        "create_chat_completion(",
        "State.",
        ".save(",
        ".load(",
        ".embed(",
    ):
        assert needle in code, needle


def test_python_blocks_run(tmp_path: Path) -> None:
    found = blocks("python")
    assert found, "README.md has no python blocks"
    # One interpreter; each block is compiled with its README line numbers, so a failure points at it.
    script = "\n".join(
        [
            "import sys, traceback",
            "namespace = {'__name__': '__main__'}",
            f"blocks = {found!r}",
            "for line, body in blocks:",
            "    code = compile('\\n' * (line - 1) + body, 'README.md', 'exec')",
            "    try:",
            "        exec(code, namespace)",
            "    except BaseException:",
            "        traceback.print_exc()",
            "        sys.exit(f'README.md python block at line {line} failed')",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip(), "the examples print their results"


def shell_commands(body: str) -> list[str]:
    commands = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for command in line.split("&&"):
            command = command.strip().removeprefix("$ ")
            if command and not SKIPPED_COMMANDS.match(command):
                commands.append(command)
    return commands


@pytest.mark.parametrize(
    ("line", "body"),
    blocks("sh", "bash", "shell", "console"),
    ids=lambda v: f"line{v}" if isinstance(v, int) else "",
)
def test_shell_blocks_run(tmp_path: Path, line: int, body: str) -> None:
    commands = shell_commands(body)
    if not commands:
        pytest.skip(f"README.md line {line}: only install/test-suite commands")
    shims = tmp_path / "bin"
    shims.mkdir()
    shim = shims / "rwkv-ggml"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rwkv_ggml "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "work"
    work.mkdir()
    e = env()
    e["PATH"] = f"{shims}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "-e", "-c", "\n".join(commands)],
        cwd=work,
        env=e,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        check=False,
    )
    assert proc.returncode == 0, f"README.md line {line}: {proc.stderr[-4000:]}"
