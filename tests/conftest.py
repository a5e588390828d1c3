"""Shared pytest helpers: where the tiny rwkv.cpp test models live, and the CLI run as a subprocess.

The models are read in place from the shared folder next to the repository
(``<repo>/../shared/testdata/rwkv.cpp-tiny``) and are never copied into the repo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTDATA = REPO_ROOT / ".." / "shared" / "testdata" / "rwkv.cpp-tiny"

# Make `import rwkv_ggml` and `import tests.reference...` work under a bare `pytest` too,
# not only `python -m pytest` (which puts the working directory on sys.path).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def tiny_path(name: str) -> Path:
    """Path of a file in the shared tiny-model folder, e.g. ``tiny_path("tiny-rwkv-5v2-730K-FP32.bin")``.

    Skips the calling test if the whole shared folder is absent (a checkout without the test
    data); a single missing file inside a present folder is a real failure, not a skip.
    """
    if not TESTDATA.is_dir():
        pytest.skip(f"shared tiny-model folder {TESTDATA.resolve()} is absent")
    path = TESTDATA / name
    if not path.is_file():
        pytest.fail(f"{path.resolve()} is missing from the shared tiny-model folder")
    return path


def run_cli(
    *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m rwkv_ggml ARGS`` in a subprocess with this checkout first on the path, from the repository
    root; ``stdin`` as its standard input (empty if None), ``env`` added to the environment. Debug
    tracebacks are off, as a user sees them."""
    full = {**os.environ, **(env or {})}
    full.pop("RWKV_GGML_DEBUG", None)
    full["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "rwkv_ggml", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=full,
        check=False,
    )
