"""Standard streams of the ``rwkv-ggml`` command line, which may be closed, broken or absent.

A user can start the program with any of fds 0-2 closed (``<&-``, ``>&-``, ``2>&-``); Python then
sets ``sys.stdin``/``sys.stdout``/``sys.stderr`` to None. The helpers here read, write and report
errors without assuming those objects exist, so such a start ends in one error line or a quiet
exit, never an AttributeError traceback.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

PROG = "rwkv-ggml"


class CliError(Exception):
    """A user mistake found by the CLI itself; printed as one line."""


class StreamClosedError(CliError):
    """A standard stream the command needs was closed before the program started (``>&-``)."""


def write_out(out: TextIO | None, text: str) -> None:
    if out is None:
        raise StreamClosedError("standard output is closed: the output would be lost")
    out.write(text)
    out.flush()


def note(text: str = "") -> None:
    """A line for the person at the keyboard, on stderr; dropped when stderr is closed
    (``print(file=None)`` would write it to stdout instead)."""
    if sys.stderr is not None:
        print(text, file=sys.stderr)


def error_line(message: str) -> None:
    """Print ``rwkv-ggml: error: MESSAGE`` on stderr, if there is a stderr to print on (``2>&-``)."""
    try:
        if sys.stderr is not None:
            sys.stderr.write(f"{PROG}: error: {message}\n")
            sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is a closed pipe or file: the exit status still tells


def progress_bar() -> bool:
    """Whether quantize/convert show a progress bar: on a terminal only. Decided here, not left to the
    library's default, because that default asks ``sys.stderr.isatty()`` and stderr may be closed."""
    return sys.stderr is not None and sys.stderr.isatty()


def read_stdin() -> str:
    """All of standard input; a closed one (``<&-``) reads as empty, like ``</dev/null``."""
    return "" if sys.stdin is None else sys.stdin.read()


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def fill_closed_std_fds() -> None:
    """Put /dev/null on any of fds 0-2 that was closed when the program started (``<&-``).

    Python then has ``sys.stdin`` (etc.) as None, which the commands check; the descriptor itself
    must be occupied too, or the next file opened (a model, an output file) would get number 0, 1
    or 2 and something writing to "standard output" at the C level would write into it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                opened = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if opened != fd:  # a lower fd was free after all; do not leave a stray one open
                os.close(opened)


def silence_stdout() -> None:
    """After a broken pipe, point fd 1 at /dev/null so the final flush at exit cannot fail again."""
    try:
        if sys.stdout is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    except (OSError, ValueError):
        pass
