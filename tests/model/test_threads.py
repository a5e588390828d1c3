"""The default thread count: one thread for small models (a second one costs more than it saves
there, README "Threads"), the physical cores for larger ones; an explicit count always wins."""

from __future__ import annotations

from pathlib import Path

import rwkv_ggml
from rwkv_ggml._threads import SMALL_MODEL_BYTES, default_threads_for_model
from rwkv_ggml.ggml import default_threads


def test_small_models_get_one_thread() -> None:
    with rwkv_ggml.Model(rwkv_ggml.default_model_path()) as model:
        assert model.threads == 1
    with rwkv_ggml.Model(rwkv_ggml.default_model_path(), threads=2) as model:
        assert model.threads == 2


def test_large_models_get_the_physical_cores(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(SMALL_MODEL_BYTES)  # sparse: the size is what counts
    assert default_threads_for_model(big) == default_threads()
    small = tmp_path / "small.bin"
    small.write_bytes(b"\0" * 1024)
    assert default_threads_for_model(small) == 1
    assert default_threads_for_model(tmp_path / "missing.bin") == 1
