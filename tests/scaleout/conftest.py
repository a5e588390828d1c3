"""A real local Ray cluster for the tests of rwkv_ggml.ray, started once per test session.

It declares 4 logical CPUs on this 2-core machine: each actor/replica asks for 1 CPU per engine thread
(threads=1 here), and Ray Data's read tasks need a CPU slot of their own besides the 2 actors, or the
pipeline waits forever for one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'rwkv_ggml[ray]'; CI installs it)")

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    # the workers import rwkv_ggml from this checkout: they inherit the environment of the driver
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old if old else "")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
