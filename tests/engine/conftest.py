"""Fixtures of the engine suite: the SIMD level and the thread count a test runs with.

``simd_level`` runs a test once per kernel level this CPU supports (0 = the portable scalar path, 1 = AVX2,
2 = AVX-512), selecting it process-wide with ``ggml.simd_select`` and restoring the level that was in
effect before (the CPU's best, or 0 under ``RWKV_GGML_FORCE_SCALAR=1``). ``threads`` runs a test with
1, 2 and 4 threads (4 on a 2-core machine exercises the barrier's yield path).

``RWKV_GGML_REPORT_ERRORS=1`` prints the max abs/rel error observed per case at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from rwkv_ggml import ggml

from .helpers import THREAD_COUNTS, report_lines

SIMD_LEVELS = list(range(ggml.simd_max_level() + 1))
SIMD_NAMES = {0: "scalar", 1: "avx2", 2: "avx512"}


@pytest.fixture(params=SIMD_LEVELS, ids=[SIMD_NAMES.get(lv, str(lv)) for lv in SIMD_LEVELS])
def simd_level(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = ggml.simd_level()
    level = ggml.simd_select(request.param)
    assert level == request.param, f"simd_select({request.param}) gave level {level}"
    try:
        yield level
    finally:
        ggml.simd_select(previous)


@pytest.fixture(params=THREAD_COUNTS, ids=[f"t{n}" for n in THREAD_COUNTS])
def threads(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("RWKV_GGML_REPORT_ERRORS") == "1":
        terminalreporter.section("engine: max errors observed per case")
        for line in report_lines():
            terminalreporter.write_line(line)
