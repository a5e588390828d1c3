"""What the server needs from BatchGenerator (rwkv_ggml/batch_generation.py): starting from a given state,
the states kept for the cache, prompt reading spread over steps, log-probabilities, releasing finished
requests; and the prefix state cache (rwkv_ggml/server/state_cache.py), which is pure.

Exact equalities: prompt pieces that are multiples of 256 tokens run the same graphs as one
``eval_sequence`` call, and one running request decodes with ``eval_batch`` of B = 1, bit-identical to
``eval``; so the results below are compared element-wise, not within a tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from rwkv_ggml import Model
from rwkv_ggml.batch_generation import BatchGenerator
from rwkv_ggml.generation import default_model_path, generate
from rwkv_ggml.sampling import SamplingParams
from rwkv_ggml.server.state_cache import StateCache

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    with Model(default_model_path(), threads=1) as m:
        yield m


def _long_prompt(model: Model, n: int) -> list[int]:
    text = "The quick brown fox jumps over the lazy dog. " * (n // 10 + 1)
    return model.tokenize(text)[:n]


def test_a_long_prompt_is_read_in_chunks_while_others_decode(model: Model) -> None:
    gen = BatchGenerator(model, capacity=4, prefill_chunk=256)
    short = gen.add("Hello", 20, params=GREEDY)
    gen.step()
    long_ids = _long_prompt(model, 700)  # 256 + 256 + 188: three steps of reading
    late = gen.add(long_ids, 6, params=GREEDY)
    for step in range(3):
        before = gen.result(short).completion_tokens
        gen.step()
        assert gen.result(short).completion_tokens == before + 1  # the running request never waits
        assert late in gen.running
        assert gen.result(late).completion_tokens == (1 if step == 2 else 0)  # first token with chunk 3
    list(gen.events())
    want = generate(model, long_ids, 6, params=GREEDY)
    assert gen.result(late).text == "".join(want) and gen.result(late).tokens == want.tokens


def test_starting_from_a_state_equals_reading_the_whole_prompt(model: Model) -> None:
    ids = _long_prompt(model, 300)
    _, prefix_state = model.eval_sequence(ids[:256])
    gen = BatchGenerator(model, capacity=1)  # one after the other: B = 1, exact
    from_state = gen.add(ids[256:], 12, params=GREEDY, state=prefix_state)
    whole = gen.add(ids, 12, params=GREEDY)
    list(gen.events())
    want = generate(model, ids, 12, params=GREEDY)
    list(want)
    assert gen.result(from_state).tokens == want.tokens
    assert gen.result(from_state).prompt_tokens == 300 - 256
    assert gen.result(whole).tokens == gen.result(from_state).tokens


def test_kept_states_are_the_states_after_the_prompt_and_the_fed_reply(model: Model) -> None:
    gen = BatchGenerator(model, capacity=1)
    ids = model.tokenize("Once upon a time")
    rid = gen.add(ids, 10, params=GREEDY, keep_states=True)
    list(gen.events())
    kept = gen.states(rid)
    result = gen.result(rid)
    _, after_prompt = model.eval_sequence(ids)
    np.testing.assert_array_equal(kept.prompt_state, after_prompt)
    assert kept.reply_tokens == len(result.tokens) - 1  # the last sampled token is never fed
    state = after_prompt
    for token in result.tokens[: kept.reply_tokens]:
        _, state = model.eval(token, state)
    np.testing.assert_array_equal(kept.reply_state, state)
    plain = gen.add(ids, 3, params=GREEDY)
    list(gen.events())
    assert gen.states(plain).prompt_state is None and gen.states(plain).reply_state is None


def test_a_cancelled_request_keeps_no_reply_state(model: Model) -> None:
    gen = BatchGenerator(model, capacity=1)
    rid = gen.add("Hello", 50, params=GREEDY, keep_states=True)
    gen.step()
    gen.cancel(rid)
    assert gen.states(rid).prompt_state is not None and gen.states(rid).reply_state is None


def test_logprobs_equal_the_single_sequence_ones(model: Model) -> None:
    gen = BatchGenerator(model, capacity=1)
    rid = gen.add("Hello", 8, params=GREEDY, logprobs=3)
    list(gen.events())
    want = generate(model, "Hello", 8, params=GREEDY, logprobs=3)
    list(want)
    result = gen.result(rid)
    assert result.token_logprobs == want.token_logprobs and result.top_logprobs == want.top_logprobs
    rows = gen.tokens_since(rid, 5)
    assert rows.tokens == result.tokens[5:] and rows.token_logprobs == result.token_logprobs[5:]


def test_release_forgets_only_finished_requests(model: Model) -> None:
    gen = BatchGenerator(model, capacity=1)
    rid = gen.add("Hello", 30, params=GREEDY)
    gen.step()
    with pytest.raises(ValueError, match="has not finished"):
        gen.release(rid)
    gen.cancel(rid)
    assert gen.release(rid).finish_reason == "cancelled"
    with pytest.raises(KeyError):
        gen.result(rid)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"state": np.zeros(3, np.float32)}, Exception, "state"),
        ({"logprobs": -1}, ValueError, "logprobs"),
        ({"logprobs": True}, ValueError, "logprobs"),
    ],
)
def test_bad_new_arguments(model: Model, kwargs: dict[str, object], error: type, match: str) -> None:
    gen = BatchGenerator(model, capacity=1)
    with pytest.raises(error, match=match):
        gen.add("Hello", 3, **kwargs)  # type: ignore[arg-type]
    assert gen.done
    with pytest.raises(ValueError, match="prefill_chunk"):
        BatchGenerator(model, prefill_chunk=0)


# ---- the state cache (pure) ------------------------------------------------------------------------


def _state(value: float, size: int = 4) -> np.ndarray:
    return np.full(size, value, np.float32)


def test_the_longest_strict_prefix_wins() -> None:
    cache = StateCache(1 << 20)
    cache.store([1, 2], _state(2))
    cache.store([1, 2, 3, 4], _state(4))
    cache.store([9], _state(9))
    hit = cache.lookup([1, 2, 3, 4, 5])
    assert hit is not None and hit.length == 4 and hit.state[0] == 4
    hit = cache.lookup([1, 2, 3, 4])  # strict: at least one token is left to read
    assert hit is not None and hit.length == 2
    assert cache.lookup([2, 1]) is None and cache.lookup([1]) is None
    assert (cache.hits, cache.misses, cache.hit_tokens) == (2, 2, 6)
    hit = cache.lookup([9, 9])
    assert hit is not None
    hit.state[0] = -1  # a copy: the cached state is unchanged
    again = cache.lookup([9, 9])
    assert again is not None and again.state[0] == 9


def test_least_recently_used_states_go_first_within_the_byte_bound() -> None:
    cache = StateCache(3 * 16)  # three states of 4 float32
    for i in range(3):
        cache.store([i], _state(i))
    assert cache.lookup([0, 7]) is not None  # 0 is now the most recently used
    cache.store([3], _state(3))  # evicts 1, the least recently used
    assert len(cache) == 3 and cache.bytes == 48
    assert cache.lookup([1, 7]) is None
    assert all(cache.lookup([i, 7]) is not None for i in (0, 2, 3))
    cache.store([0], _state(5))  # replacing an entry does not grow the cache
    assert len(cache) == 3 and cache.bytes == 48
    cache.store([8], _state(8, size=100))  # bigger than the whole bound: not stored
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0 and cache.lookup([0, 1]) is None


def test_a_zero_bound_turns_the_cache_off() -> None:
    cache = StateCache(0)
    cache.store([1], _state(1))
    assert len(cache) == 0 and cache.lookup([1, 2]) is None
    with pytest.raises(ValueError, match="max_bytes"):
        StateCache(-1)
