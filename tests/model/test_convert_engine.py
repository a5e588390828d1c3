"""Checkpoints through the converter into the engine: converted models' logits vs the float64 reference.

tests/formats/test_convert.py checks the converted *files* tensor by tensor; this file closes the loop through
rwkv_ggml.Model. For every RWKV version the engine runs, random raw official checkpoints (made by
tests/formats/test_convert.py's helpers: a random model in file layout, inverted to official tensors)
are written
as .pth (torch.save), safetensors in the official layout and safetensors in the Hugging Face layout (for
v7, whose HF models use flash-linear-attention naming, that layout), converted to f32 and f16, loaded,
and run for 20 tokens. The reference is the float64 model of the spec's conversion applied by hand
(``hand_preprocess``) to the raw tensors, with the FP16 file's matrices rounded to float16 exactly as
the file stores them; the bound is the engine's F32 bound, max |Δlogit| <= 1e-4 · max |logit|.

Also here: LoRA merges (engine logits vs the reference of weights merged by hand in numpy) and
state-tuned initial states (``Model.load_initial_state``: ``init_state()`` equals the permuted
``time_state``, and the model runs from it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml import Model, UnsupportedError, arch
from rwkv_ggml.checkpoint import initial_state_from_checkpoint
from rwkv_ggml.conversion import convert, merge_lora
from rwkv_ggml.errors import ModelFormatError
from tests.formats.test_convert import (
    VERSIONS,
    C,
    L,
    V,
    fp16_names,
    hand_preprocess,
    model,
    save_pth,
    save_safetensors,
    to_fla,
    to_hf,
)
from tests.formats.test_convert_lora import lora_checkpoint, merge_by_hand
from tests.reference.rwkv_ref import reference_model

torch = pytest.importorskip("torch")

N_TOKENS = 20
BOUND = 1e-4  # relative to max |logit|: the engine's F32 accuracy target (architecture.md §9.4)


def require_engine(version: str) -> None:
    """Skip unless this build's engine runs ``version`` (versions are being added one by one)."""
    if version not in arch.SUPPORTED_VERSIONS:
        pytest.skip(
            f"RWKV v{version} is not supported by the engine yet "
            f"(arch.SUPPORTED_VERSIONS = {arch.SUPPORTED_VERSIONS})"
        )


def default_gn_eps(weights: Mapping[str, np.ndarray]) -> float | None:
    """The GroupNorm epsilon a Model uses by default for these weights (the reference's own default is
    rwkv.cpp's; None for v4)."""
    return arch.DEFAULT_GN_EPS.get(arch.detect_version(set(weights)))


def tokens(seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, V, size=N_TOKENS).tolist()


