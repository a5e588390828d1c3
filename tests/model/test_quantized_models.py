"""Quantized models end to end: our quantize tool reproduces rwkv.cpp's files byte for byte, quantized
tiny models meet the per-format bounds of testdata.md §4, random models stay close to F32, and the
tool's bad inputs fail cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rwkv_ggml
from rwkv_ggml import Model
from rwkv_ggml.fileformat import read_model_file
from rwkv_ggml.quantization import quantize
from tests.conftest import tiny_path
from tests.model.formats import model_in_format
from tests.reference.random_models import write_random_model

PROMPT = [34, 105, 110]
# testdata.md §4: max |logit - expected| per format (observed well below), and rwkv.cpp's signed-sum E
BOUNDS = {"Q8_0": 0.3, "Q5_0": 2.5, "Q5_1": 2.5, "Q4_0": 3.0, "Q4_1": 3.0}
RWKV_CPP_E_4V0 = {"Q4_0": -0.160030, "Q4_1": -0.547409, "Q5_0": -0.170404, "Q5_1": 0.278034, "Q8_0": 0.076282}


@pytest.mark.parametrize("stem", ["4v0-660K", "5v1-730K", "5v2-730K", "7v0-834K"])
@pytest.mark.parametrize("fmt", ["Q5_0", "Q5_1"])
def test_quantize_reproduces_rwkv_cpp_files(tmp_path: Path, stem: str, fmt: str) -> None:
    shipped = tiny_path(f"tiny-rwkv-{stem}-{fmt}.bin")
    out = tmp_path / "ours.bin"
    quantize(tiny_path(f"tiny-rwkv-{stem}-FP32.bin"), out, fmt, threads=2, progress=False)
    assert out.read_bytes() == shipped.read_bytes()


@pytest.mark.parametrize("fmt", list(BOUNDS))
def test_quantized_tiny_v4_within_bounds(tmp_path: Path, fmt: str) -> None:
    expected = np.fromfile(tiny_path("expected-logits-4v0-660K.bin"), dtype="<f4")
    out = tmp_path / f"4v0-{fmt}.bin"
    quantize(tiny_path("tiny-rwkv-4v0-660K-FP32.bin"), out, fmt, threads=2, progress=False)
    with Model(out, threads=2) as m:
        assert m.dtype == fmt
        state = None
        for t in PROMPT:
            logits, state = m.eval(t, state)
        seq_logits, _ = m.eval_sequence(PROMPT)
    for got in (logits, seq_logits):
        assert np.abs(got - expected).max() <= BOUNDS[fmt]
        # The activations are quantized to Q8 blocks for the integer dot products as ggml does, so even
        # rwkv.cpp's signed-sum criterion (testdata.md §3) holds.
        assert abs(np.sum(got - expected, dtype=np.float32)) <= 1.05 * abs(RWKV_CPP_E_4V0[fmt])


@pytest.mark.parametrize("stem", ["4v0-660K", "5v1-730K", "5v2-730K", "6v0-3m", "7v0-834K"])
@pytest.mark.parametrize("fmt", ["Q5_0", "Q5_1"])
def test_rwkv_cpp_quantized_files_load(stem: str, fmt: str) -> None:
    expected = np.fromfile(tiny_path(f"expected-logits-{stem}.bin"), dtype="<f4")
    gn_eps = 1e-5 if stem.startswith("5") else None  # rwkv.cpp's v5 value, behind the expected logits
    with Model(tiny_path(f"tiny-rwkv-{stem}-{fmt}.bin"), threads=2, gn_eps=gn_eps) as m:
        logits, _ = m.eval_sequence(PROMPT)
    assert np.abs(logits - expected).max() <= BOUNDS[fmt]


@pytest.fixture(scope="module")
def random_f32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("q") / "v4.bin"
    write_random_model(path, "4", 128, 3, 200, ffn_dim=256, seed=9)
    return path


# Relative to max |logit| of the F32 model; quantization error grows from Q8_0 to Q4_x.
RANDOM_BOUNDS = {"Q8_0": 0.02, "Q5_1": 0.06, "Q5_0": 0.06, "Q4_1": 0.15, "Q4_0": 0.15}


@pytest.mark.parametrize("fmt", list(RANDOM_BOUNDS))
def test_random_model_every_format_close_to_f32(
    random_f32: Path, tmp_path_factory: pytest.TempPathFactory, fmt: str
) -> None:
    tokens = np.random.default_rng(2).integers(0, 200, 16)
    with Model(random_f32, threads=2) as m:
        want, _ = m.eval_sequence(tokens, all_logits=True)
    with Model(model_in_format(random_f32, fmt, tmp_path_factory), threads=2) as m:
        got, _ = m.eval_sequence(tokens, all_logits=True)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= RANDOM_BOUNDS[fmt], f"{fmt}: relative max error {err}"


def test_which_tensors_are_quantized(tmp_path: Path) -> None:
    out = tmp_path / "q.bin"
    quantize(tiny_path("tiny-rwkv-7v0-834K-FP16.bin"), out, "Q8_0", threads=1, progress=False)
    with read_model_file(out) as q, read_model_file(tiny_path("tiny-rwkv-7v0-834K-FP16.bin")) as src:
        assert q.version == 101 and q.data_type == 9
        for name, rec in q.tensors.items():
            quantized = rec.dtype.name == "Q8_0"
            lora = any(f"att.{x}" in name for x in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2", "r_k"))
            expect = len(rec.ne) == 2 and name not in ("emb.weight", "head.weight") and not lora
            assert quantized == expect, name
            if not quantized:
                assert rec.dtype == src.tensors[name].dtype  # F16 stays F16, F32 stays F32


def test_quantize_bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tiny_path("tiny-rwkv-4v0-660K-FP32.bin")
    with pytest.raises(ValueError, match="unknown quantization format"):
        quantize(src, tmp_path / "x.bin", "Q3_K")
    with pytest.raises(ValueError, match="not a quantized format"):
        quantize(src, tmp_path / "x.bin", "F16")
    with pytest.raises(ValueError, match="already quantized"):
        quantize(tiny_path("tiny-rwkv-4v0-660K-Q5_1.bin"), tmp_path / "x.bin", "Q8_0")
    with pytest.raises(rwkv_ggml.ModelIOError):
        quantize(tmp_path / "missing.bin", tmp_path / "x.bin", "Q8_0")
    copy = tmp_path / "copy.bin"
    copy.write_bytes(src.read_bytes())
    with pytest.raises(ValueError, match="is the source"):
        quantize(copy, copy, "Q8_0")
    with pytest.raises(ValueError):
        quantize(src, tmp_path / "x.bin", "Q8_0", threads=0)

    # An interrupted run leaves neither the destination nor a temporary file behind.
    import rwkv_ggml.quantization as qmod

    calls = {"n": 0}
    real = qmod.quantize_matrix

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(qmod, "quantize_matrix", interrupted)
    before = set(tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt):
        quantize(src, tmp_path / "never.bin", "Q8_0", threads=1)
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize("stem", ["4v0-660K", "7v0-834K"])
@pytest.mark.parametrize("head", ["Q8_0", True])
def test_quantized_head(tmp_path: Path, stem: str, head: str | bool) -> None:
    """head= quantizes head.weight too: its blocks are those of quantize_matrix, every other tensor is the
    file rwkv.cpp's rule writes, and the logits stay within the format's bound of the expected ones."""
    from rwkv_ggml.quantization import quantize_matrix

    src = tiny_path(f"tiny-rwkv-{stem}-FP32.bin")
    plain, with_head = tmp_path / "plain.bin", tmp_path / "head.bin"
    quantize(src, plain, "Q5_1", threads=1, progress=False)
    quantize(src, with_head, "Q5_1", threads=1, progress=False, head=head)
    head_fmt = "Q5_1" if head is True else head
    with read_model_file(src) as s, read_model_file(plain) as p, read_model_file(with_head) as h:
        assert h.tensors["head.weight"].dtype.name == head_fmt
        assert p.tensors["head.weight"].dtype.name == "F32"
        blocks = quantize_matrix(np.asarray(s.array("head.weight")), head_fmt)
        assert np.asarray(h.array("head.weight")).tobytes() == blocks.tobytes()
        for name, rec in p.tensors.items():
            if name != "head.weight":
                assert h.tensors[name].dtype == rec.dtype, name
                assert np.array_equal(np.asarray(h.array(name)), np.asarray(p.array(name))), name
    expected = np.fromfile(tiny_path(f"expected-logits-{stem}.bin"), dtype="<f4")
    with Model(with_head, threads=1) as m, Model(plain, threads=1) as mp:
        logits, _ = m.eval_sequence(PROMPT)
        plain_logits, _ = mp.eval_sequence(PROMPT)
    assert np.abs(logits - expected).max() <= BOUNDS["Q5_1"]
    assert not np.array_equal(logits, plain_logits)  # the head really is a different matrix now


def test_quantized_head_bad_inputs(tmp_path: Path) -> None:
    src = tiny_path("tiny-rwkv-4v0-660K-FP32.bin")
    with pytest.raises(ValueError, match="unknown quantization format 'Q9'"):
        quantize(src, tmp_path / "x.bin", "Q8_0", head="Q9")
    with pytest.raises(ValueError, match="head must be a bool or a format name"):
        quantize(src, tmp_path / "x.bin", "Q8_0", head=8)  # type: ignore[arg-type]
    assert not (tmp_path / "x.bin").exists()
