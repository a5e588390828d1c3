"""Tests of the float64 reference models (tests/reference/) and the random-model generator.

The references are what the C engine is checked against, so they are themselves checked against
three independent things: rwkv.cpp's expected logits for the tiny real models (testdata.md), the
closed forms of the recurrences given in architecture.md (§3.2 naive WKV, §8 masked attention,
the element-wise (V7.10) definition) and exact equivalences between versions (a v6 model whose
LoRAs are zero is a v5.2 model; an official-5.1 model is a v5.2 model with broadcast decay).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml.errors import EngineArgumentError, ModelFormatError, ShapeError, UnsupportedError
from tests.reference.random_models import (
    RANDOM_VERSIONS,
    as_stored,
    random_model_weights,
    stored_as_fp16,
    write_random_model,
)
from tests.reference.rwkv_ref import (
    ReferenceModel,
    detect_version,
    load_weights,
    reference_model,
    wkv4_step,
    wkv5_step,
    wkv7_step,
)

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "rwkv.cpp-tiny"
PROMPT = [34, 105, 110]  # the bytes of '"in' (testdata.md §2)


def _need_testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"tiny test models not found at {TESTDATA.resolve()}")
    return TESTDATA


def _expected_logits(stem: str) -> np.ndarray:
    return np.fromfile(_need_testdata() / f"expected-logits-{stem}.bin", dtype="<f4").astype(np.float64)


def _last_logits(path: Path, gn_eps: float | None = None) -> tuple[np.ndarray, ReferenceModel]:
    weights, n_layer = load_weights(path)
    ref = reference_model(weights, n_layer, gn_eps=gn_eps)
    logits, _ = ref.eval_sequence(PROMPT, ref.init_state())
    return logits[-1], ref


# ---- tiny real models (testdata.md) -----------------------------------------------------------

# stem, version, n_embed, n_layer, n_head, head_size, state floats, argmax, first logit (testdata.md §1-§2)
TINY_FP32 = [
    ("4v0-660K", "4", 128, 4, 0, 0, 2560, 115, -0.88495),
    ("5v1-730K", "5.1", 64, 12, 8, 8, 7680, 112, -4.83053),
    ("5v2-730K", "5.2", 64, 12, 8, 8, 7680, 112, -3.65706),
    ("7v0-834K", "7", 64, 12, 1, 64, 50688, 32, -0.03215),
]


@pytest.mark.parametrize(("stem", "version", "C", "L", "H", "N", "n_state", "argmax", "first"), TINY_FP32)
def test_tiny_fp32_matches_expected_logits(
    stem: str, version: str, C: int, L: int, H: int, N: int, n_state: int, argmax: int, first: float
) -> None:
    logits, ref = _last_logits(_need_testdata() / f"tiny-rwkv-{stem}-FP32.bin")
    expected = _expected_logits(stem)
    assert (ref.version, ref.n_embed, ref.n_layer, ref.n_vocab) == (version, C, L, 256)
    assert (ref.n_head, ref.head_size, ref.state_size) == (H, N, n_state)
    diff = logits - expected
    assert np.abs(diff).max() <= 1e-4, f"{stem}: max |Δlogit| = {np.abs(diff).max():.3g}"
    assert abs(diff.sum()) <= 1.05 * 0.001, f"{stem}: rwkv.cpp's signed-sum bound fails: {diff.sum():.3g}"
    assert int(np.argmax(logits)) == argmax
    assert logits[0] == pytest.approx(first, abs=1e-5)


@pytest.mark.parametrize(("stem", "eps_sum"), [("5v1-730K", 24.5), ("5v2-730K", 76.2)])
def test_gn_eps_option_changes_v5_as_documented(stem: str, eps_sum: float) -> None:
    """architecture.md §9.2: with the official GN eps 64e-5 the Σ of logit differences is +24.5 / +76.2."""
    logits, ref = _last_logits(_need_testdata() / f"tiny-rwkv-{stem}-FP32.bin", gn_eps=64e-5)
    assert ref.gn_eps == 64e-5
    assert (logits - _expected_logits(stem)).sum() == pytest.approx(eps_sum, abs=0.1)


@pytest.mark.parametrize(("fmt", "bound"), [("Q5_0", 0.2), ("Q5_1", 0.2)])
def test_tiny_v6_quantized_within_plain_route_bound(fmt: str, bound: float) -> None:
    """6v0 exists only quantized: dequantize exactly and compare within testdata.md §4's plain-route error."""
    path = _need_testdata() / f"tiny-rwkv-6v0-3m-{fmt}.bin"
    try:
        import tests.reference.quant_ref  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"tests/reference/quant_ref.py is not available to dequantize {path.name}: {exc}")
    logits, ref = _last_logits(path)
    assert (ref.version, ref.n_embed, ref.n_layer, ref.n_head, ref.head_size, ref.state_size) == (
        "6",
        128,
        12,
        16,
        8,
        15360,
    )
    diff = logits - _expected_logits("6v0-3m")
    assert np.abs(diff).max() <= bound, f"6v0 {fmt}: max |Δlogit| = {np.abs(diff).max():.3g}"
    assert int(np.argmax(logits)) == 0


