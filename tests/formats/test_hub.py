"""Model.from_pretrained and ``--model hf:...`` against a Hugging Face hub cache written here.

The tests cannot reach the hub: each one writes a small random checkpoint into a hub cache laid out as
huggingface_hub lays out its own (``models--OWNER--NAME/blobs/<sha256>``, ``snapshots/<commit>/FILE``
linking to the blob, ``refs/main`` naming the commit) and runs with ``HF_HUB_OFFLINE=1``, so the real
huggingface_hub finds the files there. Nothing of ours is mocked: the converted and quantized model is
compared with one made by ``convert`` + ``quantize`` directly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml import Model
from rwkv_ggml.conversion import convert
from rwkv_ggml.errors import ModelIOError
from rwkv_ggml.hub import checkpoint_candidates, parse_hf_model, pretrained_model_file
from rwkv_ggml.quantization import quantize
from tests.conftest import run_cli
from tests.reference.random_models import random_model_weights

hub_constants = pytest.importorskip("huggingface_hub.constants")
pytest.importorskip("safetensors")
from safetensors.numpy import save_file  # noqa: E402

from tests.formats.test_convert import official_from_bin  # noqa: E402

REPO = "rwkv-test/tiny-random"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKENS = [3, 17, 42, 5, 200]


def random_checkpoint(version: str = "4", seed: int = 5) -> dict[str, np.ndarray]:
    """Official-layout tensors of a random model with a 256-token vocabulary (the bytes tokenizer) and
    rows of 32 (one Q8_0 block)."""
    weights = random_model_weights(version, 32, 2, 256, head_size=8, ffn_dim=64, lora_dims=4, seed=seed)
    return {
        k: np.ascontiguousarray(v, dtype=np.float32) for k, v in official_from_bin(version, weights).items()
    }


class HubCache:
    """A huggingface_hub cache folder with one model repository, written file by file."""

    def __init__(self, root: Path, repo: str = REPO, commit: str = COMMIT) -> None:
        self.root = root
        self.repo_dir = root / ("models--" + repo.replace("/", "--"))
        self.snapshot = self.repo_dir / "snapshots" / commit
        (self.repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        self.snapshot.mkdir(parents=True, exist_ok=True)
        (self.repo_dir / "refs").mkdir(exist_ok=True)
        (self.repo_dir / "refs" / "main").write_text(commit)

    def add(self, name: str, data: bytes) -> Path:
        sha = hashlib.sha256(data).hexdigest()
        blob = self.repo_dir / "blobs" / sha
        blob.write_bytes(data)
        link = self.snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        return link

    def add_safetensors(self, name: str, tensors: dict[str, np.ndarray], tmp: Path) -> Path:
        path = tmp / "staging.safetensors"
        save_file(tensors, str(path))
        return self.add(name, path.read_bytes())


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubCache:
    """A hub cache in tmp_path, huggingface_hub in offline mode, our model cache in tmp_path too."""
    cache = HubCache(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache.root))
    monkeypatch.setenv("RWKV_GGML_CACHE", str(tmp_path / "ours"))
    # huggingface_hub reads its environment once, at import: point the imported module there too
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache.root))
    return cache


def logits_of(path: Path | str) -> np.ndarray:
    with Model(path, threads=1) as model:
        logits, _ = model.eval_sequence(TOKENS)
        assert logits is not None
        return logits


def direct(tmp_path: Path, tensors: dict[str, np.ndarray], dtype: str) -> Path:
    """The model file made from the same tensors by convert (+ quantize) by hand."""
    src = tmp_path / "direct.safetensors"
    save_file(tensors, str(src))
    f16 = tmp_path / "direct-f16.bin"
    if dtype in ("f32", "f16"):
        convert(src, f16, dtype, progress=False)
        return f16
    convert(src, f16, "f16", progress=False)
    out = tmp_path / f"direct-{dtype}.bin"
    quantize(f16, out, dtype, threads=1, progress=False)
    return out


def test_from_pretrained_converts_quantizes_and_caches_once(offline: HubCache, tmp_path: Path) -> None:
    tensors = random_checkpoint()
    offline.add_safetensors("model.safetensors", tensors, tmp_path)
    offline.add("README.md", b"# a tiny random RWKV\n")
    with Model.from_pretrained(REPO, threads=1) as model:
        assert model.dtype == "Q8_0"
        cached = Path(model.path)
        got, _ = model.eval_sequence(TOKENS)
    assert cached.parent == tmp_path / "ours" / "models"
    np.testing.assert_array_equal(got, logits_of(direct(tmp_path, tensors, "Q8_0")))
    # a second load uses the cached file: nothing converted again, nothing left over
    before = cached.stat().st_mtime_ns
    assert pretrained_model_file(REPO) == cached
    assert cached.stat().st_mtime_ns == before
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]


def test_dtype_and_source_hash_key_the_cache(offline: HubCache, tmp_path: Path) -> None:
    tensors = random_checkpoint()
    offline.add_safetensors("model.safetensors", tensors, tmp_path)
    f32 = pretrained_model_file(REPO, dtype="f32")
    q8 = pretrained_model_file(REPO)
    assert f32 != q8
    np.testing.assert_array_equal(logits_of(f32), logits_of(direct(tmp_path, tensors, "f32")))
    # another revision whose checkpoint has different content converts again
    other = HubCache(offline.root, commit="f" * 40)
    other.add_safetensors("model.safetensors", random_checkpoint(seed=9), tmp_path)
    again = pretrained_model_file(REPO, revision="f" * 40)
    assert again not in (f32, q8)
    assert not np.array_equal(logits_of(again), logits_of(q8))


def test_several_checkpoints_need_a_filename(offline: HubCache, tmp_path: Path) -> None:
    small, other = random_checkpoint(seed=1), random_checkpoint("7", seed=2)
    offline.add_safetensors("rwkv-a.safetensors", small, tmp_path)
    offline.add_safetensors("sub/rwkv-b.safetensors", other, tmp_path)
    with pytest.raises(
        ValueError, match=r"holds 2 checkpoints \(rwkv-a.safetensors, sub/rwkv-b.safetensors\)"
    ):
        pretrained_model_file(REPO)
    path = pretrained_model_file(REPO, "sub/rwkv-b.safetensors", dtype="f16")
    np.testing.assert_array_equal(logits_of(path), logits_of(direct(tmp_path, other, "f16")))


def test_sharded_safetensors_through_the_index(offline: HubCache, tmp_path: Path) -> None:
    tensors = random_checkpoint("7", seed=3)
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, shard_names in halves.items():
        offline.add_safetensors(shard, {n: tensors[n] for n in shard_names}, tmp_path)
        weight_map.update(dict.fromkeys(shard_names, shard))
    index = {"metadata": {}, "weight_map": weight_map}
    offline.add("model.safetensors.index.json", json.dumps(index).encode())
    assert checkpoint_candidates([*halves, "model.safetensors.index.json", "config.json"]) == [
        "model.safetensors.index.json"
    ]
    # a transformers repository: pytorch_model.bin when there is no safetensors file
    assert checkpoint_candidates(["config.json", "pytorch_model.bin", "tokenizer.json"]) == [
        "pytorch_model.bin"
    ]
    assert checkpoint_candidates(["model.safetensors", "pytorch_model.bin"]) == ["model.safetensors"]
    path = pretrained_model_file(REPO, dtype="f32")
    np.testing.assert_array_equal(logits_of(path), logits_of(direct(tmp_path, tensors, "f32")))


def test_missing_files_are_one_clear_error(offline: HubCache, tmp_path: Path) -> None:
    offline.add_safetensors("model.safetensors", random_checkpoint(), tmp_path)
    with pytest.raises(ModelIOError, match="'nope.pth' of the Hugging Face repository .*HF_HUB_OFFLINE"):
        pretrained_model_file(REPO, "nope.pth")
    with pytest.raises(ModelIOError, match="'rwkv-test/absent'.*HF_HUB_OFFLINE"):
        pretrained_model_file("rwkv-test/absent")
    with pytest.raises(ValueError, match="unknown dtype 'Q3_K'"):
        pretrained_model_file(REPO, dtype="Q3_K")
    assert not (tmp_path / "ours").exists()


def test_parse_hf_model() -> None:
    assert parse_hf_model("hf:BlinkDL/rwkv-7-world") == ("BlinkDL/rwkv-7-world", None)
    assert parse_hf_model("hf:a/b/sub/x.pth") == ("a/b", "sub/x.pth")
    for bad in ("hf:", "hf:alone", "hf:/b", "hf:a//x.pth", "hf:a/b/"):
        with pytest.raises(ValueError, match="is not hf:OWNER/NAME"):
            parse_hf_model(bad)


def test_cli_model_from_the_hub(offline: HubCache, tmp_path: Path) -> None:
    tensors = random_checkpoint()
    offline.add_safetensors("rwkv.safetensors", tensors, tmp_path)
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(offline.root),
        "RWKV_GGML_CACHE": str(tmp_path / "ours"),
    }
    args = ("generate", "Hello", "-n", "8", "--temperature", "0", "--threads", "1")
    proc = run_cli(*args, "-m", f"hf:{REPO}", env=env)
    assert proc.returncode == 0, proc.stderr
    expected = run_cli(*args, "-m", str(direct(tmp_path, tensors, "Q8_0")), env=env)
    assert expected.returncode == 0, expected.stderr
    assert proc.stdout == expected.stdout
    info = run_cli("info", "-m", f"hf:{REPO}/rwkv.safetensors", "--dtype", "f16", env=env)
    assert info.returncode == 0, info.stderr
    assert "dtype: F16" in info.stdout
    missing = run_cli("generate", "Hi", "-m", "hf:rwkv-test/absent", env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith(
        "rwkv-ggml: error: cannot get the Hugging Face repository 'rwkv-test/absent'"
    ), missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    local_dtype = run_cli(
        "generate", "Hi", "-m", str(direct(tmp_path, tensors, "f16")), "--dtype", "Q8_0", env=env
    )
    assert local_dtype.returncode == 1
    assert "--dtype applies to hf: models only" in local_dtype.stderr


def test_an_rwkv_cpp_model_file_in_the_repository_is_used_as_it_is(offline: HubCache, tmp_path: Path) -> None:
    model_file = direct(tmp_path, random_checkpoint(), "Q8_0")
    offline.add("rwkv-q8_0.bin", model_file.read_bytes())
    path = pretrained_model_file(REPO, "rwkv-q8_0.bin")
    assert path.parent == offline.snapshot and path.read_bytes() == model_file.read_bytes()
    assert not (tmp_path / "ours").exists()
