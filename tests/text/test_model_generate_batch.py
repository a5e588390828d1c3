"""``rwkv_ggml.Model.generate_batch`` (the friendly Model's thin method over batch_generation.generate_batch)
against generating each prompt alone with the same keywords.

On the AVX-512 level a batch of up to 32 sequences is bit-identical to separate evals (tests/model/
test_batch.py), so greedy and seeded runs must give the alone results exactly; the prompts are the ones
tests/text/test_generate_batch.py checked to keep a clear greedy margin, so the comparison also holds on
the other levels, whose batches differ by rounding only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rwkv_ggml import Model
from rwkv_ggml.generation import default_model_path
from rwkv_ggml.sampling import SamplingParams

PROMPTS = ["The quick brown fox", "Hello", "In 1990,"]
N = 16


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    with Model(default_model_path(), threads=2) as m:
        yield m


def test_greedy_results_equal_generating_alone(model: Model) -> None:
    results = model.generate_batch(PROMPTS, N, temperature=0.0)
    assert len(results) == len(PROMPTS)
    for prompt, r in zip(PROMPTS, results, strict=True):
        alone = model.generate(prompt, N, temperature=0.0)
        text = "".join(alone)
        assert r.text == text and r.tokens == alone.tokens, prompt
        assert r.finish_reason == "length" and r.completion_tokens == N


def test_seeded_keywords_apply_to_every_prompt(model: Model) -> None:
    results = model.generate_batch(PROMPTS, N, temperature=1.2, top_p=0.95, seed=7)
    for prompt, r in zip(PROMPTS, results, strict=True):
        assert r.text == model.complete(prompt, N, temperature=1.2, top_p=0.95, seed=7), prompt


def test_per_prompt_params_with_keywords_on_top(model: Model) -> None:
    params = [SamplingParams(seed=s, temperature=0.9) for s in (1, 2, 3)]
    results = model.generate_batch(PROMPTS, [N, 5, 9], params=params, top_k=20)
    for prompt, sp, limit, r in zip(PROMPTS, params, [N, 5, 9], results, strict=True):
        assert r.text == model.complete(prompt, limit, params=sp, top_k=20), prompt
        assert r.completion_tokens == limit


def test_stop_strings_and_tokens(model: Model) -> None:
    greedy = model.generate_batch(PROMPTS, N, temperature=0.0)
    # stop at the first space each greedy continuation produces after its first token
    results = model.generate_batch(PROMPTS, N, temperature=0.0, stop=" ")
    for g, r in zip(greedy, results, strict=True):
        if " " in g.text:
            assert r.finish_reason == "stop" and r.text == g.text[: g.text.index(" ")]
    first = greedy[0].tokens[3]
    stopped = model.generate_batch(PROMPTS[:1], N, temperature=0.0, stop_tokens=[first])[0]
    assert (
        stopped.finish_reason == "stop"
        and stopped.tokens == greedy[0].tokens[: greedy[0].tokens.index(first)]
    )


def test_bad_arguments_raise_before_computing(model: Model) -> None:
    with pytest.raises(TypeError, match="list of prompts"):
        model.generate_batch("one prompt", N)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        model.generate_batch([], N)
    with pytest.raises(ValueError):
        model.generate_batch(PROMPTS, N, params=[SamplingParams()])
    with pytest.raises(ValueError, match="temperature"):
        model.generate_batch(PROMPTS, N, temperature=-1.0)
    with pytest.raises(TypeError):
        model.generate_batch(PROMPTS, N, params=["not params"])  # type: ignore[list-item]
