"""Tests of rwkv_ggml.checkpoint: torch-free, safe reading of .pth and .safetensors checkpoints.

Reference values come from PyTorch itself (``torch.save`` / ``safetensors.torch.save_file``
write the files, the original tensors are the expectation). Hostile and damaged inputs are
crafted byte by byte: pickles that would run code, zips without data.pkl, storages too small
for their tensors, truncated files, lying safetensors headers.
"""

from __future__ import annotations

import collections
import json
import shutil
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rwkv_ggml.checkpoint import load_checkpoint
from rwkv_ggml.errors import ClosedError, ModelFormatError, ModelIOError, UnsupportedError

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def as_numpy(t: Any) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.contiguous().numpy()


def assert_matches(path: Path, expected: Mapping[str, Any]) -> None:
    with load_checkpoint(path) as ckpt:
        assert list(ckpt) == list(expected)
        for name, tensor in expected.items():
            lazy = ckpt[name]
            want = as_numpy(tensor)
            assert lazy.shape == want.shape, name
            assert lazy.dtype == want.dtype, name
            got = lazy.numpy()
            assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Reading what PyTorch writes


def tricky_state_dict() -> dict[str, Any]:
    """Dtypes and views whose storage offset / strides are not the trivial ones."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 10, generator=g)
    return {
        "plain": torch.randn(3, 4, generator=g),
        "transposed": base.t(),  # non-contiguous strides (1, 10)
        "sliced": base[2:5, 3:7],  # storage offset 23, strides (10, 1)
        "same_storage": base,  # shares the storage with the two views above
        "expanded": torch.arange(4.0).reshape(4, 1).expand(4, 3),  # stride 0
        "param": torch.nn.Parameter(torch.randn(5, generator=g)),
        "bf16": (torch.randn(4, 3, generator=g) * 100).to(torch.bfloat16),
        "bf16_view": (torch.randn(3, 8, generator=g)).to(torch.bfloat16)[:, 1::2],
        "fp16": torch.randn(2, 3, 2, generator=g).half(),
        "fp64": torch.randn(3, generator=g, dtype=torch.float64),
        "int64": torch.arange(7),
        "int8": torch.tensor([-3, 0, 5], dtype=torch.int8),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "blocks.0.att.time_decay": torch.randn(8, generator=g),
    }


def test_pth_values_dtypes_and_views(tmp_path: Path) -> None:
    sd = tricky_state_dict()
    path = tmp_path / "tricky.pth"
    torch.save(sd, str(path))
    assert_matches(path, sd)
    with load_checkpoint(path) as ckpt:
        assert ckpt.format == "pth" and ckpt.layout == "official"
        assert ckpt["bf16"].source_dtype == "BFloat16Storage" and ckpt["bf16"].dtype == np.float32
        assert ckpt["fp16"].dtype == np.float16


def test_pth_ordered_dict_and_nested_state_dict(tmp_path: Path) -> None:
    sd = collections.OrderedDict([("b", torch.ones(2)), ("a", torch.zeros(3))])
    path = tmp_path / "nested.pth"
    torch.save({"state_dict": sd, "epoch": 3}, str(path))
    assert_matches(path, sd)


def test_pth_any_archive_name(tmp_path: Path) -> None:
    """The zip's top folder is named after the file by torch; a renamed file keeps the old name."""
    sd = {"x": torch.arange(6.0).reshape(2, 3)}
    first = tmp_path / "original-name.pth"
    torch.save(sd, str(first))
    moved = tmp_path / "renamed.ckpt"
    first.rename(moved)
    assert_matches(moved, sd)


