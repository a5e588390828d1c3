"""The binding contract of rwkv_ggml._lib: only the binding modules touch the compiled extension.

``_lib`` loads the extension (``_core``) and owns the status-to-exception conversion. The modules that may
call its ``lib``/``ffi`` are the engine binding (``ggml`` and the ``ggml_*`` modules it is split into),
row quantization (``quantization``) and the tokenizer's C trie binding (a module whose name contains
"tokenizer" or "trie"); everything else goes through them. This test reads every module's imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rwkv_ggml

PACKAGE = Path(rwkv_ggml.__file__).resolve().parent
RAW_NAMES = {"lib", "ffi"}


def may_touch_the_extension(module: Path) -> bool:
    rel = module.relative_to(PACKAGE)
    name = module.stem
    top_level = len(rel.parts) == 1
    return (
        (top_level and (name in ("_lib", "ggml", "quantization") or name.startswith("ggml_")))
        or "tokenizer" in str(rel)
        or "trie" in str(rel)
    )


def raw_imports(source: str) -> list[str]:
    """The imports in ``source`` that reach the compiled extension: ``_core`` itself, ``lib``/``ffi`` from
    ``_lib``, or the ``_lib`` module as a whole (from which ``lib`` is one attribute away)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[-1] in ("_core", "_lib")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            last = module.split(".")[-1]
            names = {a.name for a in node.names}
            if last == "_core" or (last == "_lib" and names & (RAW_NAMES | {"*"})):
                found.append(f"from {module} import {', '.join(sorted(names))}")
            elif last in ("", "rwkv_ggml") and names & {"_core", "_lib"}:
                found.append(f"from {module or '.'} import {', '.join(sorted(names & {'_core', '_lib'}))}")
    return found


def test_only_the_binding_modules_import_the_extension() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 10
    offenders = {
        str(m.relative_to(PACKAGE)): raw
        for m in modules
        if not may_touch_the_extension(m) and (raw := raw_imports(m.read_text(encoding="utf-8")))
    }
    assert offenders == {}, f"only the binding modules may use the compiled extension: {offenders}"


def test_the_scan_sees_each_form_of_import() -> None:
    assert raw_imports("from ._lib import ffi, lib") and raw_imports("from rwkv_ggml._lib import lib")
    assert raw_imports("from . import _lib") and raw_imports("from ._core import lib")
    assert raw_imports("import rwkv_ggml._core") and raw_imports("def f():\n    from .._lib import ffi\n")
    assert not raw_imports("from ._lib import check, raise_status") and not raw_imports(
        "from .ggml import Context"
    )
    assert may_touch_the_extension(PACKAGE / "ggml_ops.py") and may_touch_the_extension(
        PACKAGE / "tokenizer.py"
    )
    assert not may_touch_the_extension(PACKAGE / "model.py")
    assert not may_touch_the_extension(PACKAGE / "graphs" / "ggml_v4.py")
    assert not may_touch_the_extension(PACKAGE / "graphs" / "ggml.py")
