"""The model description: the one state layout (rwkv_ggml.layout), per-layer weight access and derived
weights (rwkv_ggml.arch), and the direction of the imports between the model and text layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rwkv_ggml
from rwkv_ggml import api, arch, layout, model, model_graphs
from rwkv_ggml.layout import SUPPORTED_VERSIONS, state_layout
from tests.reference.random_models import write_random_model


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_state_layout_is_architecture_md_section_7(version: str) -> None:
    """Per layer ffn_x (C), att_x (C), then aa, bb, pp (v4, 3 x C) or H matrices N x N (v5+), in order."""
    C, L, N = 24, 3, 8
    lay = state_layout(version, L, C, N)
    recurrent = 3 * C if version == "4" else N * C
    assert lay.size == (2 * C + recurrent) * L
    for i in range(L):
        slots = lay.layer(i)
        base = i * (2 * C + recurrent)
        assert (slots.ffn_x, slots.att_x, slots.recurrent, slots.recurrent_size) == (
            base,
            base + C,
            base + 2 * C,
            recurrent,
        )
    fresh = lay.fresh()
    assert fresh.dtype == np.float32 and fresh.shape == (lay.size,)
    if version == "4":  # pp = -1e30 (architecture.md §3.4), everything else zero
        want = np.zeros(lay.size, dtype=np.float32)
        for i in range(L):
            want[i * 5 * C + 4 * C : (i + 1) * 5 * C] = -1e30
        np.testing.assert_array_equal(fresh, want)
    else:
        assert not fresh.any()


def test_model_uses_the_layout(tmp_path: Path) -> None:
    for version in ("4", "5.2", "7"):
        path = tmp_path / f"{version}.bin"
        write_random_model(path, version, 32, 2, 20, head_size=8, ffn_dim=64, seed=3)
        with model.Model(path, threads=1) as m:
            lay = m.hparams.layout
            assert lay == state_layout(version, 2, 32, 8 if version != "4" else 0)
            assert m.state_size == lay.size
            np.testing.assert_array_equal(m.init_state(), lay.fresh())


def test_layers_give_prefixed_weights_and_state_slots() -> None:
    hp = arch.Hyper(version="5.2", n_vocab=10, n_embed=16, n_layer=2, ffn_dim=32, n_head=2, head_size=8)
    weights = {
        f"blocks.{i}.{n}": f"{i}:{n}"
        for i in range(2)
        for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.key.weight", "ffn.key.weight")
    }
    layers = hp.layers(weights)
    assert [layer.index for layer in layers] == [0, 1]
    assert (
        layers[1].att["key.weight"] == "1:att.key.weight"
        and layers[1].ffn["key.weight"] == "1:ffn.key.weight"
    )
    assert layers[0].ln1 == ("0:ln1.weight", "0:ln1.bias") and layers[1].ln2 == ("1:ln2.weight", "1:ln2.bias")
    assert "key.weight" in layers[0].att and "gate.weight" not in layers[0].att
    assert layers[1].state == hp.layout.layer(1)


def test_derived_weights_from_the_stored_arrays() -> None:
    rng = np.random.default_rng(0)
    C = 8
    stored = {
        f"blocks.0.{n}": rng.standard_normal(C).astype(np.float32)
        for n in (
            "att.time_mix_r",
            "att.time_mix_k",
            "att.time_mix_v",
            "att.time_mix_g",
            "ffn.time_mix_k",
            "ffn.time_mix_r",
        )
    }
    for version, planes in (("5.1", "rkv"), ("5.2", "rkvg")):
        hp = arch.Hyper(version=version, n_vocab=10, n_embed=C, n_layer=1, ffn_dim=16, n_head=1, head_size=C)
        derived = arch.derived_weights(hp, stored.__getitem__)
        assert set(derived) == {"blocks.0." + arch.ATT_MIX, "blocks.0." + arch.FFN_MIX}
        att = derived["blocks.0." + arch.ATT_MIX]
        assert att.shape == (len(planes), 1, C) and att.flags.c_contiguous
        for i, f in enumerate(planes):
            np.testing.assert_array_equal(att[i, 0], stored[f"blocks.0.att.time_mix_{f}"])
        ffn = derived["blocks.0." + arch.FFN_MIX]
        np.testing.assert_array_equal(
            ffn[:, 0], np.stack([stored["blocks.0.ffn.time_mix_k"], stored["blocks.0.ffn.time_mix_r"]])
        )
    k_a = rng.standard_normal((C, 1, 1)).astype(np.float32)
    hp7 = arch.Hyper(version="7", n_vocab=10, n_embed=C, n_layer=1, ffn_dim=16, n_head=1, head_size=C)
    derived = arch.derived_weights(hp7, {"blocks.0.att.k_a": k_a}.__getitem__)
    np.testing.assert_array_equal(derived["blocks.0." + arch.ONE_MINUS_K_A], 1.0 - k_a.reshape(-1))


def test_version_lists_agree() -> None:
    from rwkv_ggml import state

    assert arch.SUPPORTED_VERSIONS == layout.SUPPORTED_VERSIONS == state.SUPPORTED_VERSIONS
    assert set(model_graphs._GRAPH_BUILDERS) == {layout.family(v) for v in SUPPORTED_VERSIONS}


def test_public_model_is_the_core_model_with_text_methods() -> None:
    assert rwkv_ggml.Model is api.Model and issubclass(api.Model, model.Model)
    for name in ("generate", "complete", "embed", "chat_session"):
        assert hasattr(api.Model, name) and not hasattr(model.Model, name)


def test_the_model_layer_does_not_import_the_text_layer() -> None:
    """Importing the core model (and so the graphs, weights, state, checkpoint) loads no text module."""
    code = (
        "import sys, rwkv_ggml.model, rwkv_ggml.state; "
        "print(sorted(m for m in sys.modules if m.startswith('rwkv_ggml')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for upper in (
        "rwkv_ggml.api",
        "rwkv_ggml.generation",
        "rwkv_ggml.tokenizer",
        "rwkv_ggml.sampling",
        "rwkv_ggml.cli",
        "rwkv_ggml.conversion",
    ):
        assert f"'{upper}'" not in out
