"""``rwkv-ggml serve`` on the command line: without the [server] extra it is one line saying how to install
it, ``import rwkv_ggml`` never imports FastAPI, and bad options are one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, run_cli


def _run_without_fastapi(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Python with a ``fastapi`` package that fails to import, as on a machine without the extra."""
    blocker = tmp_path / "blocked" / "fastapi"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'fastapi'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO_ROOT)])}
    env.pop("RWKV_GGML_DEBUG", None)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )


def test_serve_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    done = _run_without_fastapi(tmp_path, "-m", "rwkv_ggml", "serve", "--port", "1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "rwkv_ggml[server]"' in lines[0], done.stderr


def test_import_rwkv_ggml_needs_no_server_packages(tmp_path: Path) -> None:
    code = (
        "import sys, rwkv_ggml; rwkv_ggml.Model; "
        "from rwkv_ggml.server import Engine, ServerConfig; "
        "from rwkv_ggml.server.state_cache import StateCache; "
        "print('fastapi' in sys.modules, 'uvicorn' in sys.modules, 'pydantic' in sys.modules)"
    )
    done = _run_without_fastapi(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "False"]


def test_serve_help_and_bad_options() -> None:
    helped = run_cli("serve", "--help")
    assert helped.returncode == 0
    for option in ("--max-batch", "--state-cache-mb", "--api-key", "--max-queue", "--request-timeout"):
        assert option in helped.stdout
    for args, fragment in [
        (["--max-batch", "0"], "--max-batch"),
        (["--port", "x"], "--port"),
        (["--state-cache-mb", "-1"], "--state-cache-mb"),
        (["--request-timeout", "0"], "--request-timeout"),
    ]:
        done = run_cli("serve", *args)
        assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr
    missing = run_cli("serve", "-m", "/nonexistent/model.bin")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_a_busy_port_is_one_error_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("serve", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"rwkv-ggml: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
