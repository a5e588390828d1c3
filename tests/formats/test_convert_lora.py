"""Tests of rwkv_ggml.conversion.merge_lora: LoRA checkpoints merged into a base model, against numpy."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml.errors import ModelFormatError

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT / ".." / "shared" / "testdata" / "rwkv.cpp-tiny"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.formats.test_convert import hand_preprocess, model, read_back, save_pth, save_safetensors  # noqa: E402

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


# --- LoRA merge -------------------------------------------------------------------------------

LORA_TARGETS = ("att.key.weight", "att.value.weight", "att.gate.weight", "ffn.key.weight")


def lora_checkpoint(raw: Mapping[str, np.ndarray], rank: int, seed: int) -> Arrays:
    """A LoRA file: A (r, in) / B (out, r) pairs for some matrices, plus a retrained ln_x."""
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for layer in range(L):
        for target in LORA_TARGETS:
            w = raw[f"blocks.{layer}.{target}"]
            prefix = f"blocks.{layer}.{target[: -len('.weight')]}"
            out[prefix + ".lora_A"] = rng.standard_normal((rank, w.shape[1])).astype(np.float32) * 0.1
            out[prefix + ".lora_B"] = rng.standard_normal((w.shape[0], rank)).astype(np.float32) * 0.1
        out[f"blocks.{layer}.att.ln_x.weight"] = rng.uniform(0.5, 1.5, C).astype(np.float32)
    return out


def merge_by_hand(raw: Mapping[str, np.ndarray], lora: Mapping[str, np.ndarray], alpha: float) -> Arrays:
    merged = {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}
    for name, value in lora.items():
        if not name.endswith((".lora_A", ".lora_B")):
            merged[name] = np.asarray(value, dtype=np.float64)
    for name in lora:
        if name.endswith(".lora_A"):
            prefix = name[: -len(".lora_A")]
            a = lora[name].astype(np.float64)
            b = lora[prefix + ".lora_B"].astype(np.float64)
            merged[prefix + ".weight"] = merged[prefix + ".weight"] + b @ a * (alpha / a.shape[0])
    return merged


@pytest.mark.parametrize("container", ["pth", "safetensors"])
def test_merge_lora_matches_numpy(tmp_path: Path, container: str) -> None:
    from rwkv_ggml.conversion import merge_lora

    _, raw = model("5.2", seed=29)
    lora = lora_checkpoint(raw, rank=4, seed=30)
    save = save_pth if container == "pth" else save_safetensors
    base_path, lora_path, dst = (
        tmp_path / f"base.{container}",
        tmp_path / f"lora.{container}",
        tmp_path / "m.bin",
    )
    save(base_path, raw)
    save(lora_path, lora)
    merge_lora(base_path, lora_path, dst, alpha=16, dtype="f32", progress=False)
    expected = merge_by_hand(raw, lora, 16.0)
    assert not np.allclose(expected["blocks.1.att.gate.weight"], raw["blocks.1.att.gate.weight"], atol=1e-3)
    _mf, got = read_back(dst)
    want = hand_preprocess("5.2", expected)
    assert set(got) == set(want) and not any("lora" in n for n in got)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    merge_lora(base_path, lora_path, dst, alpha=16, dtype="f16", progress=False)
    _, got16 = read_back(dst)
    assert got16["blocks.0.att.key.weight"].dtype == np.float16
    np.testing.assert_allclose(got16["blocks.0.att.key.weight"], want["blocks.0.att.key.weight"], rtol=1e-3)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda lo: lo.pop("blocks.0.att.key.lora_B"), "no partner 'blocks.0.att.key.lora_B'"),
        (
            lambda lo: lo.update(
                {
                    "blocks.0.att.nothing.lora_A": np.zeros((2, C), np.float32),
                    "blocks.0.att.nothing.lora_B": np.zeros((C, 2), np.float32),
                }
            ),
            "lacks",
        ),
        (lambda lo: lo.update({"blocks.0.att.key.lora_A": np.zeros((3, C), np.float32)}), "LoRA pair for"),
    ],
)
def test_merge_lora_errors(edit: Callable[[Arrays], object], match: str) -> None:
    from rwkv_ggml.conversion import lora_merged

    _, raw = model("5.2", seed=29)
    lora = lora_checkpoint(raw, rank=4, seed=30)
    edit(lora)
    with pytest.raises(ModelFormatError, match=re.escape(match) if "'" in match else match):
        lora_merged(raw, lora, 8.0)
