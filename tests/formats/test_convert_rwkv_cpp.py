"""The converter against rwkv.cpp's own conversions of the shipped tiny models, and its peak memory."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml.conversion import convert

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT / ".." / "shared" / "testdata" / "rwkv.cpp-tiny"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.formats.test_convert import official_from_bin, read_back, save_pth  # noqa: E402
from tests.reference.random_models import random_model_weights  # noqa: E402

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

C, L, V, N, F = 16, 2, 64, 4, 24
H = C // N
TOKENS = [3, 17, 42, 5]
VERSIONS = ["4", "5.1", "5.1-gated", "5.2", "6", "7"]
V7_ORDER = "rwkvag"
# A scrambled checkpoint order for v7's six mix vectors: the converter must not depend on it.
V7_SCRAMBLED = "gakrwv"

Arrays = dict[str, np.ndarray]


# --- against rwkv.cpp's own conversions of the shipped tiny models ---------------------------

TINY = {
    "4": "tiny-rwkv-4v0-660K",
    "5.1": "tiny-rwkv-5v1-730K",
    "5.2": "tiny-rwkv-5v2-730K",
    "7": "tiny-rwkv-7v0-834K",
}


def _tiny(stem: str, kind: str) -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"shared tiny-model folder {TESTDATA.resolve()} is absent")
    path = TESTDATA / f"{stem}-{kind}.bin"
    assert path.is_file(), f"{path} missing from the shared tiny-model folder"
    return path


@pytest.mark.parametrize("version", list(TINY))
def test_reproduces_rwkv_cpp_tiny_models(tmp_path: Path, version: str) -> None:
    """Raw checkpoint rebuilt from the shipped FP32 file -> our f32/f16 files == rwkv.cpp's FP32/FP16."""
    stem = TINY[version]
    _, fp32 = read_back(_tiny(stem, "FP32"))
    mf16, fp16 = read_back(_tiny(stem, "FP16"))
    raw = official_from_bin(version, fp32)
    src = tmp_path / "tiny.pth"
    save_pth(src, raw)
    n_layer = mf16.n_layer
    for dtype, shipped in (("f32", fp32), ("f16", fp16)):
        dst = tmp_path / f"tiny-{dtype}.bin"
        convert(src, dst, dtype, progress=False)
        mf, ours = read_back(dst)
        assert (mf.n_vocab, mf.n_embed, mf.n_layer) == (mf16.n_vocab, mf16.n_embed, n_layer)
        assert set(ours) == set(shipped)
        for name, want in shipped.items():
            have = ours[name]
            assert have.shape == want.shape and have.dtype == want.dtype, (
                name,
                have.shape,
                want.shape,
                have.dtype,
            )
            if have.dtype == np.float16:
                np.testing.assert_array_equal(have, want, err_msg=name)
            else:
                # exp/log round trips of decays: a few ulp; everything else bit-exact.
                np.testing.assert_allclose(have, want, rtol=3e-6, atol=1e-7, err_msg=name)


def test_peak_memory_is_about_one_tensor(tmp_path: Path) -> None:
    """Tensors stream through one at a time: the peak of Python/numpy allocations during a
    conversion stays near the largest tensor, far below the model size (tracemalloc counts
    numpy buffers; the memory-mapped input is not an allocation)."""
    import tracemalloc

    version, c, layers, vocab = "5.2", 128, 6, 1024
    raw = official_from_bin(version, random_model_weights(version, c, layers, vocab, head_size=32, seed=5))
    total = sum(a.nbytes for a in raw.values())
    largest = max(a.nbytes for a in raw.values())  # emb/head: vocab * c * 4 bytes
    assert total > 10 * largest
    src = tmp_path / "m.pth"
    save_pth(src, raw, torch.bfloat16)
    del raw
    tracemalloc.start()
    try:
        for dtype in ("f32", "f16"):
            tracemalloc.reset_peak()
            convert(src, tmp_path / f"m-{dtype}.bin", dtype, progress=False)
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 2.5 * largest + (1 << 20), f"{dtype}: peak {peak} bytes, largest tensor {largest}"
    finally:
        tracemalloc.stop()
