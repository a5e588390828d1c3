"""Model loading: every kind of broken file fails with ModelFormatError (never a crash), the weights are
held once, and opening/closing models leaks nothing."""

from __future__ import annotations

import gc
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import rwkv_ggml
from rwkv_ggml import Model, ModelFormatError
from rwkv_ggml.fileformat import read_model_file
from tests.reference.random_models import write_random_model


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "good.bin"
    write_random_model(path, "4", 64, 2, 100, ffn_dim=128, seed=3)
    with Model(path) as m:  # the fixture itself must be loadable
        m.eval(1)
    return path


def _write(tmp_path: Path, data: bytes, name: str = "bad.bin") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_truncations_raise_model_format_error(good_file: Path, tmp_path: Path) -> None:
    data = good_file.read_bytes()
    mf = read_model_file(good_file)
    recs = list(mf.tensors.values())
    points = {
        0,
        3,
        12,
        23,
        24,
        27,
        30,
        recs[0].offset - 2,
        recs[0].offset + 1,
        recs[3].offset + 7,
        recs[len(recs) // 2].offset,
        recs[-1].offset - 1,
        len(data) - 1,
    }
    assert len(points) >= 10
    for cut in sorted(points):
        with pytest.raises(ModelFormatError):
            Model(_write(tmp_path, data[:cut]))


@pytest.mark.parametrize(
    "field, value",
    [
        ("magic", 0x12345678),
        ("version", 99),
        ("version", 102),
        ("n_vocab", 101),
        ("n_vocab", 0),
        ("n_embed", 65),
        ("n_embed", 1 << 30),
        ("n_layer", 3),
        ("n_layer", 1),
        ("n_layer", 0),
        ("data_type", 5),
        ("data_type", 77),
    ],
)
def test_each_header_field_corrupted(good_file: Path, tmp_path: Path, field: str, value: int) -> None:
    data = bytearray(good_file.read_bytes())
    offset = ["magic", "version", "n_vocab", "n_embed", "n_layer", "data_type"].index(field) * 4
    struct.pack_into("<I", data, offset, value)
    with pytest.raises(ModelFormatError):
        Model(_write(tmp_path, bytes(data)))


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Rewrites a model file through fileformat after edit(name, array) -> (name, array) | None."""
    from rwkv_ggml.fileformat import write_model_file

    mf = read_model_file(src)
    tensors = []
    for name in mf.tensors:
        item = edit(name, np.array(mf.array(name)))
        if item is not None:
            tensors.append(item)
    write_model_file(
        dst,
        n_vocab=mf.n_vocab,
        n_embed=mf.n_embed,
        n_layer=mf.n_layer,
        data_type=mf.data_type,
        tensors=tensors,
    )
    return dst


def test_renamed_tensor(good_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(
        good_file,
        tmp_path / "renamed.bin",
        lambda n, a: (n.replace("blocks.1.att.key.weight", "blocks.1.att.kee.weight"), a),
    )
    with pytest.raises(ModelFormatError, match="blocks.1.att.key.weight"):
        Model(bad)


def test_missing_tensor(good_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(good_file, tmp_path / "missing.bin", lambda n, a: None if n == "ln_out.bias" else (n, a))
    with pytest.raises(ModelFormatError, match="ln_out.bias"):
        Model(bad)


def test_wrong_shape(good_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(
        good_file,
        tmp_path / "shape.bin",
        lambda n, a: (n, a[:, :-1].copy()) if n == "blocks.0.att.value.weight" else (n, a),
    )
    with pytest.raises(ModelFormatError, match="blocks.0.att.value.weight"):
        Model(bad)


def test_wrong_dtype_for_a_vector(good_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(
        good_file,
        tmp_path / "dtype.bin",
        lambda n, a: (n, a.astype(np.float16)) if n == "blocks.0.att.time_decay" else (n, a),
    )
    with pytest.raises(ModelFormatError, match="must be F32"):
        Model(bad)


def test_huge_dimension(good_file: Path, tmp_path: Path) -> None:
    data = bytearray(good_file.read_bytes())
    mf = read_model_file(good_file)
    rec = mf.tensors["emb.weight"]
    # the record's ne[1] sits just before the name: dim_count, key_len, type, ne0, ne1, name
    ne1_pos = rec.offset - len(b"emb.weight") - 4
    assert struct.unpack_from("<i", data, ne1_pos)[0] == 100
    struct.pack_into("<i", data, ne1_pos, 2**31 - 1)
    with pytest.raises(ModelFormatError):
        Model(_write(tmp_path, bytes(data)))


def test_not_a_model_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError):
        Model(_write(tmp_path, b"hello world, not a model at all" * 10))
    with pytest.raises(rwkv_ggml.ModelIOError):
        Model(tmp_path / "does-not-exist.bin")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("placement", ["hugepage", "mmap"])
def test_weights_are_held_once(tmp_path_factory: pytest.TempPathFactory, placement: str) -> None:
    """Loading a 100+ MB F16 model raises resident memory by about the touched weights, not a copy more."""
    path = tmp_path_factory.getbasetemp() / "big-f16.bin"
    if not path.exists():
        write_random_model(path, "4", 1024, 4, 2000, ffn_dim=4096, dtype="f16", seed=11)
    size = path.stat().st_size
    assert size > 100e6
    gc.collect()
    before = _rss_bytes()
    with Model(path, threads=2, placement=placement) as m:
        loaded = _rss_bytes() - before
        m.eval(1)
        touched = _rss_bytes() - before
    if placement == "mmap":
        assert loaded < 0.1 * size, f"mmap placement read {loaded} bytes up front"
    assert touched < 1.2 * size, f"resident memory grew by {touched} bytes for a {size}-byte file"
    assert touched > 0.8 * size  # the eval really touched every weight once


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_open_close_cycles_leak_nothing(good_file: Path) -> None:
    # warm up allocator pools and lazy imports
    for _ in range(3):
        with Model(good_file, threads=2) as m:
            m.eval(1)
    gc.collect()
    fds, threads, rss = _fds(), _os_threads(), _rss_bytes()
    for i in range(100):
        m = Model(good_file, threads=2, placement="hugepage" if i % 2 else "mmap")
        m.eval(i % 100)
        m.close()
        m.close()  # idempotent
    gc.collect()
    assert _fds() == fds
    assert _os_threads() == threads
    assert _rss_bytes() - rss < 16 << 20
