"""``rwkv-ggml serve`` driven by the official ``openai`` client: the results equal the in-process API.

Why greedy equality holds exactly for one client at a time: the server reads a prompt in pieces of 256
tokens (a multiple of the model's sequence chunk, so the same graphs as ``Model.eval_sequence``) and decodes
with ``eval_batch``, which for one running request is bit-identical to ``eval``, what the in-process
generation uses. With many clients the batch's matrix products round differently (B > 1); the concurrent
test uses the prompts whose greedy margins tests/text/test_generate_batch.py checks (DEFAULT_PROMPTS).
"""

from __future__ import annotations

import base64
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

import rwkv_ggml
from rwkv_ggml.generation import default_model_path
from tests.server.conftest import ServerProcess
from tests.text.test_generate_batch import DEFAULT_PROMPTS

MODEL = "rwkv"


@pytest.fixture(scope="module")
def model() -> Iterator[rwkv_ggml.Model]:
    with rwkv_ggml.Model(default_model_path(), threads=1) as m:
        yield m


def _completion(model: rwkv_ggml.Model, prompt: str, n: int, **kw: Any) -> dict[str, Any]:
    result = model.create_completion(prompt, max_tokens=n, temperature=0.0, **kw)
    assert isinstance(result, dict)
    return dict(result)


def _chat(model: rwkv_ggml.Model, messages: list[dict[str, str]], n: int) -> dict[str, Any]:
    result = model.create_chat_completion(messages, max_tokens=n, temperature=0.0)  # type: ignore[arg-type]
    assert isinstance(result, dict)
    return dict(result)


def test_models_and_health(server: ServerProcess) -> None:
    assert [m.id for m in server.client().models.list()] == [MODEL]
    health = server.health()
    assert health["status"] == "ok" and health["model"] == MODEL
    assert health["version"] == "v4" and health["format"] == "F16"
    assert {"running", "waiting", "batch_size", "tokens_per_second"} <= set(health)


def test_completion_equals_in_process(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    got = server.client().completions.create(
        model=MODEL, prompt="The quick brown fox", max_tokens=40, temperature=0
    )
    want = _completion(model, "The quick brown fox", 40)
    assert got.choices[0].text == want["choices"][0]["text"]
    assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"] == "length"
    assert got.usage is not None
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (
        want["usage"]["prompt_tokens"],
        want["usage"]["completion_tokens"],
    )


def test_stop_strings_and_token_prompts(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    client = server.client()
    want = _completion(model, "Hello", 60, stop=["e"])
    got = client.completions.create(model=MODEL, prompt="Hello", max_tokens=60, temperature=0, stop=["e"])
    assert got.choices[0].text == want["choices"][0]["text"] and got.choices[0].finish_reason == "stop"
    ids = model.tokenize("In 1990,")
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == _completion(model, "In 1990,", 12)["choices"][0]["text"]


def test_seeded_sampling_equals_in_process(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    got = server.client().completions.create(
        model=MODEL, prompt="Hello", max_tokens=30, temperature=0.9, top_p=0.9, seed=7
    )
    want = model.create_completion("Hello", max_tokens=30, temperature=0.9, top_p=0.9, seed=7)
    assert isinstance(want, dict)
    assert got.choices[0].text == want["choices"][0]["text"]


def test_logprobs_equal_in_process(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    got = server.client().completions.create(
        model=MODEL, prompt="Hello", max_tokens=8, temperature=0, logprobs=3
    )
    want = _completion(model, "Hello", 8, logprobs=3)["choices"][0]["logprobs"]
    lp = got.choices[0].logprobs
    assert lp is not None
    assert lp.tokens == want["tokens"] and lp.text_offset == want["text_offset"]
    np.testing.assert_allclose(lp.token_logprobs, want["token_logprobs"], rtol=1e-6)  # type: ignore[arg-type]
    assert [list(t) for t in lp.top_logprobs or []] == [list(t) for t in want["top_logprobs"]]


def test_streamed_completion_with_usage(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    stream = server.client().completions.create(
        model=MODEL,
        prompt="In 1990,",
        max_tokens=30,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == _completion(model, "In 1990,", 30)["choices"][0]["text"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 30


def test_chat_equals_in_process(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a fox?"}]
    got = server.client().chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=0,
    )
    want = _chat(model, messages, 40)
    assert got.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"]


def test_streamed_chat_equals_in_process(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    messages = [{"role": "user", "content": "Tell me a story."}]
    stream = server.client().chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == _chat(model, messages, 40)["choices"][0]["message"]["content"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 40


def test_embeddings_equal_in_process(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    texts = ["The quick brown fox", "Hello"]
    got = server.client().embeddings.create(model=MODEL, input=texts)  # the client asks for base64
    for item, text in zip(got.data, texts, strict=True):
        np.testing.assert_array_equal(np.array(item.embedding, dtype=np.float32), model.embed(text))
    plain = httpx.post(
        f"{server.url}/v1/embeddings", json={"input": "Hello", "encoding_format": "float"}, timeout=30
    ).json()
    np.testing.assert_array_equal(
        np.array(plain["data"][0]["embedding"], dtype=np.float32), model.embed("Hello")
    )
    b64 = httpx.post(
        f"{server.url}/v1/embeddings", json={"input": "Hello", "encoding_format": "base64"}, timeout=30
    ).json()
    vec = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(vec, model.embed("Hello"))


def test_32_concurrent_clients_all_get_their_answer(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    wants = {p: _completion(model, p, 24)["choices"][0]["text"] for p in DEFAULT_PROMPTS}
    client = server.client(timeout=120)

    def ask(i: int) -> tuple[str, str]:
        prompt = DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)]
        if i % 2:
            stream = client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=24, temperature=0, stream=True
            )
            return prompt, "".join(c.choices[0].text for c in stream if c.choices)
        got = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
        return prompt, got.choices[0].text

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(ask, range(32), timeout=180))
    assert len(results) == 32
    for prompt, text in results:
        assert text == wants[prompt], prompt
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert "rwkv_batch_size" in metrics and "rwkv_generation_tokens_total" in metrics


def _cached_tokens(usage: Any) -> int:
    assert usage is not None and usage.prompt_tokens_details is not None
    return int(usage.prompt_tokens_details.cached_tokens or 0)


def test_second_chat_turn_starts_from_the_cached_state(server: ServerProcess, model: rwkv_ggml.Model) -> None:
    client = server.client()
    history = [{"role": "user", "content": "Write a line about the sea, please, in a few words."}]
    first = client.chat.completions.create(
        model=MODEL,
        messages=history,  # type: ignore[arg-type]
        max_tokens=30,
        temperature=0,
    )
    reply = first.choices[0].message.content or ""
    assert reply
    history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And about the sky?"}]
    second = client.chat.completions.create(
        model=MODEL,
        messages=history,  # type: ignore[arg-type]
        max_tokens=30,
        temperature=0,
    )
    assert second.usage is not None
    cached = _cached_tokens(second.usage)
    # the whole first turn (its prompt and the reply as far as it was fed) came from the cache
    assert cached >= first.usage.prompt_tokens if first.usage else False
    assert cached < second.usage.prompt_tokens
    assert second.choices[0].message.content == _chat(model, history, 30)["choices"][0]["message"]["content"]
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    hits = [line for line in metrics.splitlines() if line.startswith("rwkv_state_cache_hits_total")]
    assert hits and float(hits[0].split()[-1]) >= 1
