"""The restricted unpickler of .pth checkpoints: malicious pickles are refused without running, crafted
tensor records read like torch's, and malformed pickles give typed errors."""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rwkv_ggml.checkpoint import load_checkpoint
from rwkv_ggml.errors import ModelFormatError, UnsupportedError
from tests.formats.test_checkpoint import rewrite_zip

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
# Malicious pickles: refused, and nothing runs


def zip_with_pickle(path: Path, data_pkl: bytes, extra: Mapping[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/version", b"3\n")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)


class _Reduce:
    """Pickles as ``func(*args)``: how real exploit pickles look."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (data.pkl bytes, the global the error must name). Each would create ``marker``."""
    import builtins
    import subprocess

    touch = f"touch {marker}"
    py = f"open({str(marker)!r}, 'w').close()"
    real = torch.zeros(2)  # a legitimate tensor first, so a lazy loader cannot stop early
    buf = io.BytesIO()
    torch.save({"w": real}, buf)
    return {
        "os.system": (
            pickle.dumps({"w": _Reduce(os.system, touch)}, protocol=2),
            f"{os.system.__module__}.system",
        ),
        "builtins.eval": (pickle.dumps({"w": _Reduce(builtins.eval, py)}, protocol=2), "builtins.eval"),
        "builtins.exec": (pickle.dumps(_Reduce(builtins.exec, py), protocol=4), "builtins.exec"),
        "subprocess.Popen": (
            pickle.dumps({"w": _Reduce(subprocess.Popen, ["touch", str(marker)])}, protocol=2),
            "subprocess.Popen",
        ),
        "builtins.open": (
            pickle.dumps({"w": _Reduce(builtins.open, str(marker), "w")}, protocol=2),
            "io.open",
        ),
        # Hand-written protocol-0 opcodes: GLOBAL 'os system', then REDUCE.
        "protocol0": (f"cos\nsystem\n(V{touch}\ntR.".encode(), "os.system"),
        # INST opcode (class lookup + call in one).
        "INST": (f"(V{touch}\nios\nsystem\n.".encode(), "os.system"),
        # Smuggled in as the storage type of a persistent id.
        "persid": (b"(Vstorage\ncos\nsystem\nV0\nVcpu\nI1\ntP.", "os.system"),
        # torch's own loader is not a safe global either.
        "torch.load": (
            pickle.dumps(_Reduce(torch.load, str(marker)), protocol=2),
            "torch.serialization.load",
        ),
    }


@pytest.mark.parametrize(
    "payload",
    [
        "os.system",
        "builtins.eval",
        "builtins.exec",
        "subprocess.Popen",
        "builtins.open",
        "protocol0",
        "INST",
        "persid",
        "torch.load",
    ],
)
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    data, forbidden = _payloads(marker)[payload]
    path = tmp_path / "evil.pth"
    zip_with_pickle(path, data, {"archive/data/0": b"\0" * 8})
    with pytest.raises(ModelFormatError, match=f"forbidden global '{forbidden}'"):
        load_checkpoint(path)
    assert not marker.exists()


def test_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    """Control: the same bytes really do run code under an unrestricted unpickler."""
    marker = tmp_path / "pwned"
    data, _ = _payloads(marker)["builtins.open"]
    pickle.loads(data)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# Crafted storages: offsets, sizes, missing members


class _FakeStorage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _FakeTensor:
    def __init__(
        self, storage: _FakeStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _CraftPickler(pickle.Pickler):
    """Writes data.pkl records exactly like torch.save, but with whatever numbers we ask for."""

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _FakeStorage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _FakeTensor):
            args = (obj.storage, obj.offset, obj.size, obj.stride, False, collections.OrderedDict())
            return torch._utils._rebuild_tensor_v2, args
        return NotImplemented


def crafted_pth(path: Path, tensors: Mapping[str, _FakeTensor], blobs: Mapping[str, bytes]) -> None:
    buf = io.BytesIO()
    _CraftPickler(buf, protocol=2).dump(dict(tensors))
    zip_with_pickle(path, buf.getvalue(), {f"archive/data/{k}": v for k, v in blobs.items()})


def test_crafted_pth_reads_like_torch(tmp_path: Path) -> None:
    """Sanity check of the crafting helper: a consistent file reads the same in torch and here."""
    values = np.arange(12, dtype=np.float32)
    st = _FakeStorage("0", 12)
    path = tmp_path / "ok.pth"
    crafted_pth(path, {"t": _FakeTensor(st, 2, (2, 3), (1, 2))}, {"0": values.tobytes()})
    via_torch = torch.load(str(path), weights_only=True)["t"].numpy()
    with load_checkpoint(path) as ckpt:
        np.testing.assert_array_equal(ckpt["t"].numpy(), via_torch)


@pytest.mark.parametrize(
    ("offset", "size", "stride", "numel", "nbytes", "match"),
    [
        (10, (2, 3), (3, 1), 12, 48, "needs element 15"),  # view runs past the storage
        (0, (4, 4), (4, 1), 12, 48, "needs element 15"),
        (0, (2, 2), (1, 100), 12, 48, "needs element 101"),  # huge stride
        (-1, (2,), (1,), 12, 48, "negative"),
        (0, (3,), (1,), 12, 20, "has 20 bytes"),  # member shorter than the declared storage
    ],
)
def test_crafted_out_of_range_views(
    tmp_path: Path,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    numel: int,
    nbytes: int,
    match: str,
) -> None:
    st = _FakeStorage("0", numel)
    path = tmp_path / "bad.pth"
    crafted_pth(path, {"t": _FakeTensor(st, offset, size, stride)}, {"0": b"\0" * nbytes})
    with pytest.raises(ModelFormatError, match=match):
        load_checkpoint(path)


def test_malicious_object_after_real_tensors(tmp_path: Path) -> None:
    """A valid state dict with one poisoned entry after real tensors is still refused as a whole."""
    marker = tmp_path / "pwned"
    st = _FakeStorage("0", 4)
    buf = io.BytesIO()
    items = {
        "a": _FakeTensor(st, 0, (4,), (1,)),
        "b": _FakeTensor(st, 1, (2,), (1,)),
        "c": _Reduce(os.system, f"touch {marker}"),
    }
    _CraftPickler(buf, protocol=2).dump(items)
    path = tmp_path / "bad.pth"
    zip_with_pickle(path, buf.getvalue(), {"archive/data/0": b"\0" * 16})
    with pytest.raises(ModelFormatError, match="forbidden global"):
        load_checkpoint(path)
    assert not marker.exists()


def test_build_opcode_cannot_tamper_with_the_allowed_globals(tmp_path: Path) -> None:
    """BUILD (set attributes) on an allowed global or a storage type is refused; later loads still work."""
    good = tmp_path / "good.pth"
    torch.save({"a": torch.arange(4.0)}, str(good))
    tamper = [
        b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00etypeK\x00sb.",
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b.",
        b"\x80\x02ctorch\nFloatStorage\nN}X\x05\x00\x00\x00etypeK\x00s\x86b.",
    ]
    for i, data in enumerate(tamper):
        path = tmp_path / f"tamper{i}.pth"
        zip_with_pickle(path, data)
        with pytest.raises(ModelFormatError):
            load_checkpoint(path)
    assert_matches(good, {"a": torch.arange(4.0)})


def test_self_referencing_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "loop.pth"
    # d = {}; d["state_dict"] = d
    zip_with_pickle(path, b"\x80\x02}q\x00X\n\x00\x00\x00state_dicth\x00s.")
    with pytest.raises(ModelFormatError, match="too deeply"):
        load_checkpoint(path)


def test_missing_storage_member(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    crafted_pth(path, {"t": _FakeTensor(_FakeStorage("7", 4), 0, (4,), (1,))}, {"0": b"\0" * 16})
    with pytest.raises(ModelFormatError, match="archive/data/7"):
        load_checkpoint(path)


def test_missing_data_pkl(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    torch.save({"a": torch.ones(2)}, str(good))
    rewrite_zip(good, bad, lambda name, data: None if name.endswith("data.pkl") else data)
    with pytest.raises(ModelFormatError, match="no data.pkl"):
        load_checkpoint(bad)


def test_garbage_pickle(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    zip_with_pickle(path, b"\x80\x02}q\x00(X\x01\x00\x00")  # cut off in the middle
    with pytest.raises(ModelFormatError, match="data.pkl is not a valid"):
        load_checkpoint(path)
    zip_with_pickle(path, pickle.dumps([1, 2, 3]))
    with pytest.raises(ModelFormatError, match="not a state dict"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95, -22])
def test_truncated_pth(tmp_path: Path, keep: float) -> None:
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    torch.save({"a": torch.randn(64, 64), "b": torch.randn(64)}, str(good))
    data = good.read_bytes()
    cut = int(len(data) * keep) if keep > 0 else len(data) + int(keep)
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelFormatError, match=str(bad)):
        load_checkpoint(bad)


def test_legacy_pth_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"a": torch.ones(2)}, str(path), _use_new_zipfile_serialization=False)
    with pytest.raises(UnsupportedError, match="legacy"):
        load_checkpoint(path)
