"""OpenAI-shaped completions: the result dicts of ``create_completion`` and ``create_chat_completion``.

The shapes are those of the OpenAI completions and chat completions APIs as llama-cpp-python returns
them, so code written for either runs unchanged: ``result["choices"][0]["text"]``,
``result["choices"][0]["message"]["content"]``, ``finish_reason`` ``"stop"`` (a stop string or stop token)
or ``"length"`` (``max_tokens`` reached), ``usage`` with token counts; streaming yields chunk dicts whose
last one carries the ``finish_reason``. They are TypedDicts: plain dicts at run time, typed for checkers.

With a ``constraint`` (:mod:`rwkv_ggml.structured`: OpenAI's ``response_format``, a grammar or a regex) the
text obeys it and ``finish_reason`` is "stop" once it is complete.

The functions here take a model and finished :class:`~rwkv_ggml.sampling.SamplingParams`; the keyword
front end with its defaults and docs is ``rwkv_ggml.Model.create_completion`` (:mod:`rwkv_ggml.api`).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple, TypedDict

import numpy as np

from .chat_format import ChatMessage, TemplateLike, render_chat_prompt
from .generation import Generation, _encode, _tokenizer_for, generate, strip_leading_whitespace
from .sampling import SamplingParams
from .structured import Constraint
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .model import Model

__all__ = [
    "ChatCompletion",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionChunkChoice",
    "ChatCompletionChunkDelta",
    "ChatCompletionMessage",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionLogprobs",
    "CompletionUsage",
    "FinishReason",
    "chat_completion",
    "completion",
]

FinishReason = Literal["stop", "length"]


class CompletionLogprobs(TypedDict):
    """Per generated token: its text, its log-probability, the most likely alternatives with theirs, and
    where its text starts in the completion's ``text``. Prompt tokens (with ``echo``) have no
    log-probability of their own for the first one: ``None``."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(TypedDict):
    text: str
    index: int
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None


class Completion(TypedDict):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class CompletionChunk(TypedDict):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]


class ChatCompletionMessage(TypedDict):
    role: Literal["assistant"]
    content: str


class ChatCompletionChoice(TypedDict):
    index: int
    message: ChatCompletionMessage
    logprobs: None
    finish_reason: FinishReason | None


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage


class ChatCompletionChunkDelta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str


class ChatCompletionChunkChoice(TypedDict):
    index: int
    delta: ChatCompletionChunkDelta
    logprobs: None
    finish_reason: FinishReason | None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]


class _Head(NamedTuple):
    """The fields every result and chunk of one call share."""

    id: str
    created: int
    model: str


def _finish_reason(gen: Generation) -> FinishReason:
    return "length" if gen.finish_reason == "length" else "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class _LogprobTable:
    """Builds the ``logprobs`` entries token by token, with text offsets counted by an incremental decoder
    (a token that ends inside a multi-byte character starts where that character starts)."""

    def __init__(self, tokenizer: Tokenizer, start_offset: int) -> None:
        self.tokenizer = tokenizer
        self._decoder = tokenizer.incremental_decoder()
        self._offset = start_offset
        self.table: CompletionLogprobs = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }

    def _text(self, token: int) -> str:
        return self.tokenizer.token_bytes(token).decode("utf-8", errors="replace")

    def add(self, token: int, logprob: float | None, top: dict[int, float] | None) -> None:
        t = self.table
        t["tokens"].append(self._text(token))
        t["token_logprobs"].append(logprob)
        t["top_logprobs"].append(None if top is None else {self._text(k): v for k, v in top.items()})
        t["text_offset"].append(self._offset)
        self._offset += len(self._decoder.feed([token]))

    def take(self, start: int, end: int | None = None) -> CompletionLogprobs:
        t = self.table
        return {
            "tokens": t["tokens"][start:end],
            "token_logprobs": t["token_logprobs"][start:end],
            "top_logprobs": t["top_logprobs"][start:end],
            "text_offset": t["text_offset"][start:end],
        }


def _prompt_logprobs(
    model: Model, ids: list[int], top_n: int
) -> tuple[list[float | None], list[dict[int, float] | None], np.ndarray, np.ndarray]:
    """Log-probabilities of each prompt token given the ones before it (None for the first), and the
    state and next-token logits after the prompt."""
    all_logits, state = model.eval_sequence(ids, all_logits=True)
    assert all_logits is not None
    lps: list[float | None] = [None]
    tops: list[dict[int, float] | None] = [None]
    for pos in range(1, len(ids)):
        z = all_logits[pos - 1].astype(np.float64)
        z -= z.max()
        logp = z - math.log(float(np.exp(z).sum()))
        lps.append(float(logp[ids[pos]]))
        top = np.argpartition(-logp, top_n - 1)[:top_n] if top_n else np.empty(0, dtype=np.intp)
        tops.append({int(t): float(logp[t]) for t in top[np.argsort(-logp[top], kind="stable")]})
    return lps, tops, state, all_logits[-1].copy()