# (C, L, H, N, F, lora ranks) of each tiny model, to regenerate the same tensor set at random.
TINY_SHAPES = {
    "4": ("4v0-660K", "FP32", dict(n_embed=128, n_layer=4, ffn_dim=256)),
    "5.1": ("5v1-730K", "FP32", dict(n_embed=64, n_layer=12, head_size=8, ffn_dim=256)),
    "5.2": ("5v2-730K", "FP32", dict(n_embed=64, n_layer=12, head_size=8, ffn_dim=256)),
    "6": (
        "6v0-3m",
        "Q5_1",
        dict(n_embed=128, n_layer=12, head_size=8, ffn_dim=448, lora_dims={"maa": 32, "decay": 64}),
    ),
    "7": ("7v0-834K", "FP32", dict(n_embed=64, n_layer=12, head_size=64, ffn_dim=256, lora_dims=32)),
}


@pytest.mark.parametrize("version", sorted(TINY_SHAPES))
def test_random_model_has_the_tiny_models_tensors(version: str) -> None:
    """The generator writes exactly the names and shapes rwkv.cpp's converter wrote for the real model."""
    from rwkv_ggml.fileformat import read_model_file

    stem, fmt, dims = TINY_SHAPES[version]
    with read_model_file(_need_testdata() / f"tiny-rwkv-{stem}-{fmt}.bin") as real:
        real_shapes = {name: record.shape for name, record in real.tensors.items()}
    weights = random_model_weights(version, n_vocab=256, seed=0, **dims)
    assert {name: array.shape for name, array in weights.items()} == real_shapes
    assert all(array.dtype == np.float32 for array in weights.values())


@pytest.mark.parametrize("version", ["4", "5.1", "5.2", "7"])
def test_f16_storage_rule_matches_tiny_fp16_files(version: str) -> None:
    """formats.md §4.1 as implemented by as_stored() picks the same FP16 tensors as the shipped FP16 files."""
    from rwkv_ggml.fileformat import DType, read_model_file

    stem, _, dims = TINY_SHAPES[version]
    with read_model_file(_need_testdata() / f"tiny-rwkv-{stem}-FP16.bin") as real:
        real_f16 = {name for name, record in real.tensors.items() if record.dtype == DType.F16}
    stored = as_stored(random_model_weights(version, n_vocab=256, seed=0, **dims), "f16")
    assert {name for name, array in stored.items() if array.dtype == np.float16} == real_f16


# ---- random models: API behaviour ----------------------------------------------------------------

# (n_embed, n_layer, n_vocab, head_size, ffn_dim): a "typical" shape and an odd one (N=16, F not 4C).
SHAPES = [(128, 4, 256, 8, None), (48, 3, 97, 16, 80)]
CASES = [(version, shape) for version in RANDOM_VERSIONS for shape in SHAPES]
CASE_IDS = [f"v{version}-C{shape[0]}-L{shape[1]}-N{shape[3]}" for version, shape in CASES]