def rewrite_zip(src: Path, dst: Path, edit: Any = None, compression: int = zipfile.ZIP_STORED) -> None:
    """Copy a zip member by member; ``edit(name, data)`` returns new data (None drops the member)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compression) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if edit is not None:
                data = edit(info.filename, data)
            if data is not None:
                zout.writestr(info.filename, data)


def test_pth_compressed_members_still_read(tmp_path: Path) -> None:
    sd = {"w": torch.randn(16, 8), "v": torch.randn(16, 8).t()}
    plain, packed = tmp_path / "plain.pth", tmp_path / "packed.pth"
    torch.save(sd, str(plain))
    rewrite_zip(plain, packed, compression=zipfile.ZIP_DEFLATED)
    assert_matches(packed, sd)


def test_pth_big_endian_byteorder(tmp_path: Path) -> None:
    """A checkpoint written on a big-endian machine records it in <top>/byteorder."""
    sd = {"f": torch.randn(3, 5), "h": torch.randn(4).half(), "b": torch.randn(2, 2).to(torch.bfloat16)}
    little, big = tmp_path / "little.pth", tmp_path / "big.pth"
    torch.save(sd, str(little))
    itemsize = {"0": 4, "1": 2, "2": 2}  # storage keys in save order: f, h, b

    def swap(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        key = name.rsplit("/", 1)[-1]
        if "/data/" in name:
            return np.frombuffer(data, dtype=f"<u{itemsize[key]}").byteswap().tobytes()
        return data

    rewrite_zip(little, big, swap)
    assert_matches(big, sd)


def test_safetensors_values_and_order(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    sd = {
        "z_first": torch.randn(3, 4, generator=g),
        "a_half": torch.randn(5, generator=g).half(),
        "m_bf16": (torch.randn(2, 7, generator=g) * 1e3).to(torch.bfloat16),
        "i32": torch.arange(3, dtype=torch.int32),
    }
    path = tmp_path / "m.safetensors"
    safetensors_torch.save_file(sd, str(path), metadata={"format": "pt"})
    with load_checkpoint(path) as ckpt:
        assert ckpt.format == "safetensors" and ckpt.metadata == {"format": "pt"}
        # Order = data order in the file, which the writer chose; it must cover all names exactly once.
        assert sorted(ckpt) == sorted(sd)
        for name, t in sd.items():
            np.testing.assert_array_equal(ckpt[name].numpy(), as_numpy(t), err_msg=name)
        assert ckpt["m_bf16"].dtype == np.float32 and ckpt["m_bf16"].source_dtype == "BF16"


def test_sharded_safetensors_and_directory(tmp_path: Path) -> None:
    a = {"emb.weight": torch.randn(4, 2)}
    b = {"head.weight": torch.randn(4, 2), "ln_out.weight": torch.ones(2)}
    safetensors_torch.save_file(a, str(tmp_path / "model-00001-of-00002.safetensors"))
    safetensors_torch.save_file(b, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = dict.fromkeys(a, "model-00001-of-00002.safetensors")
    weight_map |= dict.fromkeys(b, "model-00002-of-00002.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for target in (index, tmp_path):
        with load_checkpoint(target) as ckpt:
            assert sorted(ckpt) == sorted(a | b)
            np.testing.assert_array_equal(ckpt["head.weight"].numpy(), b["head.weight"].numpy())


def test_hf_rwkv_names_are_mapped(tmp_path: Path) -> None:
    sd = {
        "rwkv.embeddings.weight": torch.randn(5, 4),
        "rwkv.blocks.0.pre_ln.weight": torch.ones(4),
        "rwkv.blocks.0.ln1.bias": torch.zeros(4),
        "rwkv.blocks.0.attention.time_mix_key": torch.rand(1, 1, 4),
        "rwkv.blocks.0.attention.time_mix_receptance": torch.rand(1, 1, 4),
        "rwkv.blocks.0.attention.time_mix_gate": torch.rand(1, 1, 4),
        "rwkv.blocks.0.attention.time_decay": torch.randn(4),
        "rwkv.blocks.0.attention.key.weight": torch.randn(4, 4),
        "rwkv.blocks.0.feed_forward.time_mix_key": torch.rand(1, 1, 4),
        "rwkv.blocks.0.feed_forward.time_maa_r": torch.rand(1, 1, 4),
        "rwkv.blocks.0.feed_forward.value.weight": torch.randn(4, 8),
        "rwkv.ln_out.weight": torch.ones(4),
        "head.weight": torch.randn(5, 4),
    }
    path = tmp_path / "hf.safetensors"
    safetensors_torch.save_file(sd, str(path))
    expected = {
        "emb.weight": "rwkv.embeddings.weight",
        "blocks.0.ln0.weight": "rwkv.blocks.0.pre_ln.weight",
        "blocks.0.ln1.bias": "rwkv.blocks.0.ln1.bias",
        "blocks.0.att.time_mix_k": "rwkv.blocks.0.attention.time_mix_key",
        "blocks.0.att.time_mix_r": "rwkv.blocks.0.attention.time_mix_receptance",
        "blocks.0.att.time_mix_g": "rwkv.blocks.0.attention.time_mix_gate",
        "blocks.0.att.time_decay": "rwkv.blocks.0.attention.time_decay",
        "blocks.0.att.key.weight": "rwkv.blocks.0.attention.key.weight",
        "blocks.0.ffn.time_mix_k": "rwkv.blocks.0.feed_forward.time_mix_key",
        "blocks.0.ffn.time_maa_r": "rwkv.blocks.0.feed_forward.time_maa_r",
        "blocks.0.ffn.value.weight": "rwkv.blocks.0.feed_forward.value.weight",
        "ln_out.weight": "rwkv.ln_out.weight",
        "head.weight": "head.weight",
    }
    with load_checkpoint(path) as ckpt:
        assert ckpt.layout == "hf-rwkv"
        assert {name: ckpt[name].source_name for name in ckpt} == expected
        for name, source in expected.items():
            np.testing.assert_array_equal(ckpt[name].numpy(), sd[source].numpy())


def test_fla_rwkv7_names_shapes_and_transposes(tmp_path: Path) -> None:
    C, R = 6, 3
    sd = {
        "model.embeddings.weight": torch.randn(5, C),
        "model.layers.0.pre_norm.weight": torch.ones(C),
        "model.layers.0.attn_norm.bias": torch.zeros(C),
        "model.layers.0.ffn_norm.weight": torch.ones(C),
        "model.layers.0.attn.x_r": torch.rand(1, 1, C),
        "model.layers.0.attn.k_k": torch.rand(C),
        "model.layers.0.attn.r_k": torch.rand(2, 3),
        "model.layers.0.attn.r_proj.weight": torch.randn(C, C),
        "model.layers.0.attn.o_proj.weight": torch.randn(C, C),
        "model.layers.0.attn.w_lora.lora.0.weight": torch.randn(R, C),
        "model.layers.0.attn.w_lora.lora.2.weight": torch.randn(C, R),
        "model.layers.0.attn.w_lora.lora.2.bias": torch.randn(C),
        "model.layers.0.attn.g_norm.weight": torch.ones(C),
        "model.layers.0.ffn.x_k": torch.rand(1, 1, C),
        "model.norm.bias": torch.zeros(C),
        "lm_head.weight": torch.randn(5, C),
    }
    path = tmp_path / "fla.safetensors"
    safetensors_torch.save_file(sd, str(path))
    src = {k: v.numpy() for k, v in sd.items()}
    p = "model.layers.0."
    expected = {
        "emb.weight": src["model.embeddings.weight"],
        "blocks.0.ln0.weight": src[p + "pre_norm.weight"],
        "blocks.0.ln1.bias": src[p + "attn_norm.bias"],
        "blocks.0.ln2.weight": src[p + "ffn_norm.weight"],
        "blocks.0.att.x_r": src[p + "attn.x_r"],
        "blocks.0.att.k_k": src[p + "attn.k_k"].reshape(1, 1, C),
        "blocks.0.att.r_k": src[p + "attn.r_k"],
        "blocks.0.att.receptance.weight": src[p + "attn.r_proj.weight"],
        "blocks.0.att.output.weight": src[p + "attn.o_proj.weight"],
        "blocks.0.att.w1": src[p + "attn.w_lora.lora.0.weight"].T,
        "blocks.0.att.w2": src[p + "attn.w_lora.lora.2.weight"].T,
        "blocks.0.att.w0": src[p + "attn.w_lora.lora.2.bias"].reshape(1, 1, C),
        "blocks.0.att.ln_x.weight": src[p + "attn.g_norm.weight"],
        "blocks.0.ffn.x_k": src[p + "ffn.x_k"],
        "ln_out.bias": src["model.norm.bias"],
        "head.weight": src["lm_head.weight"],
    }
    with load_checkpoint(path) as ckpt:
        assert ckpt.layout == "hf-rwkv7-fla"
        assert sorted(ckpt) == sorted(expected)
        for name, want in expected.items():
            assert ckpt[name].shape == want.shape, name
            np.testing.assert_array_equal(ckpt[name].numpy(), want, err_msg=name)


def test_close_releases_but_returned_arrays_stay_valid(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    torch.save({"a": torch.arange(10.0)}, str(path))
    ckpt = load_checkpoint(path)
    lazy = ckpt["a"]
    kept = lazy.numpy()
    ckpt.close()
    ckpt.close()  # idempotent
    np.testing.assert_array_equal(kept, np.arange(10.0, dtype=np.float32))
    with pytest.raises(ClosedError, match="closed"):
        lazy.numpy()


# ---------------------------------------------------------------------------------------------
# Broken safetensors


def safetensors_bytes(header: Any, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    encoded = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (
            safetensors_bytes({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 12),
            ModelFormatError,
            "truncated",
        ),
        (
            safetensors_bytes({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16),
            ModelFormatError,
            "needs 16",
        ),
        (
            safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 16),
            ModelFormatError,
            "increasing",
        ),
        (
            safetensors_bytes({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 16),
            ModelFormatError,
            "malformed shape",
        ),
        (safetensors_bytes(None, raw_header=b"{not json"), ModelFormatError, "not valid JSON"),
        (safetensors_bytes(None, raw_header=b"[1, 2]"), ModelFormatError, "safetensors"),
        (safetensors_bytes(None, raw_header=b"{}  "), ModelFormatError, "no tensors"),
        (struct.pack("<Q", 1 << 40) + b"{}", ModelFormatError, "header claims"),
        (
            safetensors_bytes({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2),
            UnsupportedError,
            "F8_E4M3",
        ),
    ],
)
def test_bad_safetensors(tmp_path: Path, content: bytes, error: type[Exception], match: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(error, match=match):
        load_checkpoint(path)


def test_truncated_safetensors(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    safetensors_torch.save_file({"a": torch.randn(32, 32), "b": torch.randn(8)}, str(good))
    data = good.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 40, 4):
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match=str(bad)):
            load_checkpoint(bad)


# ---------------------------------------------------------------------------------------------
# Not a checkpoint at all


def test_not_a_checkpoint(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        load_checkpoint(empty)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello world, definitely not a model" * 4)
    with pytest.raises(ModelFormatError, match="not a PyTorch zip checkpoint"):
        load_checkpoint(junk)
    binfile = tmp_path / "model.bin"
    binfile.write_bytes(struct.pack("<6I", 0x67676D66, 101, 1, 1, 1, 0))
    with pytest.raises(ModelFormatError, match="already an rwkv.cpp model"):
        load_checkpoint(binfile)
    with pytest.raises(ModelIOError, match="cannot open"):
        load_checkpoint(tmp_path / "missing.pth")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ModelFormatError, match="no .safetensors"):
        load_checkpoint(folder)
    shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------
# State-tuned checkpoints


def test_initial_state_from_checkpoint(tmp_path: Path) -> None:
    from rwkv_ggml.checkpoint import initial_state_from_checkpoint

    layers, heads, size = 3, 2, 3
    c = heads * size
    rng = np.random.default_rng(0)
    ts = {
        f"blocks.{i}.att.time_state": rng.standard_normal((heads, size, size)).astype(np.float32)
        for i in range(layers)
    }
    path = tmp_path / "state.pth"
    torch.save({k: torch.from_numpy(v) for k, v in ts.items()}, str(path))
    per_layer = (2 + size) * c
    for version, transpose in (("6", True), ("5.2", True), ("7", False)):
        state = initial_state_from_checkpoint(path, version, n_layer=layers, n_embed=c)
        assert state.dtype == np.float32 and state.shape == (per_layer * layers,)
        for layer in range(layers):
            block = state[layer * per_layer : (layer + 1) * per_layer]
            np.testing.assert_array_equal(block[: 2 * c], 0.0)  # ffn_x, att_x
            raw = ts[f"blocks.{layer}.att.time_state"]
            for h in range(heads):
                for i in range(size):
                    for j in range(size):
                        # §7: S[h][i][j] at 2C + h·N·N + i·N + j; official v5/v6 file holds [h][j][i].
                        want = raw[h, j, i] if transpose else raw[h, i, j]
                        assert block[2 * c + h * size * size + i * size + j] == want
    with pytest.raises(ModelFormatError, match="model has 4 layers"):
        initial_state_from_checkpoint(path, "6", n_layer=4)
    with pytest.raises(ModelFormatError, match="n_embed 6"):
        initial_state_from_checkpoint(path, "6", n_embed=8)
    with pytest.raises(UnsupportedError):
        initial_state_from_checkpoint(path, "4")
    del ts["blocks.1.att.time_state"]
    with pytest.raises(ModelFormatError, match=r"missing \[1\]"):
        initial_state_from_checkpoint(ts, "7")
    with pytest.raises(ModelFormatError, match="not a state-tuned"):
        initial_state_from_checkpoint({"emb.weight": np.zeros((2, 2), np.float32)}, "7")
