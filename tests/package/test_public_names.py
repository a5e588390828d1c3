"""The package's top-level names stay what they are documented to be, whatever has been imported.

``rwkv_ggml.quantize``, ``rwkv_ggml.convert``, ``rwkv_ggml.generate`` (and every other lazily
exported name) are functions or classes. A submodule of the same name would replace the package
attribute as soon as it is imported (by the first call, by ``Model.complete``, by the user), so the
second call failed with "'module' object is not callable" and ``from rwkv_ggml import quantize``
gave the module. Each scenario runs in a fresh interpreter: this test session has long since
imported every submodule.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rwkv_ggml
from tests.conftest import REPO_ROOT, tiny_path

TINY4 = "tiny-rwkv-4v0-660K-FP32.bin"


def run_fresh(code: str, *args: str, prelude: str = "") -> str:
    """Run ``prelude`` + ``code`` in a new interpreter with this checkout first on the path; its stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# Every submodule, imported; those of an optional extra that is not installed (server, ray, structured
# output) are skipped, so the test runs without the extras too.
IMPORT_ALL = """
import importlib, pkgutil
OPTIONAL = {"fastapi", "starlette", "uvicorn", "pydantic", "ray", "llguidance", "yaml"}
def _import_all(package):
    for info in pkgutil.walk_packages(package.__path__, "rwkv_ggml.", onerror=lambda name: None):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # the extras' modules re-raise a missing dependency with an install hint
            missing = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
            name = missing.name if isinstance(missing, ModuleNotFoundError) else None
            if (name or "").split(".")[0] not in OPTIONAL:
                raise
"""


def submodule_names() -> set[str]:
    return {info.name for info in pkgutil.iter_modules(rwkv_ggml.__path__)}


def test_no_exported_name_is_a_submodule_name() -> None:
    assert submodule_names() & set(rwkv_ggml._LAZY) == set()


def test_all_lists_every_exported_name() -> None:
    errors = {name for name in dir(rwkv_ggml.errors) if name.endswith("Error")}
    assert set(rwkv_ggml.__all__) == errors | set(rwkv_ggml._LAZY)
    assert set(rwkv_ggml._LAZY) <= set(dir(rwkv_ggml))


@pytest.mark.parametrize("name", sorted(rwkv_ggml._LAZY))
def test_from_import_in_a_fresh_interpreter(name: str) -> None:
    module_name, attr = rwkv_ggml._LAZY[name]
    out = run_fresh(f"""
        import inspect
        from rwkv_ggml import {name} as value
        import {module_name} as home
        print(value is home.{attr}, inspect.ismodule(value), callable(value))
    """)
    assert out.split() == ["True", "False", "True"]


def test_names_survive_importing_every_submodule() -> None:
    """First touch every name, then import every submodule explicitly, then look again."""
    out = run_fresh(
        """
        import importlib, inspect
        import rwkv_ggml
        before = {name: getattr(rwkv_ggml, name) for name in rwkv_ggml._LAZY}
        _import_all(rwkv_ggml)
        for name, (module_name, attr) in sorted(rwkv_ggml._LAZY.items()):
            value = getattr(rwkv_ggml, name)
            home = getattr(importlib.import_module(module_name), attr)
            print(name, value is before[name] is home, inspect.ismodule(value))
    """,
        prelude=IMPORT_ALL,
    )
    lines = out.splitlines()
    assert len(lines) == len(rwkv_ggml._LAZY)
    assert all(line.endswith(" True False") for line in lines), out


def test_names_survive_when_the_submodules_are_imported_first() -> None:
    out = run_fresh(
        """
        import importlib, inspect
        _import_all(importlib.import_module("rwkv_ggml"))
        import rwkv_ggml
        from rwkv_ggml import quantize, convert, generate, merge_lora, complete, embed, default_model_path
        print(*(inspect.isfunction(f) for f in (quantize, convert, generate, merge_lora, complete, embed,
                                                  default_model_path, rwkv_ggml.quantize, rwkv_ggml.convert,
                                                  rwkv_ggml.generate)))
    """,
        prelude=IMPORT_ALL,
    )
    assert out.split() == ["True"] * 10


def test_calling_the_functions_twice(tmp_path: Path) -> None:
    """The issue's reproduction: the first call imports the submodule, the second call must work too."""
    tiny = str(tiny_path(TINY4))
    out = run_fresh(
        """
        import sys
        import rwkv_ggml
        src, out = sys.argv[1], sys.argv[2]
        rwkv_ggml.quantize(src, out + "/a.bin", "Q8_0", threads=1, progress=False)
        rwkv_ggml.quantize(src, out + "/b.bin", "Q8_0", threads=1, progress=False)
        with rwkv_ggml.Model(src, threads=1) as m:
            first = m.complete("The", 4, temperature=0.0)  # Model.complete imports the generation module
            again = rwkv_ggml.complete(m, "The", 4, temperature=0.0)
            streamed = "".join(rwkv_ggml.generate(m, "The", 4, temperature=0.0))
            streamed2 = "".join(rwkv_ggml.generate(m, "The", 4, temperature=0.0))
        same_files = open(out + "/a.bin", "rb").read() == open(out + "/b.bin", "rb").read()
        print(first == again == streamed == streamed2, same_files)
    """,
        tiny,
        str(tmp_path),
    )
    assert out.split() == ["True", "True"]


def test_star_import_gives_the_documented_objects() -> None:
    out = run_fresh("""
        import inspect
        from rwkv_ggml import *
        print(inspect.isfunction(quantize), inspect.isfunction(convert), inspect.isfunction(generate),
              inspect.isclass(Model), inspect.isclass(ModelFormatError))
    """)
    assert out.split() == ["True"] * 5


def test_lazy_names_resolve_in_process() -> None:
    for name, (module_name, attr) in rwkv_ggml._LAZY.items():
        assert getattr(rwkv_ggml, name) is getattr(importlib.import_module(module_name), attr), name
