"""The CLI when the world around it is hostile: closed standard streams, FIFOs, exhausted memory.

Every case must end in one ``rwkv-ggml: error: ...`` line (or a quiet exit) and a meaningful exit
status, never a traceback or a hang. Closed descriptors are made by the shell (``<&-``, ``>&-``,
``2>&-``), as a user would: ``stdin=subprocess.DEVNULL`` is an open, empty stream, which is not the
same thing (Python sets ``sys.stdin`` to None only for a closed descriptor). Anything that could
block (a FIFO nobody writes to) runs in a subprocess with a timeout, so a regression fails instead
of hanging the suite.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rwkv_ggml import cli
from rwkv_ggml.generation import complete
from rwkv_ggml.model import Model
from tests.cli.test_cli import assert_one_line_error, run
from tests.conftest import REPO_ROOT, tiny_path

TINY4 = "tiny-rwkv-4v0-660K-FP32.bin"
TINY5 = "tiny-rwkv-5v2-730K-FP32.bin"
TIMEOUT = 120  # seconds; only reached by a regression that blocks


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(tiny_path(TINY4))


def run_shell(args: list[str], redirect: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m rwkv_ggml ARGS REDIRECT`` through bash, e.g. REDIRECT = ``"<&-"`` (closed stdin)."""
    env = dict(os.environ)
    env.pop("RWKV_GGML_DEBUG", None)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = shlex.join([sys.executable, "-m", "rwkv_ggml", *args]) + " " + redirect
    return subprocess.run(
        ["bash", "-c", command],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )


# ---- closed standard streams ---------------------------------------------------------------------


def test_generate_with_stdin_closed_and_no_prompt(tiny: str) -> None:
    for prompt in ([], ["-"]):
        proc = run_shell(["generate", *prompt, "-n", "3", "--model", tiny], "<&-")
        assert_one_line_error(proc, 1, "standard input is closed")


def test_generate_with_stdin_closed_and_a_prompt_works(tiny: str) -> None:
    proc = run_shell(["generate", "The king", "-n", "5", "--temperature", "0", "--model", tiny], "<&-")
    with Model(tiny, threads=1) as m:
        expected = complete(m, "The king", 5, temperature=0.0)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "The king" + expected + "\n"


def test_chat_with_stdin_closed_is_an_empty_conversation(tiny: str) -> None:
    proc = run_shell(["chat", "-n", "3", "--model", tiny], "<&-")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "hi", "-n", "3"],
        ["chat", "-n", "3"],
        ["perplexity", "-"],
        ["bench", "--tokens", "1", "--prompt-tokens", "2", "--repeats", "1"],
        ["info"],
    ],
)
def test_stdout_closed_loses_the_output_and_says_so(tiny: str, command: list[str]) -> None:
    model = [tiny] if command[0] in ("bench", "info") else ["--model", tiny]
    proc = run_shell([*command, *model], ">&-", stdin="hello there\n")
    assert_one_line_error(proc, 1, "standard output is closed")


def test_stdout_closed_does_not_stop_a_command_that_writes_a_file(tiny: str, tmp_path: Path) -> None:
    dst = tmp_path / "q8.bin"
    proc = run_shell(["quantize", tiny, str(dst), "Q8_0", "--threads", "1"], ">&-")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert dst.stat().st_size > 0


def test_stderr_closed_still_gives_the_exit_status(tmp_path: Path) -> None:
    proc = run_shell(["generate", "hi", "--model", str(tmp_path / "missing.bin")], "2>&-")
    assert (proc.returncode, proc.stdout) == (1, "")
    proc = run_shell(["generate", "hi", "--model", str(tmp_path / "missing.bin")], "<&- >&- 2>&-")
    assert proc.returncode == 1


def test_all_streams_closed_leave_no_file_on_a_standard_descriptor(tiny: str, tmp_path: Path) -> None:
    """With fds 0-2 closed the next opened file would get one of those numbers; the output file of
    quantize must still be complete and the model file untouched."""
    dst = tmp_path / "q8.bin"
    before = Path(tiny).read_bytes()
    proc = run_shell(["quantize", tiny, str(dst), "Q8_0", "--threads", "1"], "<&- >&- 2>&-")
    assert proc.returncode == 0
    assert Path(tiny).read_bytes() == before
    assert "dtype: Q8_0" in run("info", str(dst)).stdout


# ---- memory --------------------------------------------------------------------------------------


def test_out_of_memory_is_one_line(tiny: str) -> None:
    # 2**57 int64 prompt tokens = 1 EiB: more than any address space, so the allocation fails at once
    proc = run("bench", tiny, "--prompt-tokens", str(2**57), check_rc=None)
    assert_one_line_error(proc, 1, "out of memory", "EiB")


