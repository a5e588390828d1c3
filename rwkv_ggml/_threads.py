"""The default number of compute threads for a model.

A second thread pays only when an eval has enough work to share: every eval ends at a barrier where
the threads wait for each other, and on small models that wait costs more than the split saves.
Measured on the 2-core development machine under its usual load (other processes running; 1 vs 2
threads alternated, medians; README "Threads"): on the packaged default model (3.9 MiB) a token took
0.18 ms with one thread and 3.0 ms with two, a 128-token prompt ran at 11 500 vs 7 600 tokens/s; on a
53 MiB random-weight model 1.9 vs 9.9 ms per token (Q8_0). Larger models came closer (0.6-0.9x per
token from 137 MiB up) and prompts of a 364 MiB RWKV-7 ran 1.74x faster with two. Models under
:data:`SMALL_MODEL_BYTES` therefore get one thread; larger ones the physical cores.
"""

from __future__ import annotations

import os

from .ggml import default_threads

__all__ = ["SMALL_MODEL_BYTES", "default_threads_for_model"]

SMALL_MODEL_BYTES = 64 << 20


def default_threads_for_model(path: str | os.PathLike[str]) -> int:
    """1 for a model file under SMALL_MODEL_BYTES, else the number of physical cores. A file that
    cannot be read gets 1: opening it reports the problem right after."""
    try:
        size = os.stat(path).st_size
    except (OSError, ValueError):
        return 1
    return 1 if size < SMALL_MODEL_BYTES else default_threads()
