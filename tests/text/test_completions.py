"""OpenAI-shaped completions, the chat template, tokenize/detokenize and the explicit keyword API
(rwkv_ggml/completions.py, rwkv_ggml/chat_format.py, rwkv_ggml/api.py)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rwkv_ggml import Model
from rwkv_ggml.chat_format import ChatMessage, ChatTemplate
from rwkv_ggml.completions import chat_completion
from rwkv_ggml.generation import DEFAULT_MAX_TOKENS, ChatSession
from rwkv_ggml.sampling import DEFAULT_TOP_P, SamplingParams
from tests.conftest import tiny_path
from tests.text.test_generate import ScriptedModel

PROMPT = "The quick brown"


@pytest.fixture(scope="module")
def tiny4() -> Iterator[Model]:
    with Model(tiny_path("tiny-rwkv-4v0-660K-FP32.bin"), threads=1) as m:
        yield m


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max()
    return z - math.log(float(np.exp(z).sum()))


# ---- create_completion ---------------------------------------------------------------------------


def test_completion_shape_and_usage(tiny4: Model) -> None:
    result: Any = tiny4.create_completion(PROMPT, max_tokens=7, seed=5)
    assert set(result) == {"id", "object", "created", "model", "choices", "usage"}
    assert result["object"] == "text_completion" and result["id"].startswith("cmpl-")
    assert isinstance(result["created"], int) and result["model"] == tiny4.path
    (choice,) = result["choices"]
    assert choice == {"text": choice["text"], "index": 0, "logprobs": None, "finish_reason": "length"}
    assert choice["text"] == tiny4.complete(PROMPT, 7, seed=5)
    n_prompt = len(tiny4.tokenize(PROMPT))
    assert result["usage"] == {
        "prompt_tokens": n_prompt,
        "completion_tokens": 7,
        "total_tokens": n_prompt + 7,
    }


def test_completion_stop_string_and_stream(tiny4: Model) -> None:
    full = tiny4.complete(PROMPT, 40, temperature=0.0)
    stop = full[10:13]
    cut = full[: full.find(stop)]
    result: Any = tiny4.create_completion(PROMPT, max_tokens=40, temperature=0.0, stop=stop)
    assert result["choices"][0]["text"] == cut
    assert result["choices"][0]["finish_reason"] == "stop"
    chunks = list(tiny4.create_completion(PROMPT, max_tokens=40, temperature=0.0, stop=[stop], stream=True))
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut
    assert chunks[-1]["choices"][0]["text"] == ""


def test_logprobs_are_the_raw_log_softmax(tiny4: Model) -> None:
    """Sampled with temperature 0.7 and top_p 0.5, the reported log-probabilities are still those of
    the model's raw logits, checked against a hand-written evaluation of prompt + generated tokens."""
    result: Any = tiny4.create_completion(
        PROMPT, max_tokens=12, temperature=0.7, top_p=0.5, seed=1, logprobs=3
    )
    lp = result["choices"][0]["logprobs"]
    prompt_ids = tiny4.tokenize(PROMPT)
    generated = tiny4.tokenize("".join(lp["tokens"]))
    assert len(generated) == 12 and "".join(lp["tokens"]) == result["choices"][0]["text"]
    all_logits, _ = tiny4.eval_sequence(prompt_ids + generated[:-1], all_logits=True)
    for i, token in enumerate(generated):
        ref = log_softmax(all_logits[len(prompt_ids) - 1 + i])
        assert lp["token_logprobs"][i] == pytest.approx(ref[token], abs=1e-4)
        top = lp["top_logprobs"][i]
        best = np.argsort(-ref)[:3]
        assert list(top) == [bytes([int(t)]).decode("latin-1") for t in best]
        assert list(top.values()) == pytest.approx([ref[t] for t in best], abs=1e-4)
    assert lp["text_offset"] == list(range(len(PROMPT), len(PROMPT) + 12))


