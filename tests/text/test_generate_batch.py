"""Batched generation (rwkv_ggml/batch_generation.py) against generating each prompt alone.

Why equality is the right expectation. With one running request, ``eval_batch`` is bit-identical to
``eval`` (tests/model/test_batch.py), so a batch of one gives exactly the alone result, sampled or greedy.
With B > 1, each logit differs from the single-sequence one by the mat-mat rounding, bounded in
tests/model/test_batch.py by ROUNDING_BOUND relative to the largest |logit| for F32/F16 weights (observed
~1.5e-5). A greedy token can then only change where the top two logits of the alone run are within twice
that of each other: ``_assert_greedy_margins`` checks that every greedy step of the prompts used here has
a margin of at least MARGIN_FACTOR bounds (a failure there means the prompt is no good for this test, not
that batching is wrong), and then the tokens must be equal. A seeded random draw can only change if it
falls within that distance of a cumulative-probability boundary (odds ~1e-5 per token); the runs are
deterministic, so a sampled B > 1 comparison that passes here always passes.
"""

from __future__ import annotations

import dataclasses

import pytest

import rwkv_ggml
from rwkv_ggml import Model
from rwkv_ggml.batch_generation import BatchEvent, BatchGenerator, BatchResult, generate_batch
from rwkv_ggml.generation import default_model_path, generate
from rwkv_ggml.sampling import SamplingParams
from tests.conftest import tiny_path
from tests.text.greedy_margins import MARGIN_FACTOR, ROUNDING_BOUND, greedy_margin

GREEDY = SamplingParams(temperature=0.0)
# On the packaged model these keep a greedy margin >= 8.5e-4 relative for 24 tokens ("A" or "Once upon a
# time" would not: 2.8e-4 and 5e-4).
DEFAULT_PROMPTS = ["The quick brown fox", "Hello", "In 1990,"]
TINY_PROMPTS = ["The quick brown fox", "Once upon a time", "In 1990,", "Hello"]


@pytest.fixture(scope="module")
def default_model() -> Model:
    with Model(default_model_path(), threads=1) as m:
        yield m


@pytest.fixture(scope="module", params=["4v0-660K", "7v0-834K"])
def tiny(request: pytest.FixtureRequest) -> Model:
    with Model(tiny_path(f"tiny-rwkv-{request.param}-FP32.bin"), threads=1) as m:
        yield m


def _alone(model: Model, prompt: str, max_tokens: int, params: SamplingParams) -> BatchResult:
    gen = generate(model, prompt, max_tokens, params=params)
    text = "".join(gen)
    reason = "length" if gen.finish_reason == "length" else "stop"
    tokens = len(model.tokenize(prompt))
    return BatchResult(text, list(gen.tokens), reason, tokens, len(gen.tokens))


def _assert_greedy_margins(model: Model, prompt: str, generated: list[int]) -> None:
    """Every greedy choice of the alone run wins by more than MARGIN_FACTOR rounding bounds."""
    margin = greedy_margin(model, prompt, generated)
    assert margin > MARGIN_FACTOR * ROUNDING_BOUND, (prompt, margin)


def _check_greedy(model: Model, prompts: list[str], limits: list[int]) -> list[BatchResult]:
    got = generate_batch(model, prompts, limits, params=GREEDY)
    for prompt, limit, result in zip(prompts, limits, got, strict=True):
        want = _alone(model, prompt, limit, GREEDY)
        _assert_greedy_margins(model, prompt, want.tokens)
        assert result == want, prompt
    return got


# ---- greedy: each result equals the prompt generated alone ----------------------------------------


def test_greedy_equals_alone_on_the_default_model(default_model: Model) -> None:
    got = _check_greedy(default_model, DEFAULT_PROMPTS, [24, 24, 24])
    assert got[0].text == rwkv_ggml.complete(default_model, DEFAULT_PROMPTS[0], 24, temperature=0.0)
    assert all(r.finish_reason == "length" and r.completion_tokens == 24 for r in got)


def test_greedy_equals_alone_on_tiny_models_with_different_lengths(tiny: Model) -> None:
    # the requests finish at steps 5, 9, 17 and 24: the batch shrinks from 4 rows to 1 on the way
    limits = [17, 5, 24, 9]
    got = _check_greedy(tiny, TINY_PROMPTS, limits)
    assert [r.completion_tokens for r in got] == limits
    assert [r.prompt_tokens for r in got] == [len(tiny.tokenize(p)) for p in TINY_PROMPTS]


def test_prompts_as_token_ids(tiny: Model) -> None:
    by_ids = generate_batch(tiny, [tiny.tokenize(p) for p in TINY_PROMPTS[:2]], 8, params=GREEDY)
    by_text = generate_batch(tiny, TINY_PROMPTS[:2], 8, params=GREEDY)
    assert by_ids == by_text


