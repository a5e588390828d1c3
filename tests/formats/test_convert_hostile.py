"""The converter on hostile or unusual checkpoints: layer numbers from names, empty tensors, and
official RWKV-5.1 files whose per-head bonus is named ``time_faaaa``.

Layer numbers are read out of tensor names, so a name like ``blocks.300000000.ln1.weight`` must
not size anything; the cases that would exhaust memory if they regressed run in a child process
whose address space is capped (see ``run_child``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml.arch import detect_version
from rwkv_ggml.checkpoint import initial_state_from_checkpoint
from rwkv_ggml.conversion import convert, convert_state_dict, plan_conversion
from rwkv_ggml.errors import ModelFormatError
from rwkv_ggml.fileformat import read_model_file
from tests.formats.test_checkpoint_hostile import run_child
from tests.formats.test_convert import C, H, model, save_safetensors

pytest.importorskip("torch")
pytest.importorskip("safetensors.torch")

HUGE_INDICES = ["300000000", "9" * 30, "9" * 5000]


@pytest.mark.parametrize("index", HUGE_INDICES, ids=["9-digits", "30-digits", "5000-digits"])
def test_huge_layer_index_is_a_format_error_naming_file_and_tensor(tmp_path: Path, index: str) -> None:
    _, raw = model("4")
    raw[f"blocks.{index}.ln1.weight"] = np.ones(C, dtype=np.float32)
    src = tmp_path / "m.safetensors"
    save_safetensors(src, raw)
    # In a child capped at 3 GiB: the regression (list(range(300000001))) fails there, not here.
    out = run_child(
        "from rwkv_ggml.conversion import convert\n"
        "from rwkv_ggml.errors import ModelFormatError\n"
        "try:\n"
        f"    convert({str(src)!r}, {str(tmp_path / 'out.bin')!r}, 'f32', progress=False)\n"
        "    print('converted')\n"
        "except ModelFormatError as e:\n"
        "    print('refused:', e)\n",
        address_space_gib=3,
    )
    assert out.startswith(f"refused: {src}: tensor 'blocks.{index[:40]}"), out[:300]
    assert "layer index" in out and len(out) < 1000
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("index", HUGE_INDICES, ids=["9-digits", "30-digits", "5000-digits"])
def test_huge_layer_index_in_a_state_checkpoint(tmp_path: Path, index: str) -> None:
    src = tmp_path / "state.safetensors"
    states = {f"blocks.{i}.att.time_state": np.zeros((H, C // H, C // H), np.float32) for i in ("0", index)}
    save_safetensors(src, states)
    out = run_child(
        "from rwkv_ggml.checkpoint import initial_state_from_checkpoint\n"
        "from rwkv_ggml.errors import ModelFormatError\n"
        "try:\n"
        f"    initial_state_from_checkpoint({str(src)!r}, '6')\n"
        "    print('read')\n"
        "except ModelFormatError as e:\n"
        "    print('refused:', e)\n",
        address_space_gib=3,
    )
    assert out.startswith(f"refused: {src}: "), out[:300]
    assert len(out) < 1000


def test_layer_gaps_in_a_state_checkpoint_are_listed_boundedly() -> None:
    states = {f"blocks.{i}.att.time_state": np.zeros((2, 3, 3), np.float32) for i in (0, 5000)}
    with pytest.raises(ModelFormatError, match=r"missing \[1, 2, .*21\]\)$"):
        initial_state_from_checkpoint(states, "6")


def test_layer_index_beyond_the_tensor_count_in_a_state_dict() -> None:
    _, raw = model("4")
    raw["blocks.100.ln1.weight"] = np.ones(C, dtype=np.float32)  # 43 tensors: 100 layers impossible
    with pytest.raises(ModelFormatError, match=r"tensor 'blocks\.100\.ln1\.weight' has layer index 100"):
        plan_conversion(raw)


def test_empty_model_tensor_is_a_format_error(tmp_path: Path) -> None:
    _, raw = model("4")
    raw["blocks.0.att.key.weight"] = np.zeros((0, C), dtype=np.float32)
    src = tmp_path / "m.safetensors"
    save_safetensors(src, raw)
    with pytest.raises(
        ModelFormatError, match=rf"^{re.escape(str(src))}: tensor 'blocks\.0\.att\.key\.weight'"
    ):
        convert(src, tmp_path / "out.bin", "f32", progress=False)
    assert not (tmp_path / "out.bin").exists()


def test_plan_errors_name_the_checkpoint_file(tmp_path: Path) -> None:
    _, raw = model("4")
    del raw["head.weight"]
    src = tmp_path / "m.safetensors"
    save_safetensors(src, raw)
    with pytest.raises(
        ModelFormatError, match=rf"^{re.escape(str(src))}: checkpoint lacks the tensor 'head\.weight'"
    ):
        convert(src, tmp_path / "out.bin", "f32", progress=False)


# ---------------------------------------------------------------------------------------------
# Official 5.1 with a per-head bonus named time_faaaa (architecture.md §1.2, §1.3)


def official_5_1_with_time_faaaa() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The same official 5.1 model twice: bonus as ``time_first`` (raw, exp'd on conversion) and as
    a 1-D ``time_faaaa`` holding the bonus itself, as some official 5.1 releases store it."""
    _, with_first = model("5.1-gated")
    with_faaaa = {}
    for name, value in with_first.items():
        if name.endswith(".att.time_first"):
            with_faaaa[name.replace("time_first", "time_faaaa")] = np.exp(value)
        else:
            with_faaaa[name] = value
    return with_first, with_faaaa


def test_official_5_1_with_time_faaaa_is_labelled_5_1(tmp_path: Path) -> None:
    with_first, with_faaaa = official_5_1_with_time_faaaa()
    assert with_faaaa["blocks.0.att.time_faaaa"].shape == (H,)
    plan = plan_conversion(with_faaaa)
    assert (plan.version, plan.n_head) == ("5.1-gated", H)
    # Same file as the time_first spelling, element for element: the numbers were already right.
    want = dict(convert_state_dict(with_first))
    got = dict(convert_state_dict(with_faaaa))
    assert list(got) == list(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    # And the written file reads back as 5.1-gated, not 5.2.
    src, dst = tmp_path / "m.safetensors", tmp_path / "m.bin"
    save_safetensors(src, with_faaaa)
    convert(src, dst, "f16", progress=False)
    with read_model_file(dst) as mf:
        assert detect_version(mf.tensors) == "5.1-gated"


def test_5_2_keeps_its_label_and_time_faaaa() -> None:
    """Per-channel decay or bonus is 5.2, as before (the refinement only concerns per-head files)."""
    _, raw = model("5.2")
    plan = plan_conversion(raw)
    assert plan.version == "5.2" and "blocks.0.att.time_faaaa" in plan.names


def test_both_bonus_names_in_one_layer_is_an_error() -> None:
    with_first, with_faaaa = official_5_1_with_time_faaaa()
    with_faaaa["blocks.1.att.time_first"] = with_first["blocks.1.att.time_first"]
    with pytest.raises(ModelFormatError, match="both att.time_first and att.time_faaaa"):
        plan_conversion(with_faaaa)