def test_logprobs_with_echo_and_stop(tiny4: Model) -> None:
    result: Any = tiny4.create_completion(PROMPT, max_tokens=5, temperature=0.0, logprobs=1, echo=True)
    choice = result["choices"][0]
    assert choice["text"].startswith(PROMPT) and len(choice["text"]) == len(PROMPT) + 5
    lp = choice["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert "".join(lp["tokens"]) == choice["text"] and lp["text_offset"] == list(range(len(choice["text"])))
    ids = tiny4.tokenize(PROMPT)
    all_logits, _ = tiny4.eval_sequence(ids, all_logits=True)
    assert lp["token_logprobs"][1] == pytest.approx(log_softmax(all_logits[0])[ids[1]], abs=1e-4)
    # a stop string: the tokens that completed it are not reported
    full = tiny4.complete(PROMPT, 30, seed=4)
    at = next(i for i in range(5, len(full) - 3) if full.find(full[i : i + 3]) == i)
    stopped: Any = tiny4.create_completion(PROMPT, max_tokens=30, seed=4, logprobs=0, stop=full[at : at + 3])
    text = stopped["choices"][0]["text"]
    assert "".join(stopped["choices"][0]["logprobs"]["tokens"]) == text == full[:at]


def test_streamed_logprobs_cover_every_token(tiny4: Model) -> None:
    chunks = list(tiny4.create_completion(PROMPT, max_tokens=9, seed=2, logprobs=2, stream=True))
    tokens = [t for c in chunks for t in c["choices"][0]["logprobs"]["tokens"]]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert "".join(tokens) == text and len(tokens) == 9


# ---- chat ------------------------------------------------------------------------------------------


def test_template_renders_rwkv_transcripts() -> None:
    messages: list[ChatMessage] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi\n\nthere"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    assert ChatTemplate().render(messages) == (
        "System: Be brief.\n\nUser: Hi\nthere\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:"
    )
    assert ChatTemplate().stop_strings() == ("\n\nUser:",)
    bob = ChatTemplate(user="Bob", assistant="Alice")
    assert bob.render(messages[3:]) == "Bob: Bye\n\nAlice:" and bob.stop_strings() == ("\n\nBob:",)
    with pytest.raises(ValueError, match="role 'tool'"):
        ChatTemplate().render([{"role": "tool", "content": "x"}])  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="empty"):
        ChatTemplate().render([{"role": "user", "content": " \n "}])


def test_chat_completion_strips_the_space_and_stops_at_the_next_turn() -> None:
    prompt = "User: hi\n\nAssistant:"
    model = ScriptedModel(b"\n Fine thanks.\n\nUser: and", prompt_len=len(prompt))
    params = SamplingParams(temperature=0.0)
    msgs: list[ChatMessage] = [{"role": "user", "content": "hi"}]
    result: Any = chat_completion(
        model,
        msgs,
        max_tokens=100,
        params=params,
        tokenizer="bytes",  # type: ignore[arg-type]
        stream=False,
        template=None,
        model_name="scripted",
    )
    assert result["object"] == "chat.completion" and result["id"].startswith("chatcmpl-")
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Fine thanks."}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"]["prompt_tokens"] == len(prompt)
    chunks = list(
        chat_completion(
            model,
            msgs,
            max_tokens=100,
            params=params,
            tokenizer="bytes",  # type: ignore[arg-type]
            stream=True,
            template=None,
            model_name="scripted",
        )
    )
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Fine thanks."
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_chat_session_and_chat_completion_share_the_template(tiny4: Model) -> None:
    session = ChatSession(tiny4, system="Be brief.", temperature=0.0)
    reply = session.ask("Hi", 15)
    result: Any = tiny4.create_chat_completion(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        temperature=0.0,
        max_tokens=15,
    )
    assert result["choices"][0]["message"]["content"] == reply


def test_chat_template_callable_override(tiny4: Model) -> None:
    seen: list[str] = []

    def template(messages: Any) -> str:
        seen.append(messages[-1]["content"])
        return f"Q: {messages[-1]['content']}\nA:"

    result: Any = tiny4.create_chat_completion(
        [{"role": "user", "content": "Why?"}], chat_template=template, temperature=0.0, max_tokens=8
    )
    assert seen == ["Why?"]
    assert (
        result["choices"][0]["message"]["content"]
        == tiny4.complete("Q: Why?\nA:", 8, temperature=0.0).lstrip()
    )
    with pytest.raises(TypeError, match="chat_template"):
        tiny4.create_chat_completion([{"role": "user", "content": "x"}], chat_template=3)  # type: ignore[arg-type]


