"""Sampling options on hand-made distributions, with the expected results worked out by hand."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

from rwkv_ggml.sampling import Sampler, SamplingParams, StopChecker


def logits_of(probs: list[float]) -> np.ndarray:
    """Logits whose softmax is probs (zero probability -> -inf)."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, dtype=np.float64))


def draw(sampler: Sampler, logits: np.ndarray, n: int) -> Counter[int]:
    return Counter(sampler.sample(logits) for _ in range(n))


def support(probs: np.ndarray) -> set[int]:
    return {int(i) for i in np.flatnonzero(probs)}


# ------------------------------------------------------------------------------------------
# Parameter validation


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"temperature": -0.1}, ValueError, "temperature"),
        ({"temperature": math.nan}, ValueError, "temperature must be finite"),
        ({"temperature": "hot"}, TypeError, "temperature"),
        ({"top_k": -1}, ValueError, "top_k"),
        ({"top_k": 2.5}, TypeError, "top_k"),
        ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"min_p": -0.1}, ValueError, "min_p"),
        ({"min_p": 1.1}, ValueError, "min_p"),
        ({"presence_penalty": math.inf}, ValueError, "presence_penalty"),
        ({"frequency_penalty": None}, TypeError, "frequency_penalty"),
        ({"repetition_penalty": 0.0}, ValueError, "repetition_penalty"),
        ({"penalty_decay": 1.5}, ValueError, "penalty_decay"),
        ({"logit_bias": {-1: 1.0}}, ValueError, "logit_bias key -1"),
        ({"logit_bias": {1: math.nan}}, ValueError, r"logit_bias\[1\]"),
        ({"logit_bias": {1: math.inf}}, ValueError, r"logit_bias\[1\]"),
        ({"logit_bias": [1, 2]}, TypeError, "logit_bias"),
        ({"banned_tokens": [1, -2]}, ValueError, "banned_tokens contains -2"),
        ({"banned_tokens": 5}, TypeError, "banned_tokens"),
        ({"stop_tokens": ["a"]}, ValueError, "stop_tokens"),
        ({"stop_strings": "stop"}, TypeError, "stop_strings"),
        ({"stop_strings": [""]}, ValueError, "stop_strings"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, ValueError, "seed"),
    ],
)
def test_params_validation(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        SamplingParams(**kwargs)


def test_params_accept_edges() -> None:
    SamplingParams(temperature=0, top_p=1.0, min_p=1.0, penalty_decay=0.0, logit_bias={3: -math.inf})
    SamplingParams(presence_penalty=-1.0, frequency_penalty=-0.5, seed=0, banned_tokens=np.array([1, 2]))


def test_sampler_checks_ids_against_vocab() -> None:
    with pytest.raises(ValueError, match="token id 10, outside the vocabulary"):
        Sampler(SamplingParams(banned_tokens=[10]), n_vocab=10)
    with pytest.raises(ValueError, match="n_vocab"):
        Sampler(SamplingParams(), n_vocab=0)
    params = SamplingParams()
    params.top_p = 2.0  # mutated after construction: caught when the sampler is made
    with pytest.raises(ValueError, match="top_p"):
        Sampler(params, n_vocab=4)


def test_logits_validation() -> None:
    sampler = Sampler(SamplingParams(seed=0), n_vocab=3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        sampler.sample(np.zeros(4))
    with pytest.raises(ValueError, match="nan"):
        sampler.sample(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="inf"):
        sampler.sample(np.array([0.0, np.inf, 1.0]))
    with pytest.raises(ValueError, match="nothing can be sampled"):
        sampler.sample(np.full(3, -np.inf))
    before = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    sampler.sample(before)
    np.testing.assert_array_equal(before, [1.0, 2.0, 3.0])  # the caller's logits are not changed


# ------------------------------------------------------------------------------------------
# Temperature, greedy


def test_greedy() -> None:
    logits = np.array([0.1, 2.5, 2.4, -1.0])
    sampler = Sampler(SamplingParams(temperature=0.0, top_k=1, seed=None), n_vocab=4)
    assert {sampler.sample(logits) for _ in range(50)} == {1}
    np.testing.assert_array_equal(sampler.probabilities(logits), [0, 1, 0, 0])
    # Greedy still sees bias and penalties.
    biased = Sampler(SamplingParams(temperature=0.0, logit_bias={2: 0.2}), n_vocab=4)
    assert biased.sample(logits) == 2


@pytest.mark.parametrize(
    ("temperature", "expected"), [(1.0, [1 / 3, 2 / 3]), (0.5, [1 / 5, 4 / 5]), (2.0, None)]
)
def test_temperature_scales_logits(temperature: float, expected: list[float] | None) -> None:
    logits = np.array([0.0, math.log(2.0)])  # p = 1/3, 2/3 at T = 1
    probs = Sampler(SamplingParams(temperature=temperature), n_vocab=2).probabilities(logits)
    if expected is None:  # T = 2: softmax(logits / 2) = (1, sqrt 2) / (1 + sqrt 2)
        expected = [1 / (1 + math.sqrt(2)), math.sqrt(2) / (1 + math.sqrt(2))]
    np.testing.assert_allclose(probs, expected, rtol=1e-12)


def test_tiny_temperature_is_stable() -> None:
    probs = Sampler(SamplingParams(temperature=1e-9), n_vocab=3).probabilities(
        np.array([1000.0, 999.0, -1e6])
    )
    np.testing.assert_allclose(probs, [1.0, 0.0, 0.0])


# ------------------------------------------------------------------------------------------
# Top-k, top-p, min-p


def test_top_k_never_samples_outside() -> None:
    logits = logits_of([0.4, 0.35, 0.25])
    sampler = Sampler(SamplingParams(top_k=2, seed=1), n_vocab=3)
    counts = draw(sampler, logits, 2000)
    assert counts[2] == 0
    assert counts[0] > 0 and counts[1] > 0
    # Renormalised over the two kept: 0.4/0.75 and 0.35/0.75.
    np.testing.assert_allclose(sampler.probabilities(logits), [0.4 / 0.75, 0.35 / 0.75, 0.0], rtol=1e-12)
    assert abs(counts[0] / 2000 - 0.4 / 0.75) < 0.05


def test_top_k_larger_than_vocab_is_no_filter() -> None:
    logits = logits_of([0.5, 0.3, 0.2])
    np.testing.assert_allclose(
        Sampler(SamplingParams(top_k=10), n_vocab=3).probabilities(logits), [0.5, 0.3, 0.2]
    )


@pytest.mark.parametrize(
    ("top_p", "nucleus"),
    [(0.5, {0}), (0.51, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (0.9, {0, 1, 2}), (0.95, {0, 1, 2, 3}),
     (1.0, {0, 1, 2, 3, 4})],
)  # fmt: skip
def test_top_p_minimal_nucleus(top_p: float, nucleus: set[int]) -> None:
    probs_in = [0.5, 0.3, 0.1, 0.05, 0.05]
    sampler = Sampler(SamplingParams(top_p=top_p, seed=2), n_vocab=5)
    probs = sampler.probabilities(logits_of(probs_in))
    assert support(probs) == nucleus
    total = sum(probs_in[i] for i in nucleus)
    np.testing.assert_allclose(
        probs[sorted(nucleus)], [probs_in[i] / total for i in sorted(nucleus)], rtol=1e-9
    )
    assert set(draw(sampler, logits_of(probs_in), 500)) <= nucleus


def test_top_p_on_a_large_vocabulary_matches_a_full_sort() -> None:
    # Exercises both searches (the top 64 / 1024 candidates, and the value sort for a large nucleus: flat
    # logits, as from random weights; rounded ones, so ties straddle the boundary) against a stable sort.
    rng = np.random.default_rng(3)
    for n, scale, decimals in ((5000, 2.0, None), (65536, 0.1, None), (65536, 1.0, 1), (50277, 3.0, 0)):
        logits = rng.normal(size=n) * scale
        if decimals is not None:
            logits = np.round(logits, decimals)
        full = np.exp(logits - logits.max())
        full /= full.sum()
        order = np.argsort(-full, kind="stable")
        cumulative = np.cumsum(full[order])
        for top_p in (0.1, 0.5, 0.9, 0.999):
            probs = Sampler(SamplingParams(top_p=top_p), n_vocab=n).probabilities(logits)
            size = int(np.flatnonzero(cumulative >= top_p - 1e-12)[0]) + 1
            assert support(probs) == {int(i) for i in order[:size]}, (n, scale, top_p)


@pytest.mark.parametrize(("min_p", "kept"), [(0.0, {0, 1, 2, 3}), (0.25, {0, 1, 2, 3}), (0.5, {0, 1, 2}),
                                             (0.6, {0, 1}), (1.0, {0})])  # fmt: skip
def test_min_p_threshold(min_p: float, kept: set[int]) -> None:
    # p_max = 0.4: min_p 0.5 keeps p >= 0.2, min_p 0.6 keeps p >= 0.24, ...
    sampler = Sampler(SamplingParams(min_p=min_p, top_p=1.0, seed=4), n_vocab=4)
    probs_in = logits_of([0.4, 0.3, 0.2, 0.1])
    assert support(sampler.probabilities(probs_in)) == kept
    assert set(draw(sampler, probs_in, 300)) <= kept


def test_filters_compose_in_order() -> None:
    # top_k=3 keeps {0,1,2} = (0.4,0.3,0.2)/0.9; top_p=0.7 then needs 0.444+0.333 -> {0,1};
    # min_p=0.8 of the max (0.571) = 0.457 then drops 1 (0.429).
    probs_in = logits_of([0.4, 0.3, 0.2, 0.1])
    assert support(Sampler(SamplingParams(top_k=3, top_p=0.7), n_vocab=4).probabilities(probs_in)) == {0, 1}
    params = SamplingParams(top_k=3, top_p=0.7, min_p=0.8)
    assert support(Sampler(params, n_vocab=4).probabilities(probs_in)) == {0}


# ------------------------------------------------------------------------------------------
# Bias, bans, penalties


def test_logit_bias_and_bans() -> None:
    logits = np.array([2.0, 1.0, 0.0])
    assert Sampler(SamplingParams(temperature=0, logit_bias={1: 1.5}), n_vocab=3).sample(logits) == 1
    banned = Sampler(SamplingParams(banned_tokens=[0], seed=5), n_vocab=3)
    assert 0 not in draw(banned, logits, 1000)
    assert banned.probabilities(logits)[0] == 0.0
    # A bias cannot bring a banned token back; -inf bias is a ban too.
    params = SamplingParams(temperature=0, banned_tokens=[0], logit_bias={0: 100.0, 1: -math.inf})
    assert Sampler(params, n_vocab=3).sample(logits) == 2


def test_presence_and_frequency_penalty_by_hand() -> None:
    params = SamplingParams(temperature=0, presence_penalty=0.2, frequency_penalty=0.3, penalty_decay=0.5)
    sampler = Sampler(params, n_vocab=3)
    logits = np.array([2.0, 1.5, 0.0])
    assert sampler.sample(logits) == 0
    sampler.accept(0)  # counts: [1, 0, 0]
    np.testing.assert_allclose(sampler.adjusted_logits(logits), [2.0 - 0.2 - 0.3 * 1.0, 1.5, 0.0])
    assert sampler.sample(logits) == 0  # 1.5 vs 1.5: the first wins
    sampler.accept(0)  # decay then add: 1 * 0.5 + 1 = 1.5
    np.testing.assert_allclose(sampler.counts(), [1.5, 0.0, 0.0])
    np.testing.assert_allclose(sampler.adjusted_logits(logits), [2.0 - 0.2 - 0.3 * 1.5, 1.5, 0.0])
    assert sampler.sample(logits) == 1  # 1.35 < 1.5: the penalty moved the argmax
    sampler.accept(2, weight=0.0)  # ChatRWKV's weight-0 tokens: presence penalty only
    np.testing.assert_allclose(sampler.counts(), [0.75, 0.0, 0.0])
    np.testing.assert_allclose(sampler.adjusted_logits(logits), [2.0 - 0.2 - 0.3 * 0.75, 1.5, -0.2])
    sampler.reset()
    np.testing.assert_allclose(sampler.adjusted_logits(logits), logits)


def test_penalty_decay_matches_chatrwkv_rule() -> None:
    sampler = Sampler(SamplingParams(frequency_penalty=1.0), n_vocab=4)
    tokens = [1, 2, 1, 3, 1]
    expected = np.zeros(4)
    for t in tokens:
        expected *= 0.996  # every count decays each step, then the new token adds 1
        expected[t] += 1.0
        sampler.accept(t)
    np.testing.assert_allclose(sampler.counts(), expected, rtol=1e-15)
    assert sampler.counts()[1] == pytest.approx(0.996**4 + 0.996**2 + 1)


def test_repetition_penalty_by_hand() -> None:
    sampler = Sampler(SamplingParams(temperature=0, repetition_penalty=2.0), n_vocab=3)
    logits = np.array([3.0, 2.0, -1.0])
    sampler.accept(0)
    sampler.accept(2)
    # positive logits are divided, negative ones multiplied: 3 -> 1.5, -1 -> -2
    np.testing.assert_allclose(sampler.adjusted_logits(logits), [1.5, 2.0, -2.0])
    assert sampler.sample(logits) == 1


def test_accept_validation() -> None:
    sampler = Sampler(SamplingParams(), n_vocab=3)
    with pytest.raises(ValueError, match="token 3 is outside"):
        sampler.accept(3)
    with pytest.raises(ValueError, match="token -1"):
        sampler.accept(-1)
    with pytest.raises(ValueError, match="weight"):
        sampler.accept(1, weight=math.nan)


# ------------------------------------------------------------------------------------------
# Randomness


def test_seed_reproducibility_and_reset() -> None:
    logits = np.random.default_rng(6).normal(size=50)
    a = Sampler(SamplingParams(seed=123, top_p=0.9), n_vocab=50)
    b = Sampler(SamplingParams(seed=123, top_p=0.9), n_vocab=50)
    first = [a.sample(logits) for _ in range(200)]
    assert first == [b.sample(logits) for _ in range(200)]
    a.reset()
    assert [a.sample(logits) for _ in range(200)] == first
    c = Sampler(SamplingParams(seed=124, top_p=0.9), n_vocab=50)
    assert [c.sample(logits) for _ in range(200)] != first


def test_draws_follow_the_distribution() -> None:
    sampler = Sampler(SamplingParams(seed=7), n_vocab=3)
    counts = draw(sampler, logits_of([0.2, 0.8, 0.0]), 4000)
    assert counts[2] == 0  # probability 0 is never drawn
    # Binomial(4000, 0.2): sd = 25, allow 5 sd.
    assert abs(counts[0] - 800) < 125


def test_stop_tokens() -> None:
    sampler = Sampler(SamplingParams(stop_tokens=[0, 5]), n_vocab=6)
    assert sampler.is_stop_token(0) and sampler.is_stop_token(np.int64(5)) and not sampler.is_stop_token(1)


# ------------------------------------------------------------------------------------------
# Stop strings


def test_stop_string_across_chunks() -> None:
    checker = StopChecker(["\nUser:"])
    assert checker.feed("Hello") == ("Hello", False)
    assert checker.feed(" there\nUs") == (" there", False)  # "\nUs" might start the stop string
    assert checker.feed("er: hi") == ("", True)
    assert checker.matched == "\nUser:"
    assert checker.feed("more") == ("", True)
    assert checker.flush() == ""


def test_partial_stop_prefix_released() -> None:
    checker = StopChecker(["\nUser:"])
    assert checker.feed("a\nUse") == ("a", False)
    assert checker.feed("d it") == ("\nUsed it", False)
    assert checker.feed("\n") == ("", False)
    assert checker.flush() == "\n"
    assert not checker.stopped


def test_earliest_stop_string_wins() -> None:
    checker = StopChecker(["END", "STOP", "ST"])
    assert checker.feed("abc STOP and END") == ("abc ", True)
    assert checker.matched == "STOP"  # "ST" starts at the same place; the longer one is reported


def test_no_stop_strings_pass_through() -> None:
    checker = StopChecker([])
    assert checker.feed("any\nUser:") == ("any\nUser:", False)
    assert checker.flush() == ""


def test_stop_every_split() -> None:
    text = "The answer is 42.\n\nUser: next question"
    stops = ["\n\nUser:", "Bob:"]
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            checker = StopChecker(stops)
            out = []
            stopped = False
            for chunk in (text[:i], text[i:j], text[j:]):
                emitted, stopped = checker.feed(chunk)
                out.append(emitted)
            assert stopped
            assert "".join(out) == "The answer is 42."


def test_stop_checker_validation() -> None:
    with pytest.raises(TypeError):
        StopChecker("stop")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StopChecker([""])
    with pytest.raises(TypeError):
        StopChecker(["x"]).feed(b"bytes")  # type: ignore[arg-type]
