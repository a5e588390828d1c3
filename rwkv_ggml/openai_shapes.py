"""The OpenAI completion and chat-completion shapes, as TypedDicts, and the one set of builders that makes
them: the in-process API (:mod:`rwkv_ggml.completions`) and the HTTP server build every result, stream
chunk, usage and log-probability object here, so the two cannot drift apart.

The shapes are those of the OpenAI completions and chat completions APIs as llama-cpp-python returns
them: ``finish_reason`` is ``"stop"`` (a stop string, a stop token, or a constrained text that is
complete) or ``"length"`` (``max_tokens`` reached). TypedDicts are plain dicts at run time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Literal, NamedTuple, NotRequired, TypedDict

from .tokenizer import Tokenizer

FinishReason = Literal["stop", "length"]


class CompletionLogprobs(TypedDict):
    """Per token: its text, its log-probability, the most likely alternatives with theirs, and where its
    text starts (characters from the start of the prompt, OpenAI's convention). Echoed prompt tokens
    have no log-probability for the first one: ``None``."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class ChatTokenLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int]


class ChatContentLogprob(ChatTokenLogprob):
    top_logprobs: list[ChatTokenLogprob]


class ChatLogprobs(TypedDict):
    content: list[ChatContentLogprob]


class PromptTokensDetails(TypedDict):
    cached_tokens: int


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # Only where a state cache can save prompt tokens from being read (the server).
    prompt_tokens_details: NotRequired[PromptTokensDetails]


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
    usage: NotRequired[CompletionUsage]


class ChatCompletionMessage(TypedDict):
    role: Literal["assistant"]
    content: str


class ChatCompletionChoice(TypedDict):
    index: int
    message: ChatCompletionMessage
    logprobs: ChatLogprobs | None
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
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: NotRequired[CompletionUsage]


class Head(NamedTuple):
    """The fields every result and chunk of one request share."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> Head:
        return cls(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model)


def finish_reason(reason: str | None) -> FinishReason | None:
    """The OpenAI reason for a generation's own one: running out of tokens is "length", every other
    ending (stop string, stop token, end of a constrained text) "stop"."""
    return None if reason is None else ("length" if reason == "length" else "stop")


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> CompletionUsage:
    body: CompletionUsage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        body["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return body


def completion_chunk(
    head: Head, text: str, reason: str | None, logprobs: CompletionLogprobs | None = None
) -> CompletionChunk:
    return {
        "id": head.id,
        "object": "text_completion",
        "created": head.created,
        "model": head.model,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason(reason)}],
    }


def completion_result(
    head: Head, text: str, reason: str, logprobs: CompletionLogprobs | None, usage: CompletionUsage
) -> Completion:
    chunk = completion_chunk(head, text, reason, logprobs)
    return {**chunk, "usage": usage}


def chat_chunk(
    head: Head, delta: ChatCompletionChunkDelta, reason: str | None, logprobs: ChatLogprobs | None = None
) -> ChatCompletionChunk:
    return {
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
        "model": head.model,
        "choices": [
            {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason(reason)}
        ],
    }


def chat_result(
    head: Head, content: str, reason: str, logprobs: ChatLogprobs | None, usage: CompletionUsage
) -> ChatCompletion:
    return {
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": logprobs,
                "finish_reason": finish_reason(reason),
            }
        ],
        "usage": usage,
    }


def completion_usage_chunk(head: Head, usage: CompletionUsage) -> CompletionChunk:
    """The extra last chunk of ``stream_options.include_usage``: no choices, the usage."""
    return {**completion_chunk(head, "", None), "choices": [], "usage": usage}


def chat_usage_chunk(head: Head, usage: CompletionUsage) -> ChatCompletionChunk:
    return {**chat_chunk(head, {}, None), "choices": [], "usage": usage}


class LogprobTable:
    """The completions API's ``logprobs`` object, built token by token, with text offsets counted by an
    incremental decoder (a token that ends inside a multi-byte character starts where that character
    starts)."""

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

    def __len__(self) -> int:
        return len(self.table["tokens"])

    def add(self, token: int, logprob: float | None, top: dict[int, float] | None) -> None:
        t = self.table
        t["tokens"].append(self._text(token))
        t["token_logprobs"].append(logprob)
        t["top_logprobs"].append(None if top is None else {self._text(k): v for k, v in top.items()})
        t["text_offset"].append(self._offset)
        self._offset += len(self._decoder.feed([token]))

    def extend(
        self, tokens: Sequence[int], lps: Sequence[float | None], tops: Sequence[dict[int, float] | None]
    ) -> CompletionLogprobs:
        """Adds the tokens and returns their rows."""
        start = len(self)
        for token, lp, top in zip(tokens, lps, tops, strict=True):
            self.add(token, lp, top)
        return self.take(start)

    def take(self, start: int, end: int | None = None) -> CompletionLogprobs:
        t = self.table
        return {
            "tokens": t["tokens"][start:end],
            "token_logprobs": t["token_logprobs"][start:end],
            "top_logprobs": t["top_logprobs"][start:end],
            "text_offset": t["text_offset"][start:end],
        }

    def before(self, end: int) -> CompletionLogprobs:
        """The rows of the tokens whose text starts before offset ``end``: the tokens that completed a stop
        string, which is cut from the text, go."""
        return self.take(0, sum(1 for off in self.table["text_offset"] if off < end))


def chat_logprobs(
    tokenizer: Tokenizer, tokens: Sequence[int], lps: Sequence[float], tops: Sequence[dict[int, float]]
) -> ChatLogprobs:
    """The chat API's ``logprobs``: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``."""

    def entry(token: int, lp: float) -> ChatTokenLogprob:
        raw = tokenizer.token_bytes(token)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(raw)}

    content: list[ChatContentLogprob] = []
    for token, lp, top in zip(tokens, lps, tops, strict=True):
        content.append({**entry(token, lp), "top_logprobs": [entry(k, v) for k, v in top.items()]})
    return {"content": content}