# ---- per-request seeds, parameters, stop strings and tokens ----------------------------------------


def test_seeded_sampled_batch_of_one_is_identical_to_alone(default_model: Model) -> None:
    sp = SamplingParams(temperature=1.0, top_p=0.9, seed=1234)
    (got,) = generate_batch(default_model, ["Once upon a time"], 40, params=[sp])
    assert got == _alone(default_model, "Once upon a time", 40, sp)


def test_each_request_samples_with_its_own_params_and_seed(tiny: Model) -> None:
    prompt = "Once upon a time"
    params = [
        SamplingParams(temperature=1.0, top_p=1.0, seed=7),
        GREEDY,
        SamplingParams(temperature=1.0, top_p=1.0, seed=8),
        SamplingParams(temperature=1.0, top_p=1.0, seed=7),
    ]
    got = generate_batch(tiny, [prompt] * 4, 30, params=params)
    for sp, result in zip(params, got, strict=True):
        assert result == _alone(tiny, prompt, 30, sp)
    assert got[0] == got[3]  # same seed, same text, whichever row it sits in
    assert got[0].text != got[2].text  # another seed draws other tokens
    assert got[1].text != got[0].text


def test_stop_strings_per_request_and_for_all(default_model: Model) -> None:
    prompts = DEFAULT_PROMPTS
    alone = [_alone(default_model, p, 24, GREEDY) for p in prompts]
    # " of the court of the court,\nAn": stop at the first "court" (the text is cut, its tokens stay)
    assert "court" in alone[0].text
    own = dataclasses.replace(GREEDY, stop_strings=("court",))
    got = generate_batch(default_model, prompts, 24, params=[own, GREEDY, GREEDY])
    assert got[0] == _alone(default_model, prompts[0], 24, own)
    assert got[0].finish_reason == "stop"
    assert got[0].text == alone[0].text[: alone[0].text.index("court")]
    assert got[0].completion_tokens < 24
    assert got[1:] == alone[1:]  # the others run to their length, untouched by request 0's stop
    # stop= applies to every request on top of its own stop strings
    everyone = generate_batch(default_model, prompts, 24, params=[own, GREEDY, GREEDY], stop="the")
    for prompt, result, sp in zip(prompts, everyone, [own, GREEDY, GREEDY], strict=True):
        with_stop = dataclasses.replace(sp, stop_strings=(*sp.stop_strings, "the"))
        assert result == _alone(default_model, prompt, 24, with_stop)
        assert result.finish_reason == "stop" and "the" not in result.text


def test_stop_tokens_end_a_request_without_the_token(default_model: Model) -> None:
    (c_token,) = default_model.tokenize("c")  # " of the court ...": stops before "court"
    alone = _alone(default_model, DEFAULT_PROMPTS[0], 24, GREEDY)
    assert c_token in alone.tokens
    sp = dataclasses.replace(GREEDY, stop_tokens=(c_token,))
    got = generate_batch(default_model, DEFAULT_PROMPTS, 24, params=[sp, GREEDY, GREEDY])
    assert got[0].tokens == alone.tokens[: alone.tokens.index(c_token)]
    assert got[0].finish_reason == "stop"
    assert got[0] == _alone(default_model, DEFAULT_PROMPTS[0], 24, sp)


def test_zero_max_tokens(tiny: Model) -> None:
    got = generate_batch(tiny, ["Hello", "In 1990,"], [0, 3], params=GREEDY)
    assert got[0] == BatchResult("", [], "length", 5, 0)
    assert got[1] == _alone(tiny, "In 1990,", 3, GREEDY)


# ---- the streaming generator: events, late joiners, waiting for a slot, cancelling ------------------


def test_streamed_events_add_up_to_the_results(tiny: Model) -> None:
    gen = BatchGenerator(tiny, capacity=2)  # three requests, two slots: the third waits for one
    ids = [gen.add(p, n, params=GREEDY) for p, n in zip(TINY_PROMPTS[:3], [4, 10, 6], strict=True)]
    assert gen.waiting == ids and gen.running == []
    first = gen.step()
    assert gen.running == ids[:2] and gen.waiting == ids[2:]
    assert all(isinstance(e, BatchEvent) for e in first)
    events = first + list(gen.events())
    assert gen.done
    for rid, prompt, n in zip(ids, TINY_PROMPTS[:3], [4, 10, 6], strict=True):
        mine = [e for e in events if e.request_id == rid]
        assert "".join(e.text for e in mine) == gen.result(rid).text
        assert [e.finish_reason for e in mine][-1] == "length"
        assert all(e.finish_reason is None for e in mine[:-1])
        assert gen.result(rid) == _alone(tiny, prompt, n, GREEDY)
    assert gen.bank.n_free == 2


