"""Sequence mode ("GPT mode"): eval_sequence equals feeding the tokens one by one, whatever the chunking,
for every format; perplexity; argument errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml import Model
from tests.conftest import tiny_path
from tests.model.formats import FORMATS, model_in_format

SERIAL_BOUND = 1e-4  # relative to the largest |value|: F32 sums in a different order in mat-mat kernels
# Block-quantized weights: the activations are re-quantized to int8 per 32-block before every product,
# so a last-bit difference from the mat-mat kernels' summation order can flip one activation code,
# which moves what follows by about d_x |w| (d_x = a block's largest activation / 127): up to ~1e-2 of
# the largest value in the tiny models, where one code is a large share of a layer. Kernel arithmetic
# itself is checked against an emulation to rounding in tests/engine/test_quant_engine.py.
FLIP_BOUND = 2e-2
# In the random model here flips stay isolated: the median difference is still float rounding.
FLIP_MEDIAN_BOUND = 1e-6


def serial(model: Model, tokens: list[int], state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    logits_all = []
    for t in tokens:
        logits, state = model.eval(t, state)
        logits_all.append(logits)
    assert state is not None
    return np.stack(logits_all), state


def assert_close(
    got: np.ndarray,
    want: np.ndarray,
    bound: float = SERIAL_BOUND,
    quantized: bool = False,
    median: bool = False,
) -> None:
    finite = np.abs(want) < 1e29  # v4's pp starts at -1e30 and stays huge for unused channels
    scale = max(1.0, float(np.abs(want[finite]).max())) if finite.any() else 1.0
    diff = np.abs(got - want)
    err = float(diff.max())
    if quantized:
        if median:
            mid = float(np.median(diff[finite])) if finite.any() else 0.0
            assert mid <= FLIP_MEDIAN_BOUND * scale, f"median error {mid} > {FLIP_MEDIAN_BOUND} * {scale}"
        bound = max(bound, FLIP_BOUND)
    assert err <= bound * scale, f"max error {err} > {bound} * {scale}"


@pytest.fixture(scope="module")
def v4_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seq") / "v4.bin"
    from tests.reference.random_models import write_random_model

    write_random_model(path, "4", 64, 3, 97, ffn_dim=128, seed=5)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("T", [1, 2, 17, 64, 300])
def test_sequence_equals_serial(
    v4_path: Path, tmp_path_factory: pytest.TempPathFactory, fmt: str, T: int
) -> None:
    path = model_in_format(v4_path, fmt, tmp_path_factory)
    rng = np.random.default_rng(T)
    tokens = rng.integers(0, 97, size=T).tolist()
    with Model(path, threads=2) as m:
        start = m.eval(3)[1]  # not the initial state: the carried-in state must be used
        want_logits, want_state = serial(m, tokens, start)
        logits, state = m.eval_sequence(tokens, start)
        quantized = fmt not in ("F32", "F16")
        assert logits.shape == (m.n_vocab,)
        # one vector: a flipped code in the last token's own products moves every logit (the median
        # check holds over all tokens' logits below, not over one token's)
        assert_close(logits, want_logits[-1], quantized=quantized)
        assert_close(state, want_state, quantized=quantized, median=True)
        all_logits, state2 = m.eval_sequence(tokens, start, all_logits=True)
        assert all_logits.shape == (T, m.n_vocab)
        assert_close(all_logits, want_logits, quantized=quantized, median=True)
        np.testing.assert_array_equal(state2, state)


def test_single_token_sequence_equals_eval(v4_path: Path) -> None:
    with Model(v4_path, threads=2) as m:
        s = m.eval(5)[1]
        l1, s1 = m.eval(9, s)
        l2, s2 = m.eval_sequence([9], s)
        np.testing.assert_array_equal(l1, l2)  # T = 1 is the per-token graph itself
        np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("T", [3, 7, 13, 16])
def test_a_short_sequence_runs_as_one_graph(v4_path: Path, T: int) -> None:
    """Each graph reads every weight, so a short input (a chat turn's new message) must not be split into
    powers of two (7 ran as 4 + 2 + 1: three reads of the weights); its result and hidden vector still
    follow the serial evals."""
    tokens = np.random.default_rng(T).integers(0, 97, size=T).tolist()
    with Model(v4_path, threads=2) as m:
        before = set(m._graphs)
        want_logits, want_state = serial(m, tokens)
        logits, state = m.eval_sequence(tokens)
        assert set(m._graphs) - before == {(T, False)}
        assert_close(logits, want_logits[-1], median=True)
        assert_close(state, want_state, median=True)
        hidden, hidden_state = m.hidden(tokens)
        np.testing.assert_array_equal(hidden_state, state)
        assert hidden.shape == (m.n_embed,)


def test_chunk_size_does_not_change_the_result(v4_path: Path) -> None:
    tokens = np.random.default_rng(0).integers(0, 97, size=150)
    with Model(v4_path, threads=2) as m:
        results = [m.eval_sequence(tokens, chunk_size=c, all_logits=True) for c in (1, 7, 64, 150)]
    for logits, state in results[1:]:
        assert_close(logits, results[0][0])
        assert_close(state, results[0][1])


def test_state_in_place_and_output_buffers(v4_path: Path) -> None:
    tokens = [1, 2, 3, 4, 5, 6, 7]
    with Model(v4_path, threads=2) as m:
        want_logits, want_state = m.eval_sequence(tokens, m.eval(8)[1])
        state = m.eval(8)[1]
        state_copy = state.copy()
        _, _new_state = m.eval_sequence(tokens, state)
        np.testing.assert_array_equal(state, state_copy)  # never modifies the caller's state
        logits_out = np.empty(m.n_vocab, dtype=np.float32)
        got_logits, got_state = m.eval_sequence(
            tokens, state, state_out=state, logits_out=logits_out, chunk_size=3
        )
        assert got_state is state and got_logits is logits_out
        assert_close(state, want_state)
        assert_close(logits_out, want_logits)
        _, s_nologits = m.eval_sequence(tokens, state_copy, compute_logits=False)
        assert_close(s_nologits, want_state)


@pytest.mark.parametrize("fmt, bound", [("FP32", 1e-4), ("FP16", 0.02)])
def test_tiny_v4_in_sequence_mode(fmt: str, bound: float) -> None:
    expected = np.fromfile(tiny_path("expected-logits-4v0-660K.bin"), dtype="<f4")
    with Model(tiny_path(f"tiny-rwkv-4v0-660K-{fmt}.bin"), threads=2) as m:
        logits, _ = m.eval_sequence([34, 105, 110])
    assert np.abs(logits - expected).max() <= bound


def test_perplexity_matches_the_per_token_log_likelihood(v4_path: Path) -> None:
    tokens = np.random.default_rng(3).integers(0, 97, size=90).tolist()
    with Model(v4_path, threads=2) as m:
        logits, _ = serial(m, tokens[:-1])
        z = logits.astype(np.float64)
        logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
        want = -np.mean(logp[np.arange(len(tokens) - 1), tokens[1:]])
        nll, ppl = m.perplexity(tokens, chunk_size=16)
    assert abs(nll - want) < 1e-4 * max(1.0, abs(want))
    assert ppl == pytest.approx(np.exp(nll))


def test_bad_arguments(v4_path: Path) -> None:
    with Model(v4_path) as m:
        for bad in ([], [0, 97], [-1], "abc", [[1, 2]], [1.5, 2.0], [True, False]):
            with pytest.raises(ValueError):
                m.eval_sequence(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            m.eval_sequence([1, 2], m.init_state()[:-1])
        with pytest.raises(ValueError):
            m.eval_sequence([1, 2], logits_out=np.empty(5, dtype=np.float32))
        with pytest.raises(ValueError):
            m.eval_sequence([1, 2], all_logits=True, logits_out=np.empty(m.n_vocab, dtype=np.float32))
        for bad_chunk in (0, -3, 1.5, 10**6):
            with pytest.raises(ValueError):
                m.eval_sequence([1, 2], chunk_size=bad_chunk)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            m.perplexity([1])
