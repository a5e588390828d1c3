"""The fuzzing harness itself (fuzz/): what it counts as a finding, and that the driver reports one.

The driver tests plant targets (the ``planted_*`` functions of tests/fuzzing/planted.py, passed as
``file.py:function``) that misbehave in each way the harness must catch: an untyped exception, a
crash of the process, a hang and a memory blow-up; and one that only ever refuses its input the
documented way, which must not be reported. Those tests need atheris (skipped without it); the rest
need only the library.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, tiny_path

from fuzz import corpus, harness, targets
from rwkv_ggml.errors import ModelFormatError, OutOfMemoryError

RUN = REPO_ROOT / "fuzz" / "run.py"
PLANTED = REPO_ROOT / "tests" / "fuzzing" / "planted.py"


# --- classification ---------------------------------------------------------------------------


def planted_key_error(data: bytes) -> None:
    raise KeyError("planted")


def planted_refusal(data: bytes) -> None:
    raise ModelFormatError("planted: bad input refused the documented way")


def test_typed_refusal_is_expected() -> None:
    assert harness.check(planted_refusal, b"") is None


def test_untyped_exception_is_a_finding() -> None:
    finding = harness.check(planted_key_error, b"")
    assert finding is not None
    assert finding.kind == "KeyError"
    assert "planted_key_error" in finding.signature
    assert "KeyError: 'planted'" in finding.detail


def test_memory_error_is_a_finding_even_when_typed() -> None:
    def typed_oom(data: bytes) -> None:
        raise OutOfMemoryError("a few bytes of input should never need this")

    finding = harness.check(typed_oom, b"")
    assert finding is not None and finding.kind == "rwkv_ggml.errors.OutOfMemoryError"


def test_signature_points_into_the_library() -> None:
    def through_library(data: bytes) -> None:
        from rwkv_ggml.fileformat import DType

        DType.from_name(123)  # type: ignore[arg-type]  # AttributeError inside rwkv_ggml

    finding = harness.check(through_library, b"")
    if finding is None:  # the library may refuse it with a typed error one day: nothing to check then
        return
    assert "fileformat.py" in finding.signature


def test_state_checksum_is_fixed_up(tmp_path: pathlib.Path, seeds: pathlib.Path) -> None:
    """The state target corrects the checksum, so a mutated payload loads instead of stopping there."""
    from rwkv_ggml.state import State

    data = bytearray(next(iter(sorted((seeds / "state").iterdir()))).read_bytes())
    data[-1] ^= 0x40
    (tmp_path / "as-is.state").write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="checksum"):
        State.load(tmp_path / "as-is.state")
    (tmp_path / "fixed.state").write_bytes(targets.with_state_checksum(bytes(data)))
    State.load(tmp_path / "fixed.state")


# --- targets on seeds and on garbage --------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The seed corpus, built once for this module (skipped without the tiny models)."""
    tiny_path("tiny-rwkv-4v0-660K-FP32.bin")
    out = tmp_path_factory.mktemp("corpus")
    corpus.build(out)
    return out


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_each_target_accepts_its_seeds(seeds: pathlib.Path, name: str) -> None:
    files = sorted((seeds / name).iterdir())
    if name == "pth" and not files:
        pytest.skip("no torch, so no .pth seeds")
    assert files
    for path in files:
        finding = harness.check(targets.TARGETS[name], path.read_bytes())
        assert finding is None, f"{path.name}: {finding.detail if finding else ''}"


def test_seeds_are_complete_models(seeds: pathlib.Path) -> None:
    """Shrunk seeds still load (a seed refused at the first check would leave the loader unexplored)."""
    from rwkv_ggml import Model

    for path in sorted((seeds / "bin").iterdir()):
        with Model(path, threads=1) as model:
            assert (model.n_layer, model.n_vocab) == (1, 8)
            logits, _ = model.eval(3)
            assert logits is not None and logits.shape == (8,)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