# ---- tokenize, keywords, defaults ----------------------------------------------------------------


def test_tokenize_detokenize(tiny4: Model) -> None:
    ids = tiny4.tokenize("héllo")
    assert ids == list("héllo".encode())
    assert tiny4.detokenize(ids) == "héllo"
    assert tiny4.detokenize(ids[:2]) == "h\ufffd"
    assert tiny4.tokenizer.name == tiny4.tokenize.__self__.tokenizer.name  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="text must be a str"):
        tiny4.tokenize(b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["generate", "complete", "create_completion", "create_chat_completion", "chat_session"]
)
def test_sampling_options_are_explicit_keywords(name: str) -> None:
    params = inspect.signature(getattr(Model, name)).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for option in (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "seed",
    ):
        assert params[option].kind is inspect.Parameter.KEYWORD_ONLY, option
    assert params["top_p"].default == DEFAULT_TOP_P == SamplingParams().top_p
    doc = getattr(Model, name).__doc__
    assert "top_p" in doc and "0.85" in doc


def test_defaults_are_one_set() -> None:
    assert inspect.signature(Model.generate).parameters["max_tokens"].default == DEFAULT_MAX_TOKENS == 200
    assert inspect.signature(Model.create_completion).parameters["max_tokens"].default == DEFAULT_MAX_TOKENS


def test_bad_options_raise_before_generating(tiny4: Model) -> None:
    with pytest.raises(ValueError, match="top_p"):
        tiny4.create_completion(PROMPT, top_p=0.0)
    with pytest.raises(TypeError, match="temperature"):
        tiny4.generate(PROMPT, temperature="hot")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stream"):
        tiny4.create_completion(PROMPT, stream="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="logprobs"):
        tiny4.create_completion(PROMPT, logprobs=-1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        tiny4.generate(PROMPT, temprature=0.5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="messages is empty"):
        tiny4.create_chat_completion([])


def test_params_object_with_keyword_overrides(tiny4: Model) -> None:
    params = SamplingParams(temperature=1.0, seed=3, top_k=5)
    assert tiny4.complete(PROMPT, 20, params=params) == tiny4.complete(PROMPT, 20, seed=3, top_k=5)
    assert tiny4.complete(PROMPT, 20, params=params, temperature=0.0) == tiny4.complete(
        PROMPT, 20, temperature=0.0
    )


def test_every_sampling_keyword_reaches_the_sampler(tiny4: Model) -> None:
    """Each method's sampling keywords (repeat_penalty under its llama-cpp-python name) act exactly as the
    same SamplingParams do."""
    params = SamplingParams(temperature=0.7, top_p=0.5, top_k=7, min_p=0.01, presence_penalty=0.4,
                            frequency_penalty=0.3, repetition_penalty=2.5, penalty_decay=0.9,
                            logit_bias={5: 3.0}, stop_tokens=(9,), seed=11)  # fmt: skip
    keywords: dict[str, Any] = dict(temperature=0.7, top_p=0.5, top_k=7, min_p=0.01, presence_penalty=0.4,
                                    frequency_penalty=0.3, penalty_decay=0.9, logit_bias={5: 3.0},
                                    stop_tokens=(9,), seed=11)  # fmt: skip
    messages: list[ChatMessage] = [{"role": "user", "content": "Hi"}]

    def text(result: Any) -> str:
        choice = result["choices"][0]
        return str(choice["text"] if "text" in choice else choice["message"]["content"])

    assert tiny4.complete("The", 24, repetition_penalty=2.5, **keywords) == tiny4.complete(
        "The", 24, params=params
    )
    assert text(tiny4.create_completion("The", max_tokens=24, repeat_penalty=2.5, **keywords)) == text(
        tiny4.create_completion("The", max_tokens=24, params=params)
    )
    assert text(
        tiny4.create_chat_completion(messages, max_tokens=24, repeat_penalty=2.5, **keywords)
    ) == text(tiny4.create_chat_completion(messages, max_tokens=24, params=params))
    assert tiny4.complete("The", 24, params=params) != tiny4.complete(
        "The", 24, seed=11
    )  # the options matter
