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

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .chat_format import ChatMessage, TemplateLike, render_chat_prompt
from .generation import Generation, _encode, _tokenizer_for, generate, strip_leading_whitespace
from .openai_shapes import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionChunkDelta,
    ChatCompletionMessage,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionUsage,
    FinishReason,
    Head,
    LogprobTable,
    chat_chunk,
    chat_result,
    completion_chunk,
    completion_result,
    usage,
)
from .sampling import SamplingParams, token_logprob
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
        lp, top = token_logprob(all_logits[pos - 1], ids[pos], top_n)
        lps.append(lp)
        tops.append(top)
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
    table = LogprobTable(tok, base_offset) if logprobs is not None else None
    if table is not None and echo:
        lps, tops, state, last_logits = _prompt_logprobs(model, ids, min(logprobs or 0, model.n_vocab))
        table.extend(ids, lps, tops)
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
    head = Head.new("cmpl", model_name if model_name is not None else str(model.path))
    if stream:
        return _completion_chunks(gen, head, echoed, table)
    text = echoed + "".join(gen)
    rows = None
    if table is not None:
        table.extend(gen.tokens, gen.token_logprobs, gen.top_logprobs)
        # Tokens sampled past the end of the returned text (the ones that completed a stop string) go.
        rows = table.before(base_offset + len(text)) if gen.finish_reason == "stop_string" else table.take(0)
    return completion_result(head, text, _reason(gen), rows, usage(len(ids), len(gen.tokens)))


def _reason(gen: Generation) -> str:
    assert gen.finish_reason is not None
    return gen.finish_reason


def _completion_chunks(
    gen: Generation, head: Head, echoed: str, table: LogprobTable | None
) -> Iterator[CompletionChunk]:
    added = 0  # generated tokens already in the table

    def new_rows() -> CompletionLogprobs | None:
        """The tokens sampled since the previous chunk (their text may still be held back)."""
        nonlocal added
        if table is None:
            return None
        rows = table.extend(gen.tokens[added:], gen.token_logprobs[added:], gen.top_logprobs[added:])
        added = len(gen.tokens)
        return rows

    if echoed:
        yield completion_chunk(head, echoed, None, None if table is None else table.take(0))
    for text in gen:
        yield completion_chunk(head, text, None, new_rows())
    yield completion_chunk(head, "", _reason(gen), new_rows())


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
    head = Head.new("chatcmpl", model_name if model_name is not None else str(model.path))
    if stream:
        return _chat_chunks(gen, head)
    content = "".join(strip_leading_whitespace(gen))
    return chat_result(head, content, _reason(gen), None, usage(len(ids), len(gen.tokens)))


def _chat_chunks(gen: Generation, head: Head) -> Iterator[ChatCompletionChunk]:
    yield chat_chunk(head, {"role": "assistant"}, None)
    for text in strip_leading_whitespace(gen):
        yield chat_chunk(head, {"content": text}, None)
    yield chat_chunk(head, {}, _reason(gen))