@pytest.mark.parametrize(
    "exc, rc, needle",
    [
        (MemoryError(), 1, "out of memory"),
        (MemoryError("arena of 9 GiB"), 1, "out of memory: arena of 9 GiB"),
        (OSError(28, "No space left on device"), 1, "No space left on device"),
        (RecursionError("maximum recursion depth exceeded"), 1, "internal error (RecursionError"),
        (KeyboardInterrupt(), 130, None),
    ],
)
def test_every_exception_class_ends_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    rc: int,
    needle: str | None,
) -> None:
    def raising(args: object) -> int:
        raise exc

    monkeypatch.delenv("RWKV_GGML_DEBUG", raising=False)
    monkeypatch.setattr(cli.commands, "cmd_info", raising)
    assert cli.main(["info", "whatever.bin"]) == rc
    err = capsys.readouterr().err
    if needle is None:  # Ctrl-C: quiet, only the newline that ends the terminal's "^C"
        assert err.strip() == ""
    else:
        assert err.count("\n") == 1 and err.startswith("rwkv-ggml: error: ") and needle in err, err


# ---- FIFOs and pipes -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_state_load_refuses_non_regular_files(tmp_path: Path, kind: str) -> None:
    """In a subprocess with a timeout: before the fix, opening the FIFO blocked forever."""
    if kind == "fifo":
        path = tmp_path / "conv.state"
        os.mkfifo(path)
        what = "a FIFO"
    elif kind == "device":
        path, what = Path(os.devnull), "a device or socket"
    else:
        path, what = tmp_path, "a directory"
    code = (
        "import sys\nfrom rwkv_ggml.state import State\nfrom rwkv_ggml.errors import ModelIOError\n"
        "try:\n    State.load(sys.argv[1])\nexcept ModelIOError as exc:\n    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        check=True,
    )
    assert proc.stdout == f"cannot read state file '{path}': it is {what}, not a regular file\n"


def test_chat_load_of_a_fifo_is_refused_not_blocking(tiny: str, tmp_path: Path) -> None:
    fifo = tmp_path / "conv.state"
    os.mkfifo(fifo)
    proc = run("chat", "--model", tiny, "-n", "3", "--temperature", "0", stdin=f"/load {fifo}\nhi\n")
    assert "Traceback" not in proc.stderr
    assert (
        f"rwkv-ggml: error: cannot read state file '{fifo}': it is a FIFO, not a regular file" in proc.stderr
    )
    assert proc.stdout.startswith("Assistant:")  # the chat goes on


def test_perplexity_reads_a_pipe_and_stdin(tiny: str, tmp_path: Path) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 3
    with Model(tiny, threads=1) as m:
        _, ppl = m.perplexity(list(text.encode()))
    from_stdin = run("perplexity", "-", "--model", tiny, stdin=text).stdout
    assert f"file: - ({len(text)} bytes, {len(text)} tokens)" in from_stdin
    fifo = tmp_path / "text.fifo"
    os.mkfifo(fifo)
    command = f"printf %s {shlex.quote(text)} > {shlex.quote(str(fifo))} 2>/dev/null & "
    command += shlex.join([sys.executable, "-m", "rwkv_ggml", "perplexity", str(fifo), "--model", tiny])
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    from_fifo = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO_ROOT,
        env=env,
        check=True,
    ).stdout
    for out in (from_stdin, from_fifo):
        line = next(x for x in out.splitlines() if x.startswith("perplexity:"))
        assert abs(float(line.split()[1]) - ppl) < 1e-3 * ppl
    assert "pipe" in run("perplexity", "--help").stdout and "'-'" in run("perplexity", "--help").stdout


# ---- --gn-eps ------------------------------------------------------------------------------------


def test_gn_eps_reaches_the_model() -> None:
    tiny5 = str(tiny_path(TINY5))
    outputs = {}
    for eps in (1e-5, 0.5):
        with Model(tiny5, threads=1, gn_eps=eps) as m:
            expected = complete(m, "The", 12, temperature=0.0)
        proc = run(
            "generate",
            "The",
            "--model",
            tiny5,
            "-n",
            "12",
            "--temperature",
            "0",
            "--no-echo",
            "--gn-eps",
            str(eps),
        )
        assert proc.stdout == expected + "\n"
        outputs[eps] = expected
    assert outputs[1e-5] != outputs[0.5]  # the option does change the numbers
    text = "In a shocking finding, scientists discovered a herd of dragons. " * 2
    with Model(tiny5, threads=1, gn_eps=1e-5) as m:
        _, ppl = m.perplexity(list(text.encode()))
    out = run("perplexity", "-", "--model", tiny5, "--gn-eps", "1e-5", stdin=text).stdout
    line = next(x for x in out.splitlines() if x.startswith("perplexity:"))
    assert abs(float(line.split()[1]) - ppl) < 1e-3 * ppl
    assert "GroupNorm eps:" in run("info", tiny5).stdout


def test_gn_eps_errors(tiny: str) -> None:
    for cmd in ("generate", "chat", "perplexity", "bench"):
        assert "--gn-eps" in run(cmd, "--help").stdout
    assert_one_line_error(
        run("generate", "hi", "--model", tiny, "--gn-eps", "tiny", check_rc=None), 2, "--gn-eps"
    )
    assert_one_line_error(
        run("generate", "hi", "--model", tiny, "--gn-eps", "-1", check_rc=None), 1, "gn_eps"
    )
    assert_one_line_error(run("bench", tiny, "--gn-eps", "nan", check_rc=None), 1, "gn_eps")