def _random_ref(version: str, shape: tuple[int, int, int, int, int | None], seed: int = 7) -> ReferenceModel:
    C, L, V, N, F = shape
    weights = random_model_weights(version, C, L, V, head_size=N, ffn_dim=F, seed=seed)
    return reference_model(weights, L)


@pytest.mark.parametrize(("version", "shape"), CASES, ids=CASE_IDS)
def test_random_init_state_layout(version: str, shape: tuple[int, int, int, int, int | None]) -> None:
    C, L, V, N, _ = shape
    ref = _random_ref(version, shape)
    assert ref.version == version
    assert (ref.n_embed, ref.n_layer, ref.n_vocab) == (C, L, V)
    state = ref.init_state()
    assert state.dtype == np.float64
    if version == "4":
        assert (ref.n_head, ref.head_size) == (0, 0)
        assert ref.state_size == state.size == 5 * C * L
        blocks = state.reshape(L, 5, C)  # ffn_x, att_x, aa, bb, pp
        assert np.all(blocks[:, :4] == 0.0)
        assert np.all(blocks[:, 4] == -1e30)
    else:
        assert (ref.n_head, ref.head_size) == (C // N, N)
        assert ref.state_size == state.size == (2 + N) * C * L
        assert np.all(state == 0.0)


@pytest.mark.parametrize(("version", "shape"), CASES, ids=CASE_IDS)
def test_random_state_round_trip(version: str, shape: tuple[int, int, int, int, int | None]) -> None:
    """eval(a) then eval(b) == eval(b) from the saved state after a; eval never touches its input."""
    ref = _random_ref(version, shape)
    a, b = 3, shape[2] - 1
    state0 = ref.init_state()
    logits_a, state_a = ref.eval(a, state0)
    assert np.array_equal(state0, ref.init_state()), "eval modified the state it was given"
    saved = state_a.copy()
    logits_ab, state_ab = ref.eval(b, state_a)
    assert np.array_equal(state_a, saved), "eval modified the state it was given"
    again_logits, again_state = ref.eval(b, saved)
    assert np.array_equal(again_logits, logits_ab) and np.array_equal(again_state, state_ab)
    # A float32 round trip of the state (what the engine stores) changes the result only at fp32 level.
    f32_logits, _ = ref.eval(b, saved.astype(np.float32))
    assert np.abs(f32_logits - logits_ab).max() <= 1e-4
    seq_logits, seq_state = ref.eval_sequence([a, b], None)
    assert np.array_equal(seq_logits, np.stack([logits_a, logits_ab])) and np.array_equal(seq_state, state_ab)


@pytest.mark.parametrize(("version", "shape"), CASES, ids=CASE_IDS)
def test_random_eval_sequence_equals_serial_loop(
    version: str, shape: tuple[int, int, int, int, int | None]
) -> None:
    ref = _random_ref(version, shape)
    tokens = np.random.default_rng(1).integers(0, ref.n_vocab, size=9).tolist()
    start = ref.eval_sequence(tokens[:2], None)[1]  # a non-initial starting state
    seq_logits, seq_state = ref.eval_sequence(tokens[2:], start)
    state = start
    for t, token in enumerate(tokens[2:]):
        logits, state = ref.eval(token, state)
        assert np.array_equal(logits, seq_logits[t])
    assert seq_logits.shape == (len(tokens) - 2, ref.n_vocab)
    assert np.array_equal(state, seq_state)
    hidden = ref.hidden(tokens[-1], start)
    assert hidden.shape == (ref.n_embed,)
    assert np.allclose(ref.w("head.weight") @ hidden, ref.eval(tokens[-1], start)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("version", "shape"), CASES, ids=CASE_IDS)
def test_random_models_are_non_trivial(version: str, shape: tuple[int, int, int, int, int | None]) -> None:
    """Logits spread O(1..10), history matters, and every part of every layer's state moves."""
    C, L, _, _, _ = shape
    ref = _random_ref(version, shape)
    tokens = np.random.default_rng(2).integers(0, ref.n_vocab, size=12).tolist()
    logits, state = ref.eval_sequence(tokens, None)
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(state))
    spread = logits.std(axis=1)
    assert spread.min() > 0.5 and np.abs(logits).max() < 50.0
    fresh = ref.eval(tokens[-1], None)[0]
    assert np.abs(fresh - logits[-1]).max() > 0.1, "the history does not influence the logits"
    per_layer = state.reshape(L, -1) - ref.init_state().reshape(L, -1)
    pieces = {"ffn_x": slice(0, C), "att_x": slice(C, 2 * C), "rest": slice(2 * C, None)}
    for layer in range(L):
        for label, where in pieces.items():
            assert np.abs(per_layer[layer, where]).max() > 1e-3, f"layer {layer} {label} did not change"