def completion(
    model: Model,
    prompt: str | Sequence[int],
    *,
    max_tokens: int,
    params: SamplingParams,
    tokenizer: Tokenizer | str | None,
    stream: bool,
    logprobs: int | None,
    echo: bool,
    model_name: str | None = None,
    constraint: Constraint | None = None,
) -> Completion | Iterator[CompletionChunk]:
    """A text completion of ``prompt``; see ``rwkv_ggml.Model.create_completion``."""
    tok = _tokenizer_for(model, tokenizer)
    ids = _encode(tok, prompt)
    if not ids:
        raise ValueError("the prompt is empty: give some text to complete")
    prompt_text = prompt if isinstance(prompt, str) else tok.decode(ids)
    echoed = prompt_text if echo else ""
    base_offset = 0 if echo else len(prompt_text)  # OpenAI counts offsets from the start of the prompt
    table = _LogprobTable(tok, base_offset) if logprobs is not None else None
    if table is not None and echo:
        lps, tops, state, last_logits = _prompt_logprobs(model, ids, min(logprobs or 0, model.n_vocab))
        for token, lp, top in zip(ids, lps, tops, strict=True):
            table.add(token, lp, top)
        gen = generate(
            model,
            [],
            max_tokens,
            state=state,
            logits=last_logits,
            tokenizer=tok,
            params=params,
            logprobs=logprobs,
            constraint=constraint,
        )
    else:
        gen = generate(
            model, ids, max_tokens, tokenizer=tok, params=params, logprobs=logprobs, constraint=constraint
        )
    head = _Head(
        f"cmpl-{uuid.uuid4()}", int(time.time()), model_name if model_name is not None else str(model.path)
    )
    if stream:
        return _completion_chunks(gen, head, echoed, table)
    text = echoed + "".join(gen)
    choice_logprobs = None
    if table is not None:
        for i, token in enumerate(gen.tokens):
            table.add(token, gen.token_logprobs[i], gen.top_logprobs[i])
        # Tokens sampled past the end of the returned text (the ones that completed a stop string) go.
        end = base_offset + len(text)
        kept = len(table.table["tokens"])
        if gen.finish_reason == "stop_string":
            kept = sum(1 for off in table.table["text_offset"] if off < end)
        choice_logprobs = table.take(0, kept)
    return {
        "id": head.id,
        "object": "text_completion",
        "created": head.created,
        "model": head.model,
        "choices": [
            {"text": text, "index": 0, "logprobs": choice_logprobs, "finish_reason": _finish_reason(gen)}
        ],
        "usage": _usage(len(ids), len(gen.tokens)),
    }


def _completion_chunks(
    gen: Generation, head: _Head, echoed: str, table: _LogprobTable | None
) -> Iterator[CompletionChunk]:
    added = 0  # generated tokens already in the table

    def chunk(
        text: str, finish_reason: FinishReason | None, rows: CompletionLogprobs | None
    ) -> CompletionChunk:
        return {
            "id": head.id,
            "object": "text_completion",
            "created": head.created,
            "model": head.model,
            "choices": [{"text": text, "index": 0, "logprobs": rows, "finish_reason": finish_reason}],
        }

    def new_rows() -> CompletionLogprobs | None:
        """The tokens sampled since the previous chunk (their text may still be held back)."""
        nonlocal added
        if table is None:
            return None
        start = len(table.table["tokens"])
        for i in range(added, len(gen.tokens)):
            table.add(gen.tokens[i], gen.token_logprobs[i], gen.top_logprobs[i])
        added = len(gen.tokens)
        return table.take(start)

    if echoed:
        yield chunk(echoed, None, None if table is None else table.take(0))
    for text in gen:
        yield chunk(text, None, new_rows())
    yield chunk("", _finish_reason(gen), new_rows())


def chat_completion(
    model: Model,
    messages: Sequence[ChatMessage],
    *,
    max_tokens: int,
    params: SamplingParams,
    tokenizer: Tokenizer | str | None,
    stream: bool,
    template: TemplateLike | None,
    model_name: str | None = None,
    constraint: Constraint | None = None,
) -> ChatCompletion | Iterator[ChatCompletionChunk]:
    """The assistant's reply to ``messages``; see ``rwkv_ggml.Model.create_chat_completion``."""
    prompt, template_stops = render_chat_prompt(messages, template)
    tok = _tokenizer_for(model, tokenizer)
    ids = tok.encode(prompt)
    stops = tuple(params.stop_strings) + tuple(s for s in template_stops if s not in params.stop_strings)
    gen = generate(
        model, ids, max_tokens, tokenizer=tok, params=params, stop_strings=stops, constraint=constraint
    )
    head = _Head(
        f"chatcmpl-{uuid.uuid4()}",
        int(time.time()),
        model_name if model_name is not None else str(model.path),
    )
    if stream:
        return _chat_chunks(gen, head)
    content = "".join(strip_leading_whitespace(gen))
    return {
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": _finish_reason(gen),
            }
        ],
        "usage": _usage(len(ids), len(gen.tokens)),
    }


def _chat_chunks(gen: Generation, head: _Head) -> Iterator[ChatCompletionChunk]:
    def chunk(delta: ChatCompletionChunkDelta, finish_reason: FinishReason | None) -> ChatCompletionChunk:
        return {
            "id": head.id,
            "object": "chat.completion.chunk",
            "created": head.created,
            "model": head.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    yield chunk({"role": "assistant"}, None)
    for text in strip_leading_whitespace(gen):
        yield chunk({"content": text}, None)
    yield chunk({}, _finish_reason(gen))
