"""The wheel, built and installed as a user would get it: one cp310-abi3 wheel carrying our licence,
installed into a fresh virtual environment with no C compiler on PATH, whose ``rwkv-ggml`` generates
text from another directory; and ``python -m build`` in the repository root.

The wheel tests are slow (a C build and a pip install, about a minute): marked ``slow``, which CI
runs with everything else and ``python -m pytest -m "not slow"`` leaves out. They need the package
index for the runtime dependencies of the fresh environment (and for setuptools when this
environment has none to build with).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

# what a build needs from the repository (the sdist's contents, without tests and docs)
_SOURCES = (
    "build.py",
    "setup.py",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "LICENSE",
    "csrc",
    "rwkv_ggml",
)
_NOT_COPIED = shutil.ignore_patterns("*.so", "*.so.tmp", "_core*.c", "__pycache__", "*.egg-info")


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kwargs)
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def test_python_m_build_in_the_repository_root_reaches_the_pypa_build_package() -> None:
    """The repository root is the current directory, so ``python -m build`` finds build.py first: it
    must hand over to the PyPA package (or say how to get it), not compile the extension in place."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    if importlib.util.find_spec("build") is not None and proc.returncode == 0:
        assert proc.stdout.startswith("build "), proc.stdout  # the PyPA package's own --version
    else:
        assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
        assert "the PyPA 'build' package is not installed (pip install build)" in proc.stderr
    assert "_core" not in proc.stdout, "build.py compiled the extension instead"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in _SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=_NOT_COPIED)
        else:
            shutil.copy2(origin, src / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    offline_build = all(importlib.util.find_spec(m) for m in ("setuptools", "cffi"))
    isolation = ["--no-build-isolation"] if offline_build else []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(out), str(src)], cwd=src)
    (built,) = out.glob("*.whl")
    return built


@pytest.mark.slow
def test_wheel_is_tagged_for_the_stable_abi_and_carries_the_licence(wheel: Path) -> None:
    name, version, python, abi, _platform = wheel.name.removesuffix(".whl").split("-")
    assert (name, python, abi) == ("rwkv_ggml", "cp310", "abi3"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "rwkv_ggml/_core.abi3.so" in names
        assert f"rwkv_ggml-{version}.dist-info/licenses/LICENSE" in names
        assert "rwkv_ggml/data/LICENSE.rwkv-cpp-MIT.txt" in names and "rwkv_ggml/py.typed" in names
        assert {f"rwkv_ggml/server/static/{f}" for f in ("index.html", "app.js", "style.css")} <= set(names)
        assert b"License-Expression: MIT" in zf.read(f"rwkv_ggml-{version}.dist-info/METADATA")
        library = zf.read("rwkv_ggml/_core.abi3.so")
    assert b".debug_info" not in library, "a release build carries no debug information"


@pytest.mark.slow
def test_wheel_installs_and_runs_without_a_compiler(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    bin_dir = venv / "bin"
    # only the environment's own scripts on PATH: no gcc, no cc
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RWKV_GGML_", "VIRTUAL_ENV"))}
    env.update(PATH=str(bin_dir), CC="/nonexistent/cc", VIRTUAL_ENV=str(venv), HOME=str(tmp_path))
    assert shutil.which("gcc", path=env["PATH"]) is None and shutil.which("cc", path=env["PATH"]) is None
    _run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        env=env,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [str(bin_dir / "python"), "-c", "import rwkv_ggml; print(rwkv_ggml.__file__)"], env=env, cwd=elsewhere
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    proc = _run(
        [str(bin_dir / "rwkv-ggml"), "generate", "Once upon a time", "-n", "5", "--seed", "1"],
        env=env,
        cwd=elsewhere,
    )
    assert proc.stdout.startswith("Once upon a time") and len(proc.stdout) > len("Once upon a time\n")
    assert proc.stderr == ""