def test_a_request_added_while_others_run(tiny: Model) -> None:
    gen = BatchGenerator(tiny, capacity=4)
    a = gen.add(TINY_PROMPTS[0], 12, params=GREEDY)
    for _ in range(5):
        gen.step()
    b = gen.add(TINY_PROMPTS[1], 12, params=GREEDY)
    list(gen.events())
    assert gen.result(a) == _alone(tiny, TINY_PROMPTS[0], 12, GREEDY)
    assert gen.result(b) == _alone(tiny, TINY_PROMPTS[1], 12, GREEDY)


def test_cancel_frees_the_slot_and_leaves_the_others_untouched(tiny: Model) -> None:
    gen = BatchGenerator(tiny, capacity=3)
    ids = [gen.add(p, 16, params=GREEDY) for p in TINY_PROMPTS[:3]]
    waiting = gen.add(TINY_PROMPTS[3], 16, params=GREEDY)
    for _ in range(4):
        gen.step()
    partial = gen.result(ids[1])
    assert partial.finish_reason == "running" and partial.completion_tokens == 4
    gen.cancel(ids[1])
    gen.cancel(ids[1])  # twice is harmless
    assert ids[1] not in gen.running
    assert gen.bank.n_free == 1
    list(gen.events())  # the waiting request takes the freed slot
    cancelled = gen.result(ids[1])
    assert cancelled.finish_reason == "cancelled" and cancelled.tokens == partial.tokens
    for rid, prompt in [(ids[0], TINY_PROMPTS[0]), (ids[2], TINY_PROMPTS[2]), (waiting, TINY_PROMPTS[3])]:
        assert gen.result(rid) == _alone(tiny, prompt, 16, GREEDY)
    late = gen.add("A", 3, params=GREEDY)
    gen.cancel(late)  # cancelled before it ever ran
    assert gen.done and gen.result(late) == BatchResult("", [], "cancelled", 1, 0)


# ---- bad input: typed errors before anything runs --------------------------------------------------


@pytest.mark.parametrize(
    ("prompts", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "prompts is empty"),
        ("Hello", {}, TypeError, "wrap a single prompt in a list"),
        (None, {}, TypeError, "prompts must be a list"),
        (["Hello", 42], {}, TypeError, r"prompts\[1\]: prompt must be a str"),
        (["Hello", None], {}, TypeError, r"prompts\[1\]"),
        (["Hello", ""], {}, ValueError, r"prompts\[1\]: the prompt is empty"),
        (["Hello", [1, 999]], {}, ValueError, r"prompts\[1\]: prompt token 999"),
        (["a", "b"], {"params": [GREEDY]}, ValueError, "params has 1 entries for 2 prompts"),
        (["a", "b"], {"params": [GREEDY, {"temperature": 0}]}, TypeError, "params must hold SamplingParams"),
        (["a", "b"], {"params": "greedy"}, TypeError, "params must be None"),
        (["a", "b"], {"max_tokens": [1, 2, 3]}, ValueError, "max_tokens has 3 entries for 2 prompts"),
        (["a", "b"], {"max_tokens": -1}, ValueError, r"prompts\[0\]: max_tokens must be an integer >= 0"),
        (["a"], {"stop": [""]}, ValueError, "stop_strings"),
        (["a"], {"tokenizer": 3}, TypeError, "tokenizer must be"),
    ],
)
def test_bad_input(tiny: Model, prompts: object, kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        generate_batch(tiny, prompts, **kwargs)  # type: ignore[arg-type]


def test_generator_bad_arguments(tiny: Model) -> None:
    with pytest.raises(ValueError, match="capacity"):
        BatchGenerator(tiny, capacity=0)
    gen = BatchGenerator(tiny, capacity=1)
    with pytest.raises(KeyError, match="no request with id 5"):
        gen.cancel(5)
    with pytest.raises(TypeError, match="params must be a SamplingParams"):
        gen.add("Hello", params={"temperature": 0})  # type: ignore[arg-type]
    assert gen.done


def test_exported_from_the_package() -> None:
    assert rwkv_ggml.generate_batch is generate_batch
    assert rwkv_ggml.BatchGenerator is BatchGenerator


def test_a_closed_model_ends_the_running_requests_with_a_clear_error() -> None:
    from rwkv_ggml.errors import ClosedError

    model = Model(tiny_path("tiny-rwkv-4v0-660K-FP32.bin"), threads=1)
    gen = BatchGenerator(model, capacity=1)
    running = gen.add("Hello", 10, params=GREEDY)
    waiting = gen.add("In 1990,", 10, params=GREEDY)
    gen.step()
    model.close()
    with pytest.raises(ClosedError):
        gen.step()
    assert gen.result(running).finish_reason == "error" and gen.running == []
    with pytest.raises(ClosedError):
        gen.step()  # the waiting request fails to join and keeps waiting
    assert gen.waiting == [waiting] and gen.bank.n_free == 1
    gen.cancel(waiting)
    assert gen.done