def expected_weights(version: str, raw: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """The tensors a correct f32/f16 file of ``raw`` holds, from the spec's rules applied by hand."""
    pre = hand_preprocess(version, raw)
    half = fp16_names(version, list(pre)) if dtype == "f16" else set()
    # f32 first, then f16 for the listed matrices: the converter computes in f32 and rounds once.
    return {
        name: a.astype(np.float32).astype(np.float16) if name in half else a.astype(np.float32)
        for name, a in pre.items()
    }


def assert_engine_matches_reference(
    path: Path,
    weights: Mapping[str, np.ndarray],
    toks: list[int],
    what: str,
    initial: np.ndarray | None = None,
) -> None:
    """Token by token and in sequence mode, the engine's logits within BOUND of the float64 reference."""
    ref = reference_model(weights, L, gn_eps=default_gn_eps(weights))
    ref_state = ref.init_state() if initial is None else initial.astype(np.float64)
    ref_logits = []
    for tok in toks:
        logits, ref_state = ref.eval(tok, ref_state)
        ref_logits.append(logits)
    with Model(path, threads=2) as m:
        if initial is not None:
            assert m.version in ("5.1", "5.1-gated", "5.2", "6", "7")
        state = None if initial is None else initial
        for i, tok in enumerate(toks):
            logits, state = m.eval(tok, state)
            err = float(np.abs(logits - ref_logits[i]).max())
            scale = float(np.abs(ref_logits[i]).max())
            assert err <= BOUND * scale, f"{what}: token {i}: max |Δlogit| = {err:g} (max |logit| {scale:g})"
        all_logits, _ = m.eval_sequence(toks, None if initial is None else initial, all_logits=True)
        assert all_logits is not None
        err = float(np.abs(all_logits - np.stack(ref_logits)).max())
        scale = float(np.abs(np.stack(ref_logits)).max())
        assert err <= BOUND * scale, f"{what}: sequence mode: max |Δlogit| = {err:g} (max |logit| {scale:g})"


# ---------------------------------------------------------------------------------------------
# Conversion


LAYOUTS = ["pth", "safetensors", "hf-safetensors"]


def write_checkpoint(path: Path, version: str, raw: Mapping[str, np.ndarray], layout: str) -> Path:
    if layout == "pth":
        out = path / "model.pth"
        save_pth(out, raw)
    elif layout == "safetensors":
        out = path / "model.safetensors"
        save_safetensors(out, raw)
    else:
        out = path / "hf.safetensors"
        save_safetensors(out, to_fla(raw) if version == "7" else {to_hf(k): v for k, v in raw.items()})
    return out


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_converted_checkpoint_runs_like_the_reference(
    tmp_path: Path, version: str, layout: str, dtype: str
) -> None:
    require_engine(version)
    seed = 100 + VERSIONS.index(version) * 10 + LAYOUTS.index(layout)
    _, raw = model(version, seed=seed)
    src = write_checkpoint(tmp_path, version, raw, layout)
    dst = tmp_path / f"model-{dtype}.bin"
    convert(src, dst, dtype, progress=False)
    with Model(dst, threads=1) as m:
        assert (m.version, m.n_vocab, m.n_embed, m.n_layer) == (version, V, C, L)
        assert m.dtype == dtype.upper()
    assert_engine_matches_reference(
        dst, expected_weights(version, raw, dtype), tokens(seed), f"v{version} {layout} {dtype}"
    )


def test_f16_rounding_is_beyond_the_bound(tmp_path: Path) -> None:
    """Guards the F16 case above: against the reference of the *unrounded* weights the F16 file's
    logits are off by more than BOUND, so that test really checks that the engine computes with
    exactly the stored f16 weights (and the converter rounds exactly those tensors)."""
    version = next(v for v in VERSIONS if v in arch.SUPPORTED_VERSIONS)
    require_engine(version)
    _, raw = model(version, seed=5)
    src = write_checkpoint(tmp_path, version, raw, "pth")
    dst = tmp_path / "m-f16.bin"
    convert(src, dst, "f16", progress=False)
    toks = tokens(5)
    with Model(dst, threads=1) as m:
        got = m.eval_sequence(toks, all_logits=True)[0]
    assert got is not None
    ref = reference_model(expected_weights(version, raw, "f32"), L, gn_eps=arch.DEFAULT_GN_EPS.get(version))
    state = ref.init_state()
    want = []
    for tok in toks:
        logits, state = ref.eval(tok, state)
        want.append(logits)
    err = float(np.abs(got - np.stack(want)).max())
    assert err > BOUND * float(np.abs(np.stack(want)).max()), f"f16 rounding moved the logits by only {err:g}"


# ---------------------------------------------------------------------------------------------
# LoRA merge


@pytest.mark.parametrize("container", ["pth", "safetensors"])
@pytest.mark.parametrize("version", ["5.2", "6"])  # lora_checkpoint targets att.gate + ln_x: gated v5, v6
def test_merged_lora_runs_like_merging_by_hand(tmp_path: Path, version: str, container: str) -> None:
    require_engine(version)
    _, raw = model(version, seed=41)
    lora = lora_checkpoint(raw, rank=4, seed=42)
    save = save_pth if container == "pth" else save_safetensors
    base_path, lora_path = tmp_path / f"base.{container}", tmp_path / f"lora.{container}"
    save(base_path, raw)
    save(lora_path, lora)
    alpha = 8.0
    merged = merge_by_hand(raw, lora, alpha)
    toks = tokens(43)
    for dtype in ("f32", "f16"):
        dst = tmp_path / f"merged-{dtype}.bin"
        merge_lora(base_path, lora_path, dst, alpha=alpha, dtype=dtype, progress=False)
        assert_engine_matches_reference(
            dst, expected_weights(version, merged, dtype), toks, f"v{version} LoRA {container} {dtype}"
        )
    # The LoRA must matter, or the comparison above proves nothing about the merge.
    plain = tmp_path / "plain.bin"
    convert(base_path, plain, "f32", progress=False)
    with Model(plain, threads=1) as a, Model(tmp_path / "merged-f32.bin", threads=1) as b:
        diff = np.abs(a.eval_sequence(toks)[0] - b.eval_sequence(toks)[0]).max()
    assert diff > 1e-2, f"merged model's logits differ from the base model's by only {diff:g}"


# ---------------------------------------------------------------------------------------------
# State-tuned initial states


def time_states(
    version: str, seed: int, n_head: int, head_size: int, n_layer: int = L
) -> dict[str, np.ndarray]:
    """A state-tuning checkpoint: ``blocks.N.att.time_state`` (H, N, N) per layer, as trainers save it."""
    rng = np.random.default_rng(seed)
    return {
        f"blocks.{layer}.att.time_state": rng.standard_normal((n_head, head_size, head_size)).astype(
            np.float32
        )
        * 0.5
        for layer in range(n_layer)
    }


def expected_initial_state(version: str, ts: Mapping[str, np.ndarray]) -> np.ndarray:
    """architecture.md §4.3/§7 by hand: per layer [ffn_x = 0, att_x = 0, S]; official v5/v6 store S as
    [h][value][key] and ours is [h][key][value] (transpose); v7 trainers store ours ([h][value][key])."""
    blocks = []
    for layer in range(len(ts)):
        s = ts[f"blocks.{layer}.att.time_state"]
        S = s if version == "7" else np.transpose(s, (0, 2, 1))
        blocks += [np.zeros(2 * C, dtype=np.float32), S.reshape(-1)]
    return np.concatenate(blocks).astype(np.float32)


STATE_VERSIONS = ["5.2", "6", "7"]


@pytest.mark.parametrize("version", STATE_VERSIONS)
def test_state_checkpoint_gives_the_permuted_time_state(tmp_path: Path, version: str) -> None:
    """The array part (no engine needed): initial_state_from_checkpoint of a .pth and a safetensors file."""
    H, N = 4, C // 4
    ts = time_states(version, 51, H, N)
    want = expected_initial_state(version, ts)
    for path, save in (
        (tmp_path / "state.pth", save_pth),
        (tmp_path / "state.safetensors", save_safetensors),
    ):
        save(path, ts)
        got = initial_state_from_checkpoint(path, version, n_layer=L, n_embed=C)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def converted(tmp_path: Path, version: str, seed: int) -> tuple[Path, dict[str, np.ndarray]]:
    _, raw = model(version, seed=seed)
    src = write_checkpoint(tmp_path, version, raw, "pth")
    dst = tmp_path / "model.bin"
    convert(src, dst, "f32", progress=False)
    return dst, expected_weights(version, raw, "f32")


@pytest.mark.parametrize("version", STATE_VERSIONS)
def test_load_initial_state(tmp_path: Path, version: str) -> None:
    require_engine(version)
    path, weights = converted(tmp_path, version, 61)
    with Model(path, threads=1) as m:
        H, N = m.hparams.n_head, m.hparams.head_size
        zero = m.init_state()
        ts = time_states(version, 62, H, N)
        want = expected_initial_state(version, ts)
        ckpt = tmp_path / "state.pth"
        save_pth(ckpt, ts)
        returned = m.load_initial_state(ckpt)
        np.testing.assert_array_equal(returned, want)
        np.testing.assert_array_equal(m.init_state(), want)
        # init_state hands out copies: changing one does not change the model's initial state
        first = m.init_state()
        first[:] = 7.0
        np.testing.assert_array_equal(m.init_state(), want)
        # state=None starts from the trained state in both eval paths
        tok = 9
        l_none, s_none = m.eval(tok)
        l_want, s_want = m.eval(tok, want)
        np.testing.assert_array_equal(l_none, l_want)
        np.testing.assert_array_equal(s_none, s_want)
        np.testing.assert_array_equal(m.eval_sequence([tok, 3])[0], m.eval_sequence([tok, 3], want)[0])
        # and the trained state really changes the output
        l_zero, _ = m.eval(tok, zero)
        assert np.abs(l_none - l_zero).max() > 1e-3
        m.reset_initial_state()
        np.testing.assert_array_equal(m.init_state(), zero)
        np.testing.assert_array_equal(m.eval(tok)[0], l_zero)
        # a loaded mapping works as well as a path
        np.testing.assert_array_equal(m.load_initial_state(ts), want)
    # the logits from the trained state agree with the reference started from the same state
    assert_engine_matches_reference(path, weights, tokens(63), f"v{version} from time_state", initial=want)


@pytest.mark.parametrize("version", ["6", "7"])
def test_load_initial_state_mismatches(tmp_path: Path, version: str) -> None:
    require_engine(version)
    path, _ = converted(tmp_path, version, 71)
    with Model(path, threads=1) as m:
        H, N = m.hparams.n_head, m.hparams.head_size
        zero = m.init_state()
        cases = {
            "heads": time_states(version, 72, H // 2, N * 2),  # same n_embed, other head size
            "layers": time_states(version, 72, H, N, n_layer=L + 1),
            "width": time_states(version, 72, H + 1, N),
        }
        for what, ts in cases.items():
            ckpt = tmp_path / f"bad-{what}.safetensors"
            save_safetensors(ckpt, ts)
            with pytest.raises(ModelFormatError, match="time_state|layers|heads") as info:
                m.load_initial_state(ckpt)
            assert str(ckpt) in str(info.value) or "state checkpoint" in str(info.value), what
            np.testing.assert_array_equal(m.init_state(), zero)  # a failed load changes nothing
        # a checkpoint without any time_state is not a state checkpoint
        plain = tmp_path / "not-state.safetensors"
        save_safetensors(plain, {"blocks.0.att.something": np.zeros((2, 2), np.float32)})
        with pytest.raises(ModelFormatError, match="time_state"):
            m.load_initial_state(plain)


def test_load_initial_state_refused_for_v4(tmp_path: Path) -> None:
    require_engine("4")
    path, _ = converted(tmp_path, "4", 81)
    ckpt = tmp_path / "state.pth"
    save_pth(ckpt, time_states("6", 82, 4, C // 4))
    with Model(path, threads=1) as m, pytest.raises(UnsupportedError, match="v4"):
        m.load_initial_state(ckpt)