# ---- the recurrences against closed forms ---------------------------------------------------------


def test_wkv4_stable_form_equals_naive_sum() -> None:
    """(V4.4)-(V4.5) reproduce §3.2's exponentially weighted average; extreme k stay finite and bounded."""
    rng = np.random.default_rng(3)
    C, T = 16, 12
    w = -np.exp(rng.uniform(-3, 1.5, C))
    u = rng.uniform(-1, 1, C)
    k = rng.normal(0, 2, (T, C))
    v = rng.normal(0, 1, (T, C))
    aa, bb, pp = np.zeros(C), np.zeros(C), np.full(C, -1e30)
    for t in range(T):
        wkv, aa, bb, pp = wkv4_step(aa, bb, pp, w, u, k[t], v[t])
        past = np.exp((t - 1 - np.arange(t))[:, None] * w + k[:t])  # e^{(t-1-τ)w + k_τ}
        now = np.exp(u + k[t])
        naive = ((past * v[:t]).sum(axis=0) + now * v[t]) / (past.sum(axis=0) + now)
        np.testing.assert_allclose(wkv, naive, rtol=1e-12, atol=1e-12)
    k_big = np.where(rng.random((T, C)) < 0.5, 900.0, -900.0)  # exp(900) overflows float64
    aa, bb, pp = np.zeros(C), np.zeros(C), np.full(C, -1e30)
    for t in range(T):
        with np.errstate(over="raise", invalid="raise"):
            wkv, aa, bb, pp = wkv4_step(aa, bb, pp, w, u, k_big[t], v[t])
        lo, hi = v[: t + 1].min(axis=0), v[: t + 1].max(axis=0)  # a weighted average of the v's seen
        assert np.all(wkv >= lo - 1e-9) and np.all(wkv <= hi + 1e-9)


def test_wkv5_scan_equals_masked_attention_closed_form() -> None:
    """§8's closed form: y_t = Σ_i r_t[i](w_i^t S0[i,:] + Σ_{τ<t} w_i^{t-1-τ} k_τ[i] v_τ + u_i k_t[i] v_t)."""
    rng = np.random.default_rng(4)
    H, N, T = 3, 4, 7
    r, k, v = (rng.normal(0, 1, (T, H, N)) for _ in range(3))
    w = rng.uniform(0.2, 0.99, (H, N))
    u = rng.uniform(-0.5, 1.0, (H, N))
    S0 = rng.normal(0, 1, (H, N, N))
    S = S0
    for t in range(T):
        y, S = wkv5_step(S, r[t], k[t], v[t], w, u)
        expected = np.zeros((H, N))
        for h in range(H):
            for j in range(N):
                total = 0.0
                for i in range(N):
                    inner = w[h, i] ** t * S0[h, i, j] + u[h, i] * k[t, h, i] * v[t, h, j]
                    inner += sum(w[h, i] ** (t - 1 - tau) * k[tau, h, i] * v[tau, h, j] for tau in range(t))
                    total += r[t, h, i] * inner
                expected[h, j] = total
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    closed_S = w[:, :, None] ** T * S0 + sum(
        w[:, :, None] ** (T - 1 - tau) * k[tau][:, :, None] * v[tau][:, None, :] for tau in range(T)
    )
    np.testing.assert_allclose(S, closed_S, rtol=1e-10, atol=1e-10)


