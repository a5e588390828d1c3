"""Tests of rwkv_ggml.State: typed states, their file format, and refusing another model's state.

The file-format tests use a stand-in model object (the State needs only the model's identity:
version, sizes, fingerprint, path, init_state), so they run without the compiled engine. The tests
marked ``engine`` use real models (random weights written by tests/reference/random_models.py):
eval from a loaded state equals eval from the original, ``Model.eval`` accepts a State and refuses
another model's, and ``Model.fingerprint`` behaves as documented.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml.arch import Hyper
from rwkv_ggml.errors import EngineArgumentError, ModelFormatError, ModelIOError, UnsupportedError
from rwkv_ggml.state import STATE_MAGIC, State, StateInfo
from tests.reference.random_models import write_random_model

HEADER = 96


@dataclass
class FakeModel:
    """What State reads off a Model, without the engine."""

    version: str
    n_embed: int
    n_layer: int
    head_size: int = 0
    fingerprint: str = "ab" * 32
    path: str = "fake.bin"
    hparams: Hyper = field(init=False)

    def __post_init__(self) -> None:
        n_head = self.n_embed // self.head_size if self.head_size else 0
        self.hparams = Hyper(
            version=self.version,
            n_vocab=10,
            n_embed=self.n_embed,
            n_layer=self.n_layer,
            ffn_dim=4 * self.n_embed,
            n_head=n_head,
            head_size=self.head_size,
        )

    @property
    def state_size(self) -> int:
        return self.hparams.state_size

    def init_state(self) -> np.ndarray:
        return np.zeros(self.state_size, dtype=np.float32)


def random_state(model: FakeModel, seed: int = 0) -> State:
    values = np.random.default_rng(seed).standard_normal(model.state_size).astype(np.float32)
    return State.from_array(model, values)  # type: ignore[arg-type]


V52 = FakeModel("5.2", 32, 3, head_size=8)


# ---------------------------------------------------------------------------------------------
# The State object


def test_new_from_array_copy_and_metadata() -> None:
    s = State.new(V52)  # type: ignore[arg-type]
    assert s.array.dtype == np.float32 and s.array.shape == ((2 + 8) * 32 * 3,)
    assert (s.version, s.n_embed, s.n_layer, s.n_head, s.head_size) == ("5.2", 32, 3, 4, 8)
    assert s.fingerprint == V52.fingerprint and s.info == StateInfo.of(V52)  # type: ignore[arg-type]
    assert np.all(s.array == 0)
    src = np.arange(V52.state_size, dtype=np.float64)
    t = State.from_array(V52, src)  # type: ignore[arg-type]
    assert t.array.dtype == np.float32
    np.testing.assert_array_equal(t.array, src.astype(np.float32))
    c = t.copy()
    c.array[0] = 99.0
    assert t.array[0] == 0.0 and c.info == t.info
    own = np.zeros(V52.state_size, dtype=np.float32)
    shared = State.from_array(V52, own, copy=False)  # type: ignore[arg-type]
    own[1] = 5.0
    assert shared.array[1] == 5.0 and np.asarray(shared) is own
    assert "v5.2" in repr(s) and "4 heads of size 8" in repr(s)


@pytest.mark.parametrize("bad", [np.zeros(5, np.float32), np.zeros((3, 320), np.float32), "abc"])
def test_from_array_refuses_wrong_shapes(bad: object) -> None:
    with pytest.raises(EngineArgumentError):
        State.from_array(V52, bad)  # type: ignore[arg-type]


def test_matches() -> None:
    s = random_state(V52)
    other_weights = FakeModel("5.2", 32, 3, head_size=8, fingerprint="cd" * 32)
    other_variant = FakeModel("5.1", 32, 3, head_size=8, fingerprint="cd" * 32)
    assert s.matches(V52)  # type: ignore[arg-type]
    assert not s.matches(other_weights)  # type: ignore[arg-type]
    assert s.matches(other_weights, strict=False)  # type: ignore[arg-type]
    assert s.matches(other_variant, strict=False)  # type: ignore[arg-type]  # same v5 layout
    assert not s.matches(FakeModel("6", 32, 3, head_size=8), strict=False)  # type: ignore[arg-type]
    assert not s.matches(FakeModel("5.2", 32, 3, head_size=16), strict=False)  # type: ignore[arg-type]
    with pytest.raises(EngineArgumentError, match="fingerprint"):
        s.array_for(other_weights)  # type: ignore[arg-type]
    assert s.array_for(V52) is s.array  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The file format


def test_save_load_round_trip(tmp_path: Path) -> None:
    for model in (V52, FakeModel("4", 24, 2), FakeModel("7", 16, 1, head_size=4)):
        s = random_state(model, seed=3)
        path = tmp_path / f"v{model.version}.state"
        s.save(path)
        assert path.stat().st_size == HEADER + 4 * model.state_size
        assert path.read_bytes()[:8] == STATE_MAGIC
        back = State.load(path, model)  # type: ignore[arg-type]
        np.testing.assert_array_equal(back.array, s.array)
        assert back.info == s.info and back.array.flags.writeable
        # without a model the file's own identity comes back
        assert State.load(path).info == s.info
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v4.state", "v5.2.state", "v7.state"]


def test_save_overwrites_atomically_and_reports_io_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.state"
    random_state(V52, 1).save(path)
    second = random_state(V52, 2)
    second.save(path)
    np.testing.assert_array_equal(State.load(path, V52).array, second.array)  # type: ignore[arg-type]
    with pytest.raises(ModelIOError, match="no-such-dir"):
        second.save(tmp_path / "no-such-dir" / "s.state")
    with pytest.raises(ModelIOError, match="missing.state"):
        State.load(tmp_path / "missing.state", V52)  # type: ignore[arg-type]


def test_header_layout_is_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "s.state"
    s = random_state(V52, 4)
    s.save(path)
    data = path.read_bytes()
    magic, fmt, crc = struct.unpack_from("<8sII", data, 0)
    assert (magic, fmt) == (b"RWKVSTAT", 1)
    assert data[16:32].rstrip(b"\0") == b"5.2"
    assert struct.unpack_from("<IIIIQQ", data, 32) == (32, 3, 4, 8, V52.state_size, 0)
    assert data[64:96].hex() == V52.fingerprint
    np.testing.assert_array_equal(np.frombuffer(data[96:], dtype="<f4"), s.array)
    assert crc == zlib.crc32(data[:12] + b"\0\0\0\0" + data[16:])


@pytest.mark.parametrize(
    "other, match",
    [
        (FakeModel("5.2", 32, 3, head_size=8, fingerprint="cd" * 32), "fingerprint"),
        (FakeModel("6", 32, 3, head_size=8), "version v5.2 vs v6"),
        (FakeModel("5.2", 32, 2, head_size=8), "n_layer 3 vs 2"),
        (FakeModel("5.2", 64, 3, head_size=8), "n_embed 32 vs 64"),
        (FakeModel("5.2", 32, 3, head_size=16), "n_head 4 vs 2"),
        (FakeModel("4", 32, 3), "version"),
    ],
)
def test_load_refuses_another_models_state(tmp_path: Path, other: FakeModel, match: str) -> None:
    path = tmp_path / "s.state"
    random_state(V52).save(path)
    with pytest.raises(ModelFormatError, match=match) as info:
        State.load(path, other)  # type: ignore[arg-type]
    assert str(path) in str(info.value) and "another model" in str(info.value)


def test_non_strict_load_checks_only_the_layout(tmp_path: Path) -> None:
    path = tmp_path / "s.state"
    s = random_state(V52)
    s.save(path)
    requantized = FakeModel("5.2", 32, 3, head_size=8, fingerprint="cd" * 32, path="q5.bin")
    back = State.load(path, requantized, strict=False)  # type: ignore[arg-type]
    np.testing.assert_array_equal(back.array, s.array)
    assert back.fingerprint == requantized.fingerprint  # it now belongs to the model it was loaded for
    with pytest.raises(ModelFormatError, match="n_layer"):
        State.load(path, FakeModel("5.2", 32, 4, head_size=8), strict=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("keep", [0, 4, 8, 50, HEADER - 1, HEADER, HEADER + 4, -4, -1])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "s.state"
    random_state(V52).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with pytest.raises(ModelFormatError, match="truncated|not an rwkv_ggml state file") as info:
        State.load(path, V52)  # type: ignore[arg-type]
    assert str(path) in str(info.value)
    if keep >= 8:
        assert "truncated" in str(info.value)


def test_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.state"
    random_state(V52).save(path)
    path.write_bytes(path.read_bytes() + b"\0\0\0\0")
    with pytest.raises(ModelFormatError, match="trailing"):
        State.load(path, V52)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "offset, match",
    [
        (0, "magic"),
        (7, "magic"),
        (20, "checksum"),  # the version string
        (33, "checksum"),  # n_embed
        (70, "checksum"),  # the fingerprint
        (HEADER + 5, "checksum"),  # a float
        (-1, "checksum"),  # the last float
    ],
)
def test_corrupted_file(tmp_path: Path, offset: int, match: str) -> None:
    path = tmp_path / "s.state"
    random_state(V52).save(path)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match=match) as info:
        State.load(path, V52)  # type: ignore[arg-type]
    assert str(path) in str(info.value)


def test_other_files_are_not_state_files(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    write_random_model(path, "4", 8, 1, 10, seed=1)
    with pytest.raises(ModelFormatError, match="not an rwkv_ggml state file"):
        State.load(path, V52)  # type: ignore[arg-type]


def rewrite(path: Path, edit: dict[int, bytes]) -> None:
    """Patch header bytes and fix the checksum, as a hand-made (not damaged) file would be."""
    data = bytearray(path.read_bytes())
    for offset, value in edit.items():
        data[offset : offset + len(value)] = value
    data[12:16] = b"\0\0\0\0"
    data[12:16] = struct.pack("<I", zlib.crc32(bytes(data)))
    path.write_bytes(bytes(data))


def test_newer_format_version_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "s.state"
    random_state(V52).save(path)
    rewrite(path, {8: struct.pack("<I", 2)})
    with pytest.raises(UnsupportedError, match="format version 2"):
        State.load(path, V52)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "edit, match",
    [
        ({16: b"9.9\0"}, "unknown RWKV version"),
        ({40: struct.pack("<I", 3)}, "inconsistent"),  # n_head * head_size != n_embed
        ({32: struct.pack("<I", 0)}, "inconsistent"),
    ],
)
def test_inconsistent_header_with_valid_checksum(tmp_path: Path, edit: dict[int, bytes], match: str) -> None:
    path = tmp_path / "s.state"
    random_state(V52).save(path)
    rewrite(path, edit)
    with pytest.raises(ModelFormatError, match=match):
        State.load(path)


def test_n_floats_must_match_the_header_sizes(tmp_path: Path) -> None:
    """A hand-made file whose float count fits its length but not its sizes."""
    path = tmp_path / "s.state"
    random_state(V52).save(path)
    data = path.read_bytes()
    path.write_bytes(data + b"\0" * 4)
    rewrite(path, {48: struct.pack("<Q", V52.state_size + 1)})
    with pytest.raises(ModelFormatError, match="inconsistent"):
        State.load(path)


# ---------------------------------------------------------------------------------------------
# With the engine


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("rwkv_ggml._core", reason="the C engine is not built")
    d = tmp_path_factory.mktemp("state-models")
    paths = {}
    for name, seed, dtype in (("a", 1, "f32"), ("b", 2, "f32"), ("a16", 1, "f16")):
        paths[name] = d / f"{name}.bin"
        write_random_model(
            paths[name], "4", 32, 2, 60, ffn_dim=64, seed=seed, dtype="f16" if dtype == "f16" else "f32"
        )
    return paths


def test_engine_round_trip(models: dict[str, Path], tmp_path: Path) -> None:
    from rwkv_ggml import Model
    from rwkv_ggml import State as LazyState

    assert LazyState is State  # exported lazily from the package
    with Model(models["a"], threads=1) as m:
        _, arr = m.eval_sequence([5, 9, 13])
        s = State.from_array(m, arr)
        path = tmp_path / "prompt.state"
        s.save(path)
        loaded = State.load(path, m)
        for start in (s, loaded, arr, loaded.array):
            logits, new = m.eval(21, start)  # a State is accepted like its array
            ref_logits, ref_new = m.eval(21, arr)
            np.testing.assert_array_equal(logits, ref_logits)
            np.testing.assert_array_equal(new, ref_new)
        seq_logits, _ = m.eval_sequence([21, 22], loaded)
        np.testing.assert_array_equal(seq_logits, m.eval_sequence([21, 22], arr)[0])
        # state_out may be a State too: its array is written in place
        out = State.new(m)
        m.eval(21, loaded, state_out=out)
        np.testing.assert_array_equal(out.array, ref_new)
        np.testing.assert_array_equal(loaded.array, arr)  # the input state is never modified
        np.testing.assert_array_equal(State.new(m).array, m.init_state())


def test_engine_refuses_another_models_state(models: dict[str, Path], tmp_path: Path) -> None:
    from rwkv_ggml import Model

    path = tmp_path / "a.state"
    with Model(models["a"], threads=1) as a:
        s = State.from_array(a, a.eval(3)[1])
        s.save(path)
    with Model(models["b"], threads=1) as b, Model(models["a16"], threads=1) as a16:
        for other in (b, a16):  # same shapes; different weights, or the same weights in f16
            with pytest.raises(ValueError, match="another model"):
                other.eval(4, s)
            with pytest.raises(ModelFormatError, match="fingerprint"):
                State.load(path, other)
            relaxed = State.load(path, other, strict=False)
            assert relaxed.matches(other)
            other.eval(4, relaxed)  # fine once explicitly accepted


def test_fingerprint(models: dict[str, Path], tmp_path: Path) -> None:
    from rwkv_ggml import Model

    copy = tmp_path / "copy.bin"
    copy.write_bytes(models["a"].read_bytes())
    prints = {}
    for name, path, placement in (
        ("a", models["a"], "hugepage"),
        ("a-mmap", models["a"], "mmap"),
        ("copy", copy, "hugepage"),
        ("b", models["b"], "hugepage"),
        ("a16", models["a16"], "hugepage"),
    ):
        with Model(path, threads=1, placement=placement) as m:
            fp = m.fingerprint
            assert m.fingerprint == fp  # cached, stable
            prints[name] = fp
    assert len(prints["a"]) == 64 and int(prints["a"], 16) >= 0
    assert prints["a"] == prints["a-mmap"] == prints["copy"]  # placement and file path do not matter
    assert len({prints["a"], prints["b"], prints["a16"]}) == 3
    # one changed weight in a large tensor, at a sampled position (the first bytes are always sampled)
    from rwkv_ggml.fileformat import read_model_file

    with read_model_file(models["a"]) as mf:
        offset = mf.tensors["emb.weight"].offset
    data = bytearray(models["a"].read_bytes())
    data[offset] ^= 0x01
    changed = tmp_path / "changed.bin"
    changed.write_bytes(bytes(data))
    with Model(changed, threads=1) as m:
        assert m.fingerprint != prints["a"]
