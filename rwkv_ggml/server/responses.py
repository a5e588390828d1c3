"""The OpenAI response bodies the routes send: completions, chat completions, their stream chunks, usage
and log-probabilities. The shapes are those of :mod:`rwkv_ggml.completions` (the in-process API), plus
``usage.prompt_tokens_details.cached_tokens`` (prompt tokens the state cache saved from being read)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..tokenizer import Tokenizer
from .engine import Usage


class Head:
    """The fields every result and chunk of one request share."""

    def __init__(self, prefix: str, model: str) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def finish_reason(reason: str | None) -> str | None:
    """The OpenAI ``finish_reason`` ("stop" or "length") of an engine finish reason."""
    return None if reason is None else ("length" if reason == "length" else "stop")


def completion_body(
    head: Head, text: str, reason: str, logprobs: dict[str, Any] | None, usage: Usage
) -> dict[str, Any]:
    return {
        "id": head.id,
        "object": "text_completion",
        "created": head.created,
        "model": head.model,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason(reason)}],
        "usage": usage_body(usage),
    }


def completion_chunk(
    head: Head, text: str, reason: str | None, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": head.id,
        "object": "text_completion",
        "created": head.created,
        "model": head.model,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason(reason)}],
    }


def chat_body(
    head: Head, content: str, reason: str, logprobs: dict[str, Any] | None, usage: Usage
) -> dict[str, Any]:
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
        "usage": usage_body(usage),
    }


def chat_chunk(
    head: Head, delta: dict[str, str], reason: str | None, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
        "model": head.model,
        "choices": [
            {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason(reason)}
        ],
    }


def usage_chunk(head: Head, obj: str, usage: Usage) -> dict[str, Any]:
    """The extra last chunk of ``stream_options.include_usage``: no choices, the usage."""
    return {
        "id": head.id,
        "object": obj,
        "created": head.created,
        "model": head.model,
        "choices": [],
        "usage": usage_body(usage),
    }


class LeadingWhitespace:
    """Drops the whitespace at the start of a streamed reply (the space a model writes after
    ``"Assistant:"``), as the in-process ``create_chat_completion`` does."""

    def __init__(self) -> None:
        self.started = False

    def __call__(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        return text


class CompletionLogprobs:
    """The completions API's ``logprobs`` object (tokens, token_logprobs, top_logprobs, text_offset),
    built token by token; offsets count characters from the start of the prompt unless echoed."""

    def __init__(self, tokenizer: Tokenizer, start_offset: int) -> None:
        self.tokenizer = tokenizer
        self.decoder = tokenizer.incremental_decoder()
        self.offset = start_offset

    def text(self, token: int) -> str:
        return self.tokenizer.token_bytes(token).decode("utf-8", errors="replace")

    def rows(self, tokens: list[int], lps: list[float], tops: list[dict[int, float]]) -> dict[str, Any]:
        offsets = []
        for token in tokens:
            offsets.append(self.offset)
            self.offset += len(self.decoder.feed([token]))
        return {
            "tokens": [self.text(t) for t in tokens],
            "token_logprobs": lps,
            "top_logprobs": [{self.text(k): v for k, v in top.items()} for top in tops],
            "text_offset": offsets,
        }


def trim_logprobs(rows: dict[str, Any], end: int) -> dict[str, Any]:
    """The rows of the tokens whose text starts before ``end`` (the tokens that completed a stop string,
    which is cut from the text, go)."""
    kept = sum(1 for off in rows["text_offset"] if off < end)
    return {key: value[:kept] for key, value in rows.items()}


def chat_logprobs(
    tokenizer: Tokenizer, tokens: list[int], lps: list[float], tops: list[dict[int, float]]
) -> dict[str, Any]:
    """The chat API's ``logprobs``: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``."""

    def entry(token: int, lp: float) -> dict[str, Any]:
        raw = tokenizer.token_bytes(token)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(raw)}

    content = []
    for token, lp, top in zip(tokens, lps, tops, strict=True):
        item = entry(token, lp)
        item["top_logprobs"] = [entry(k, v) for k, v in top.items()]
        content.append(item)
    return {"content": content}