@pytest.mark.parametrize("data", [b"", b"\0" * 200, bytes(range(256)) * 3], ids=["empty", "zeros", "ramp"])
def test_garbage_is_refused_with_a_typed_error(name: str, data: bytes) -> None:
    if name == "state":
        tiny_path(corpus.STATE_MODEL)
    with pytest.raises(ModelFormatError):
        targets.TARGETS[name](data)


# --- the driver ---------------------------------------------------------------------------------


def run_driver(tmp_path: pathlib.Path, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("atheris")
    command = [sys.executable, str(RUN), "--target", target, "--work", str(tmp_path / "work"), *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def saved_inputs(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    return sorted((tmp_path / "work" / "findings").iterdir())


def test_driver_reports_a_planted_exception(tmp_path: pathlib.Path) -> None:
    result = run_driver(tmp_path, f"{PLANTED}:planted_key_error", "--seconds", "30")
    assert result.returncode == 1, result.stdout + result.stderr
    saved = [p for p in saved_inputs(tmp_path) if p.suffix == ".input"]
    assert saved, result.stdout
    assert str(saved[0]) in result.stdout
    assert "KeyError" in saved[0].with_suffix(".txt").read_text()
    replay = subprocess.run(
        [sys.executable, str(RUN), "--target", f"{PLANTED}:planted_key_error", "--replay", str(saved[0])],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        timeout=120,
        check=False,
    )
    assert replay.returncode == 1 and "FINDING KeyError" in replay.stdout, replay.stdout + replay.stderr


def test_driver_passes_a_target_that_only_refuses(tmp_path: pathlib.Path) -> None:
    result = run_driver(tmp_path, f"{PLANTED}:planted_refusal", "--seconds", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no findings" in result.stdout
    assert not saved_inputs(tmp_path)


@pytest.mark.parametrize(
    ("planted", "artifact"), [("planted_segfault", "crash-"), ("planted_hang", "timeout-")]
)
def test_driver_reports_a_crash_or_hang(tmp_path: pathlib.Path, planted: str, artifact: str) -> None:
    result = run_driver(tmp_path, f"{PLANTED}:{planted}", "--seconds", "60", "--timeout", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(artifact in p.name for p in saved_inputs(tmp_path)), result.stdout + result.stderr[-3000:]


def test_driver_reports_a_memory_blow_up(tmp_path: pathlib.Path) -> None:
    result = run_driver(tmp_path, f"{PLANTED}:planted_blow_up", "--seconds", "30")
    assert result.returncode == 1, result.stdout + result.stderr
    texts = [p.read_text() for p in saved_inputs(tmp_path) if p.suffix == ".txt"]
    assert any("MemoryError" in t for t in texts), result.stdout + result.stderr[-3000:]


# --- structure-aware mutators ----------------------------------------------------------------------


def test_bin_mutator_keeps_the_container_well_formed(seeds: pathlib.Path) -> None:
    from fuzz import mutators

    data = (seeds / "bin" / "shrunk-tiny-rwkv-5v2-730K-Q5_1.bin").read_bytes()
    assert mutators.serialize(*mutators.parse(data) or ([], [])) == data
    outputs = [mutators.mutate_bin(data, 1 << 22, seed) for seed in range(200)]
    assert sum(out != data for out in outputs) > 120  # a quarter go to the byte-level fallback
    # Most mutations change the model, not the container: they still parse record by record.
    assert sum(mutators.parse(out) is not None for out in outputs) > 100


def test_safetensors_mutator_keeps_a_json_header(seeds: pathlib.Path) -> None:
    import json

    from fuzz import mutators

    data = next(iter(sorted((seeds / "safetensors").iterdir()))).read_bytes()
    changed = 0
    for seed in range(100):
        out = mutators.mutate_safetensors(data, 1 << 22, seed)
        if (out != data and out[:8] != data[:8]) or out[8:] != data[8:]:
            changed += 1
            length = int.from_bytes(out[:8], "little")
            assert isinstance(json.loads(out[8 : 8 + length]), dict)
    assert changed > 50
