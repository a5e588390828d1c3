"""cffi build script (out-of-line API mode) for the extension ``rwkv_ggml._core``.

The public headers in csrc/include/ are the cdef, so the binding is checked by the C compiler
against the real declarations. Every .c file under csrc/ is compiled into the one extension.

Environment:
  RWKV_GGML_SANITIZE=1   build with AddressSanitizer + UndefinedBehaviorSanitizer
  RWKV_GGML_DEBUG=1      build with -O0 -g
  RWKV_GGML_WERROR=1     turn every warning into an error (-Werror; what CI builds with). The build is
                         warning-free under -Wall -Wextra, with or without the two switches above.

Release builds (the default, and every wheel) carry no debug information (-g0, stripped at link time).

``python build.py`` compiles the extension in place (the developer build below). ``python -m build``
run in the repository root would import this file instead of the PyPA ``build`` package, since the
current directory comes first on sys.path: it is handed on to that package (see ``_run_pypa_build``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
INCLUDE = CSRC / "include"


def _cdef_text(header: Path) -> str:
    """A header without preprocessor lines and C++ guards: what cffi's cdef parser accepts."""
    out = []
    for line in header.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if stripped in ('extern "C" {', "}") and "__cplusplus" not in line:
            # only the C++ guard braces are bare like this in our headers
            continue
        out.append(line)
    text = "\n".join(out)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _sources(absolute: bool) -> list[str]:
    # setuptools wants paths relative to setup.py; the direct developer build below compiles in a
    # temporary folder and so needs absolute ones.
    return sorted(str(p if absolute else p.relative_to(ROOT)) for p in CSRC.rglob("*.c"))


def _compile_args() -> tuple[list[str], list[str]]:
    cflags = ["-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden", "-pthread", "-D_GNU_SOURCE"]
    ldflags = ["-pthread", "-lm"]
    if os.environ.get("RWKV_GGML_DEBUG") == "1":
        cflags += ["-O0", "-g"]
    elif os.environ.get("RWKV_GGML_PROFILE") == "1":
        # optimized, with symbols and line tables for `perf report` (benchmarks, not releases)
        cflags += ["-O3", "-g", "-fno-omit-frame-pointer"]
    else:
        # -g0 after Python's own CFLAGS (which usually hold -g) wins: release builds carry no debug info
        cflags += ["-O3", "-g0"]
        ldflags += ["-s"]
    if os.environ.get("RWKV_GGML_WERROR") == "1":
        cflags += ["-Werror"]
    if os.environ.get("RWKV_GGML_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        cflags += [*san, "-g"]
        ldflags += san
    return cflags, ldflags


def _run_pypa_build() -> None:
    """Runs the PyPA ``build`` package's command line, for ``python -m build`` in the repository root.

    The repository root is taken off sys.path first (it holds this file and the ``build/`` folder,
    both of which would shadow the package); the package's absence gets a one-line hint."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    sys.modules.pop("build", None)
    import importlib.util
    import runpy

    if importlib.util.find_spec("build") is None:
        sys.exit(
            "python -m build: the PyPA 'build' package is not installed (pip install build); "
            "'python build.py' compiles the extension in place"
        )
    runpy.run_module("build", run_name="__main__", alter_sys=True)


if __name__ == "__main__" and __spec__ is not None and __spec__.name == "build":
    # `python -m build` found this file: `python build.py` has no __spec__
    _run_pypa_build()
    sys.exit(0)

from cffi import FFI  # noqa: E402  (after the hand-over above, which needs no cffi)

ffibuilder = FFI()
_headers = sorted(INCLUDE.glob("*.h"))
ffibuilder.cdef("\n".join(_cdef_text(h) for h in _headers))
_cflags, _ldflags = _compile_args()
ffibuilder.set_source(
    "rwkv_ggml._core",
    "\n".join(f'#include "{h.name}"' for h in _headers),
    sources=_sources(absolute=__name__ == "__main__"),
    include_dirs=[str(INCLUDE)],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    # Developer build: compiles the extension next to the package sources (rwkv_ggml/_core*.so),
    # which is what an editable install would do, in a few seconds.
    # A fresh folder per build: distutils reuses any object newer than its .c file, so objects built
    # with other flags (the sanitizer build) or before a header changed would be linked in silently.
    work = ROOT / "build" / "cffi"
    shutil.rmtree(work, ignore_errors=True)
    out = ffibuilder.compile(verbose=False, tmpdir=str(work))
    target = ROOT / "rwkv_ggml" / Path(out).name
    # An editable install leaves _core.abi3.so; remove every other build so exactly one is imported.
    # Write beside and rename: a process that has the old library mapped keeps its (unlinked) copy
    # instead of crashing with SIGBUS when the file under it is overwritten.
    tmp = target.with_suffix(".so.tmp")
    tmp.write_bytes(Path(out).read_bytes())
    for stale in (ROOT / "rwkv_ggml").glob("_core*.so"):
        if stale != target:
            stale.unlink()
    os.replace(tmp, target)
    print(target)
    sys.exit(0)
