"""The server under test: ``rwkv-ggml serve`` as a real subprocess on a free localhost port.

:func:`start_server` starts it and waits for ``/health``; the fixtures stop it (SIGTERM, then SIGKILL if
it does not exit) whatever the test did. Clients are the official ``openai`` package and ``httpx``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

# Bounds on waiting, not timings under test: a loaded 2-core machine can be slow to import and load.
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def client(self, api_key: str = "none", **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)

    def health(self) -> dict[str, object]:
        response = httpx.get(f"{self.url}/health", timeout=10)
        response.raise_for_status()
        body: dict[str, object] = response.json()
        return body

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_server(tmp_path: Path, *args: str) -> ServerProcess:
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RWKV_GGML_DEBUG", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rwkv_ggml", "serve", "--port", str(port), *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = ServerProcess(proc, port, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{server.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(
                f"the server did not answer /health in {STARTUP_TIMEOUT_S} s:\n{server.output()}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def running_server(tmp_path: Path, *args: str) -> Iterator[ServerProcess]:
    server = start_server(tmp_path, *args)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The packaged default model with the default options (state cache on, batch 8)."""
    with running_server(tmp_path_factory.mktemp("server"), "--max-batch", "8", "--model-name", "rwkv") as s:
        yield s