def test_wkv7_step_equals_elementwise_definition() -> None:
    """(V7.10)-(V7.11) written element by element, with i = value index and j = key index."""
    rng = np.random.default_rng(5)
    H, N = 2, 5
    S = rng.normal(0, 1, (H, N, N))
    r, k, v, a, b = (rng.normal(0, 1, (H, N)) for _ in range(5))
    decay = rng.uniform(0.55, 1.0, (H, N))
    y, new_S = wkv7_step(S, r, decay, k, v, a, b)
    expected_S = np.zeros_like(S)
    expected_y = np.zeros((H, N))
    for h in range(H):
        for i in range(N):
            sa = sum(S[h, i, j] * a[h, j] for j in range(N))
            for j in range(N):
                expected_S[h, i, j] = S[h, i, j] * decay[h, j] + sa * b[h, j] + v[h, i] * k[h, j]
        for i in range(N):
            expected_y[h, i] = sum(expected_S[h, i, j] * r[h, j] for j in range(N))
    np.testing.assert_allclose(new_S, expected_S, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-12)


# ---- exact equivalences between versions ----------------------------------------------------------


def _compare_models(
    left: dict[str, np.ndarray],
    right: dict[str, np.ndarray],
    n_layer: int,
    atol: float,
    gn_eps: float | None = None,
) -> None:
    """Both weight sets must give the same logits and states over a short sequence."""
    ref_l = reference_model(left, n_layer, gn_eps=gn_eps)
    ref_r = reference_model(right, n_layer, gn_eps=gn_eps)
    tokens = [5, 17, 200, 5, 99, 3]
    logits_l, state_l = ref_l.eval_sequence(tokens, None)
    logits_r, state_r = ref_r.eval_sequence(tokens, None)
    assert np.abs(logits_l - logits_r).max() <= atol
    assert np.abs(state_l - state_r).max() <= atol


