"""``rwkv-ggml chat`` and ``generate`` against the Python API, in real subprocesses.

Ctrl-C during a reply stops that reply and the chat goes on with the conversation kept; ``--seed`` seeds
the session once; the CLI and the Python API share their sampling defaults, so a seed gives the same
text in both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml import Model
from rwkv_ggml.chat_format import ChatTemplate
from rwkv_ggml.generation import ChatSession, default_model_path
from rwkv_ggml.state import State
from tests.conftest import REPO_ROOT

WAIT_S = 120  # an upper bound for each wait: a hang fails the test instead of blocking the suite


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RWKV_GGML_DEBUG", None)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str, stdin: str = "") -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "rwkv_ggml", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=REPO_ROOT,
        env=cli_env(),
        check=False,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    return proc.stdout


@pytest.fixture(scope="module")
def default_model() -> Model:
    with Model(default_model_path(), threads=1) as m:
        yield m


class Reader:
    """Collects a pipe's bytes on a thread, so the test can wait for text without blocking on a read."""

    def __init__(self, pipe: object) -> None:
        self.data = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self._thread.start()

    def _run(self, pipe: object) -> None:
        fd = pipe.fileno()  # type: ignore[attr-defined]
        while chunk := os.read(fd, 4096):
            with self._lock:
                self.data += chunk

    def text(self) -> str:
        with self._lock:
            return self.data.decode("utf-8", errors="replace")

    def wait_for(self, predicate: object, what: str, proc: subprocess.Popen[bytes]) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            text = self.text()
            if predicate(text):  # type: ignore[operator]
                return text
            if proc.poll() is not None:
                raise AssertionError(f"the chat exited ({proc.returncode}) while waiting for {what}")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; got {self.text()!r}")


def test_ctrl_c_stops_the_reply_and_the_chat_goes_on(tmp_path: Path, default_model: Model) -> None:
    state_file = tmp_path / "chat.state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rwkv_ggml",
            "chat",
            "-n",
            "1000000",
            "--seed",
            "1",
            "--threads",
            "1",
            "--user-name",
            "Zqx",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=cli_env(),
        # a shell's background job starts with SIGINT ignored, and children inherit that: restore the
        # default so the Ctrl-C this test sends reaches the chat as it would from a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    out, err = Reader(proc.stdout), Reader(proc.stderr)
    assert proc.stdin is not None
    try:
        for turn, message in enumerate(("Hello", "Again")):
            proc.stdin.write(f"{message}\n".encode())
            proc.stdin.flush()
            # a reply well under way: 40 characters after the turn's "Assistant: "
            out.wait_for(
                lambda t, n=turn: (
                    t.count("Assistant: ") == n + 1 and len(t.rsplit("Assistant: ", 1)[1]) >= 40
                ),
                f"reply {turn + 1}",
                proc,
            )
            proc.send_signal(signal.SIGINT)
            err.wait_for(
                lambda t, n=turn: t.count("reply stopped") == n + 1, f"reply {turn + 1} to stop", proc
            )
            assert proc.poll() is None, err.text()  # the chat is still running
        proc.stdin.write(f"/save {state_file}\n/quit\n".encode())
        proc.stdin.close()
        assert proc.wait(timeout=WAIT_S) == 0, err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err.text(), err.text()
    # The saved state is the transcript of both (interrupted) turns: nothing was lost.
    printed = out.text()
    assert printed.startswith("Assistant: ") and printed.endswith("\n"), printed
    replies = [r[:-1] for r in printed.split("Assistant: ")[1:]]
    assert len(replies) == 2 and all(len(r) >= 40 for r in replies), printed
    template = ChatTemplate(user="Zqx")  # a name the model will not write: no reply ends by itself
    transcript = "".join(
        template.format_message("user", m) + template.format_message("assistant", r)
        for m, r in zip(("Hello", "Again"), replies, strict=True)
    )
    _, expected = default_model.eval_sequence(list(transcript.encode()))
    saved = State.load(state_file, default_model).array
    np.testing.assert_allclose(saved, expected, atol=2e-3)


def test_chat_seeds_once_per_session_like_the_api(default_model: Model) -> None:
    printed = run_cli("chat", "-n", "60", "--seed", "3", "--threads", "1", stdin="Hi\nHi\n")
    session = ChatSession(default_model, seed=3)
    first, second = session.ask("Hi", 60), session.ask("Hi", 60)
    assert printed == f"Assistant: {first}\nAssistant: {second}\n"
    # before: every turn restarted the random stream, so the second turn drew the same numbers as
    # a fresh session does from the same state
    fresh = ChatSession(default_model, seed=3)
    fresh.ask("Hi", 60)
    replay = ChatSession(default_model, seed=3)
    replay.state = fresh.state
    assert replay.ask("Hi", 60) != second


def test_generate_cli_and_api_give_the_same_text_for_a_seed(default_model: Model) -> None:
    printed = run_cli("generate", "Once upon a time", "--seed", "7", "--no-echo", "--threads", "1")
    assert printed == default_model.complete("Once upon a time", seed=7) + "\n"
    assert len(default_model.tokenize(printed)) >= 150  # the shared default of 200 tokens, not 100
