"""Fixtures for the chat-page tests: `rwkv-ggml serve` as a real subprocess on a free localhost port with
the packaged default model, and Debian's headless Chromium driven by Playwright.

Playwright's own browser download cannot be reached from the build machines, so the tests use the
system's Chromium (``/usr/bin/chromium``, or ``RWKV_GGML_CHROMIUM``); without it, or without Playwright or
the server's extras, they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

CHROMIUM = Path(os.environ.get("RWKV_GGML_CHROMIUM", "/usr/bin/chromium"))
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `python -m rwkv_ggml serve` subprocess; ``url`` is its base address."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        self._log = self.log_path.open("w")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, "-m", "rwkv_ggml", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += extra
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                pytest.fail(f"rwkv-ggml serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.health()
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        self.close()
        pytest.fail(f"rwkv-ggml serve did not answer /health within {START_TIMEOUT_S} s:\n{self.log()}")

    def health(self, api_key: str | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.url + "/health")
        if api_key:
            request.add_header("Authorization", f"Bearer {api_key}")
        with urllib.request.urlopen(request, timeout=5) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _require_server_stack() -> None:
    pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
    pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")
    try:
        import rwkv_ggml.server.app  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the server (rwkv_ggml.server.app) cannot be imported: {exc}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RWKV_GGML_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_server_stack()
    srv = Server(tmp_path_factory.mktemp("serve"))
    yield srv
    srv.close()


API_KEY = "sesame-7f3a"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_server_stack()
    srv = Server(tmp_path_factory.mktemp("serve-key"), "--api-key", API_KEY)
    yield srv
    srv.close()
