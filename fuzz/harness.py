"""What counts as a finding, and the plumbing shared by the fuzz driver and the tests.

A target is a function taking the fuzzer's bytes. It may raise the library's typed exceptions
(:class:`rwkv_ggml.errors.RwkvGgmlError` and its subclasses): that is bad input correctly refused.
Anything else is a finding: another exception type (a ``KeyError`` or ``RecursionError`` escaping
the library is a traceback for the user), a ``MemoryError`` of any kind (an input of a few KB
must not need gigabytes, even when the library reports it politely), a crash of the process, a
hang. The last two cannot be caught in-process: the driver (run.py) bounds them with libFuzzer's
per-input timeout, its RSS limit and the address-space limit set here, and a subprocess.

This module imports neither atheris nor anything heavy, so the tests can use it anywhere.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import resource
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from rwkv_ggml.errors import RwkvGgmlError

Target = Callable[[bytes], None]

# Address-space limit of a fuzzing process: far above what any seed needs (a few hundred MB with
# the engine's threads), far below what would take the machine down.
DEFAULT_MEMORY_LIMIT = 4 << 30


@dataclass(frozen=True)
class Finding:
    """An input the library mishandled: how (``kind``), where (``signature``) and the traceback."""

    kind: str
    signature: str
    detail: str

    def describe(self) -> str:
        return self.signature


def is_expected(exc: BaseException) -> bool:
    """Bad input refused the documented way: a typed library error that is not an out-of-memory."""
    return isinstance(exc, RwkvGgmlError) and not isinstance(exc, MemoryError)


def _kind(exc: BaseException) -> str:
    """The exception's type, module-qualified unless builtin (``zlib.error``, not ``error``)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _signature(exc: BaseException) -> str:
    """Exception type plus the innermost frame inside rwkv_ggml (else the innermost frame at all),
    so the same defect reached through different inputs is reported once."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}rwkv_ggml{os.sep}" in f.filename]
    chosen = ours or list(frames)
    if not chosen:
        return _kind(exc)
    frame = chosen[-1]
    where = f"{pathlib.Path(frame.filename).name}:{frame.lineno} ({frame.name})"
    return f"{_kind(exc)} in {where}"


def classify(exc: BaseException) -> Finding | None:
    """None for an expected refusal, else the Finding this exception is."""
    if is_expected(exc):
        return None
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Finding(kind=_kind(exc), signature=_signature(exc), detail=detail)


def check(target: Target, data: bytes) -> Finding | None:
    """Run ``target`` on ``data`` once in this process; the Finding, or None if it behaved."""
    try:
        target(data)
    except Exception as exc:
        return classify(exc)
    return None


def input_name(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def save_finding(directory: pathlib.Path, target_name: str, data: bytes, finding: Finding) -> pathlib.Path:
    """Write the input (``<target>-<sha1>.input``) and its traceback next to it (``.txt``)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{target_name}-{input_name(data)}"
    path = stem.with_suffix(".input")
    path.write_bytes(data)
    stem.with_suffix(".txt").write_text(f"target: {target_name}\n{finding.describe()}\n\n{finding.detail}")
    return path


class Recorder:
    """The function atheris calls: runs the target, ignores expected refusals, saves findings.

    ``keep_going=False`` (CI): the first finding is saved and re-raised, so atheris stops and exits
    non-zero. ``keep_going=True`` (triage): each new signature is saved and fuzzing continues; only
    crashes, hangs and memory blow-ups (which libFuzzer handles) stop the process.
    """

    def __init__(self, target_name: str, target: Target, findings: pathlib.Path, keep_going: bool) -> None:
        self.target_name = target_name
        self.target = target
        self.findings = findings
        self.keep_going = keep_going
        self.seen: set[str] = set()

    def __call__(self, data: bytes) -> None:
        try:
            self.target(data)
        except Exception as exc:
            finding = classify(exc)
            if finding is None:
                return
            if finding.signature not in self.seen:
                self.seen.add(finding.signature)
                path = save_finding(self.findings, self.target_name, data, finding)
                print(
                    f"\nFINDING [{self.target_name}] {finding.describe()}: input saved to {path}",
                    file=sys.stderr,
                    flush=True,
                )
            if not self.keep_going:
                raise


def limit_memory(limit: int = DEFAULT_MEMORY_LIMIT) -> None:
    """Cap this process's address space, so a runaway allocation fails (MemoryError, a finding)
    instead of taking the machine down. Never raises the limit if it is already lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
