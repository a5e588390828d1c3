"""RWKV-4 end to end: the tiny rwkv.cpp models against their expected logits, random-weight models
against the float64 reference of tests/reference, state handling, threads, and the Python API rules."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import rwkv_ggml
from rwkv_ggml import Model
from tests.conftest import tiny_path
from tests.reference.random_models import write_random_model
from tests.reference.rwkv_ref import reference_model

PROMPT = [34, 105, 110]  # '"in', the tokens behind expected-logits-*.bin (testdata.md §2)
PLACEMENTS = ["hugepage", "mmap"]


def run_tokens(model: Model, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
    state = None
    logits = None
    for t in tokens:
        logits, state = model.eval(t, state)
    assert logits is not None and state is not None
    return logits, state


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("fmt, bound", [("FP32", 1e-4), ("FP16", 0.02)])
def test_tiny_v4_matches_expected_logits(fmt: str, bound: float, placement: str) -> None:
    expected = np.fromfile(tiny_path("expected-logits-4v0-660K.bin"), dtype="<f4")
    with Model(tiny_path(f"tiny-rwkv-4v0-660K-{fmt}.bin"), threads=2, placement=placement) as m:
        assert (m.version, m.n_vocab, m.n_embed, m.n_layer, m.state_size) == ("4", 256, 128, 4, 2560)
        assert m.dtype == ("F32" if fmt == "FP32" else "F16")
        logits, _ = run_tokens(m, PROMPT)
    err = np.abs(logits - expected).max()
    assert err <= bound, f"max |logit - expected| = {err}"
    if fmt == "FP32":
        # rwkv.cpp's own criterion too (testdata.md §3), on top of the element-wise one
        assert abs(np.sum(logits - expected, dtype=np.float32)) <= 1.05 * 0.001
    assert int(np.argmax(logits)) == 115


SHAPES = [(32, 2, 50, 64), (96, 3, 300, 160), (128, 4, 1000, 512)]


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"C{s[0]}-L{s[1]}-V{s[2]}")
def random_v4(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    C, L, V, F = request.param
    out: dict[str, object] = {"shape": request.param}
    for dtype in ("f32", "f16"):
        path = tmp_path_factory.mktemp("v4") / f"random-{dtype}.bin"
        stored = write_random_model(path, "4", C, L, V, ffn_dim=F, dtype=dtype, seed=C + L)
        out[dtype] = (path, reference_model(stored, L))
    return out


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_random_v4_matches_reference_over_many_tokens(random_v4: dict[str, object], dtype: str) -> None:
    path, ref = random_v4[dtype]  # type: ignore[misc]
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, ref.n_vocab, size=24).tolist()
    ref_state = ref.init_state()
    with Model(path, threads=2) as m:
        state = m.init_state()
        np.testing.assert_array_equal(state, ref_state.astype(np.float32))
        for i, t in enumerate(tokens):
            logits, state = m.eval(t, state)
            ref_logits, ref_state = ref.eval(t, ref_state)
            # The reference uses the weights exactly as stored (f16 matrices included), so both formats
            # are held to the F32 bound: our kernels widen f16 weights and keep activations in f32.
            err = np.abs(logits - ref_logits).max()
            assert err <= 1e-4 * np.abs(ref_logits).max(), f"token {i}: max error {err}"
        np.testing.assert_allclose(
            state, ref_state, rtol=1e-4, atol=1e-4 * np.abs(ref_state[ref_state > -1e29]).max()
        )


def test_ffn_matters_in_random_models(random_v4: dict[str, object]) -> None:
    """Guards the test above: the random models' channel mix is not negligible (unlike tiny 4v0's)."""
    path, ref = random_v4["f32"]  # type: ignore[misc]
    with Model(path, threads=1) as m:
        logits, _ = m.eval(3)
        stored = {n: m._store.raw(n).astype(np.float32) for n in m._store._mf.tensors}
    for name in list(stored):
        if ".ffn.value.weight" in name:
            stored[name] = np.zeros_like(stored[name])
    no_ffn, _ = reference_model(stored, ref.n_layer).eval(3, None)
    assert np.abs(logits - no_ffn).max() > 0.1


@pytest.fixture(scope="module")
def small_model_path(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("small") / "v4.bin"
    write_random_model(path, "4", 64, 3, 120, ffn_dim=160, seed=7)
    return path


def test_state_round_trip_and_no_mutation(small_model_path) -> None:
    with Model(small_model_path, threads=2) as m:
        s0 = m.init_state()
        s0_copy = s0.copy()
        _, sa = m.eval(5, s0)
        np.testing.assert_array_equal(s0, s0_copy)  # the caller's state is never modified
        la, sab = m.eval(9, sa)
        saved = sa.copy()
        lb, sab2 = m.eval(9, saved)  # eval(b) from the saved state after a
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(sab, sab2)
        # None means a fresh state
        l1, s1 = m.eval(5)
        l2, s2 = m.eval(5, m.init_state())
        np.testing.assert_array_equal(l1, l2)
        np.testing.assert_array_equal(s1, s2)


def test_init_state_documented_values(small_model_path) -> None:
    with Model(small_model_path) as m:
        s = m.init_state().reshape(m.n_layer, 5, m.n_embed)
        assert s.dtype == np.float32
        assert np.all(s[:, :4] == 0)  # ffn_x, att_x, aa, bb
        assert np.all(s[:, 4] == np.float32(-1e30))  # pp


def test_output_buffers_and_in_place_state(small_model_path) -> None:
    with Model(small_model_path, threads=2) as m:
        ref_logits, ref_state = m.eval(7, m.eval(3)[1])
        state = m.eval(3)[1]
        logits_out = np.empty(m.n_vocab, dtype=np.float32)
        got_logits, got_state = m.eval(7, state, state_out=state, logits_out=logits_out)
        assert got_state is state and got_logits is logits_out
        np.testing.assert_array_equal(state, ref_state)
        np.testing.assert_array_equal(logits_out, ref_logits)
        state = m.eval(3)[1]
        m.eval(7, state, state_out=state, compute_logits=False)  # in place, state-only prefix
        np.testing.assert_array_equal(state, ref_state)


def test_skipping_logits_gives_the_same_state(small_model_path) -> None:
    with Model(small_model_path, threads=2) as m:
        s_with = s_without = None
        for t in [1, 2, 3, 4, 5, 6]:
            _, s_with = m.eval(t, s_with)
            logits, s_without = m.eval(t, s_without, compute_logits=False)
            assert logits is None
        np.testing.assert_array_equal(s_with, s_without)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_thread_counts_give_bit_identical_results(small_model_path, placement: str) -> None:
    results = []
    for threads in (1, 2, 4):
        with Model(small_model_path, threads=threads, placement=placement) as m:
            results.append(run_tokens(m, [4, 8, 15, 16, 23, 42]))
    for logits, state in results[1:]:
        np.testing.assert_array_equal(logits, results[0][0])
        np.testing.assert_array_equal(state, results[0][1])


def test_bad_arguments_raise_value_errors(small_model_path) -> None:
    with Model(small_model_path) as m:
        bad_tokens = [-1, m.n_vocab, 10**12, 1.5, "a", True, None]
        for tok in bad_tokens:
            with pytest.raises(ValueError):
                m.eval(tok)  # type: ignore[arg-type]
        good = m.init_state()
        bad_states = [
            good.astype(np.float64),
            good[:-1],
            good.reshape(5 * m.n_layer, -1),
            good[::2].copy(),
            np.concatenate([good, good])[::2],
            list(good),
        ]
        for s in bad_states:
            with pytest.raises(ValueError):
                m.eval(1, s)  # type: ignore[arg-type]
        ro = good.copy()
        ro.flags.writeable = False
        m.eval(1, ro)  # a read-only input state is fine ...
        with pytest.raises(ValueError, match="read-only"):
            m.eval(1, good, state_out=ro)  # ... as an output it is not
        with pytest.raises(ValueError):
            m.eval(1, good, logits_out=np.empty(3, dtype=np.float32))
    with pytest.raises(ValueError, match="closed"):
        m.eval(1)
    with pytest.raises(rwkv_ggml.ClosedError):
        m.init_state()
    with pytest.raises(ValueError):
        Model(small_model_path, threads=0)
    with pytest.raises(ValueError):
        Model(small_model_path, placement="somewhere")


def test_one_model_many_python_threads(small_model_path) -> None:
    """Threading rule: one Model shared by Python threads, each with its own state, is safe (evals are
    serialised by the model) and gives the same results as running the sequences one after another."""
    sequences = [[(7 * i + j) % 120 for j in range(12)] for i in range(6)]
    with Model(small_model_path, threads=2) as m:
        expected = [run_tokens(m, seq) for seq in sequences]
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                results[i] = run_tokens(m, sequences[i])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(sequences))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for i, (logits, state) in enumerate(expected):
        np.testing.assert_array_equal(results[i][0], logits)
        np.testing.assert_array_equal(results[i][1], state)