def test_official_51_equals_52_with_broadcast_decay() -> None:
    """A gated per-head (official 5.1) model is a 5.2 model whose decay/bonus are equal within each head."""
    C, L, V, N = 64, 3, 256, 8
    gated = random_model_weights("5.1-gated", C, L, V, head_size=N, seed=11)
    as_52 = dict(gated)
    for layer in range(L):
        p = f"blocks.{layer}.att."
        as_52[p + "time_decay"] = np.broadcast_to(gated[p + "time_decay"], (C // N, N, 1)).copy()
        as_52[p + "time_faaaa"] = np.broadcast_to(as_52.pop(p + "time_first"), (C // N, N, 1)).copy()
    assert detect_version(gated) == "5.1-gated" and detect_version(as_52) == "5.2"
    _compare_models(gated, as_52, L, atol=0.0)


def test_v6_with_zero_loras_equals_v52() -> None:
    """With time_maa_w2 = 0 and time_decay_w2 = 0 a v6 block is a v5.2 block.

    The v5.2 mix is μ = 1 - maa (a·μ + s·(1-μ) = a + (s-a)·maa) and the decay exp(-exp(time_decay)).
    """
    C, L, V, N = 64, 3, 256, 8
    v6 = {
        name: array.astype(np.float64)
        for name, array in random_model_weights("6", C, L, V, head_size=N, seed=12).items()
    }
    v52: dict[str, np.ndarray] = {}
    for name, array in v6.items():
        if ".att." not in name and ".ffn.time_maa_" not in name:
            v52[name] = array
    for layer in range(L):
        p = f"blocks.{layer}."
        v6[p + "att.time_maa_w2"][:] = 0.0
        v6[p + "att.time_decay_w2"][:] = 0.0
        for f in ("k", "v", "r", "g"):
            v52[p + "att.time_mix_" + f] = 1.0 - v6[p + "att.time_maa_" + f]
        for f in ("k", "r"):
            v52[p + "ffn.time_mix_" + f] = 1.0 - v6[p + "ffn.time_maa_" + f]
        v52[p + "att.time_decay"] = np.exp(-np.exp(v6[p + "att.time_decay"]))
        for name in (
            "time_faaaa",
            "key.weight",
            "value.weight",
            "receptance.weight",
            "gate.weight",
            "output.weight",
            "ln_x.weight",
            "ln_x.bias",
        ):
            v52[p + "att." + name] = v6[p + "att." + name]
    assert detect_version(v6) == "6" and detect_version(v52) == "5.2"
    _compare_models(v6, v52, L, atol=1e-9, gn_eps=64e-5)


# ---- files written by write_random_model ----------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("version", RANDOM_VERSIONS)
def test_write_random_model_round_trip(tmp_path: Path, version: str, dtype: str) -> None:
    from rwkv_ggml.fileformat import DType, read_model_file

    path = tmp_path / f"random-{version}-{dtype}.bin"
    C, L, V = 32, 2, 64
    stored = write_random_model(path, version, C, L, V, head_size=8, dtype=dtype, seed=21)  # type: ignore[arg-type]
    with read_model_file(path) as model_file:
        assert (model_file.n_vocab, model_file.n_embed, model_file.n_layer) == (V, C, L)
        assert model_file.data_type == (1 if dtype == "f16" else 0)
        assert list(model_file.tensors) == list(stored)
        for name, array in stored.items():
            from_file = model_file.array(name)
            want_f16 = dtype == "f16" and stored_as_fp16(name, array)
            assert model_file.tensors[name].dtype == (DType.F16 if want_f16 else DType.F32), name
            assert from_file.dtype == array.dtype and np.array_equal(from_file, array), name
    weights, n_layer = load_weights(path)
    ref_file, ref_stored = reference_model(weights, n_layer), reference_model(stored, L)
    assert ref_file.version == version
    logits_file = ref_file.eval_sequence([1, 2, 3], None)[0]
    assert np.array_equal(logits_file, ref_stored.eval_sequence([1, 2, 3], None)[0])
    if dtype == "f16":  # narrowing the matrices to f16 moves logits only slightly (formats.md §4.1)
        ref_f32 = reference_model(random_model_weights(version, C, L, V, head_size=8, seed=21), L)
        delta = np.abs(ref_f32.eval_sequence([1, 2, 3], None)[0] - logits_file).max()
        assert 0.0 < delta < 0.1


# ---- bad input gives the specific exception ------------------------------------------------------


def test_bad_inputs_raise_clear_errors() -> None:
    weights = random_model_weights("5.2", 32, 2, 50, head_size=8, seed=1)
    ref = reference_model(weights, 2)
    with pytest.raises(EngineArgumentError, match="out of range"):
        ref.eval(50, None)
    with pytest.raises(EngineArgumentError, match="out of range"):
        ref.eval(-1, None)
    with pytest.raises(ShapeError, match=str(ref.state_size)):
        ref.eval(0, np.zeros(ref.state_size - 1))
    with pytest.raises(ModelFormatError, match="blocks.2.ln1.weight"):
        reference_model(weights, 3)
    with pytest.raises(ModelFormatError, match="blocks.1.att.gate.weight"):
        reference_model({k: v for k, v in weights.items() if k != "blocks.1.att.gate.weight"}, 2)
    bad_shape = dict(weights, **{"blocks.1.att.key.weight": np.zeros((32, 16), np.float32)})
    with pytest.raises(ModelFormatError, match=r"blocks\.1\.att\.key\.weight.*\(32, 16\)"):
        reference_model(bad_shape, 2)
    no_gate = {k: v for k, v in weights.items() if ".gate." not in k and "time_mix_g" not in k}
    with pytest.raises(UnsupportedError, match="time_faaaa"):
        reference_model(no_gate, 2)
    with pytest.raises(UnsupportedError, match="unknown RWKV version"):
        random_model_weights("8", 32, 2, 50, seed=1)
    assert math.isclose(reference_model(weights, 2, gn_eps=3e-4).gn_eps, 3e-4)
