"""The generation routes' work: ``POST /v1/completions`` and ``POST /v1/chat/completions``.

Each validates the body, checks the key, the model name and the limits, tokenizes and admits the request to
the engine before the first byte of the answer, then either collects its events into one OpenAI body or
streams them as server-sent events (``data: {...}`` lines, then ``data: [DONE]``). An error after the
stream started goes out as one ``data: {"error": ...}`` event and the stream ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..chat_format import ChatMessage, ChatTemplate, render_chat_prompt
from ..generation import LeadingWhitespace
from ..openai_shapes import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    CompletionUsage,
    Head,
    LogprobTable,
    chat_chunk,
    chat_logprobs,
    chat_result,
    chat_usage_chunk,
    completion_chunk,
    completion_result,
    completion_usage_chunk,
    usage,
)
from .context import ServerContext
from .engine import EngineEvent, GenerationRequest, RequestHandle, Usage
from .schemas import APIError, ChatCompletionRequest, CompletionRequest, bad_field

# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25


def _usage(used: Usage) -> CompletionUsage:
    return usage(used.prompt_tokens, used.completion_tokens, used.cached_tokens)


def _event_error(event: EngineEvent) -> APIError | None:
    """The error a final event stands for (None for a normal finish)."""
    reason = event.finish_reason
    if reason == "invalid":
        return APIError(400, event.error or "invalid request", param="prompt", code="invalid_value")
    if reason == "timeout":
        return APIError(504, event.error or "the request timed out", type="server_error", code="timeout")
    if reason == "cancelled":
        return APIError(
            503,
            "the request was cancelled: the server is shutting down",
            type="server_error",
            code="shutting_down",
        )
    if reason == "error":
        return APIError(500, f"the model failed: {event.error}", type="server_error", code="server_error")
    return None


async def _collect(handle: RequestHandle, request: Request) -> list[EngineEvent]:
    """All of a request's events; a client that goes away meanwhile cancels the request."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)
        handle.engine.cancel(handle)

    watcher = asyncio.ensure_future(watch())
    try:
        return [event async for event in handle.events()]
    finally:
        watcher.cancel()


def _sse(chunks: AsyncIterator[Mapping[str, object]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
        except APIError as exc:
            yield b"data: " + json.dumps(exc.body()).encode() + b"\n\n"
            return
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def completion(
    server: ServerContext, body: CompletionRequest, request: Request
) -> Response | Completion:
    """POST /v1/completions."""
    server.check_key(request)
    server.check_model(body.model)
    if body.suffix:
        raise bad_field("suffix", "inserting text before a suffix is not supported")
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise bad_field("prompt", "give one prompt per request (a list of prompts is not supported)")
        prompt = prompt[0]
    tok = server.tokenizer
    if isinstance(prompt, str):
        ids, prompt_text = await server.encode(prompt), prompt
    else:
        ids = list(prompt)  # type: ignore[arg-type]
        prompt_text = None
    server.check_ids(ids, "prompt")
    if prompt_text is None:
        prompt_text = tok.decode(ids)
    if body.echo and body.logprobs is not None:
        raise bad_field("logprobs", "logprobs of echoed prompt tokens are not supported; drop echo")
    gen = GenerationRequest(
        ids,
        server.max_tokens(body.max_tokens, "max_tokens"),
        server.params(body, ()),
        body.logprobs,
        await run_in_threadpool(server.constraint, body),  # compiling a schema can take a while
    )
    handle = server.submit(gen)
    head = Head.new("cmpl", server.model_name)
    echoed = prompt_text if body.echo else ""
    table = LogprobTable(tok, len(prompt_text)) if body.logprobs is not None else None
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return _sse(_completion_stream(handle, head, echoed, table, usage))
    events = await _collect(handle, request)
    last = events[-1]
    error = _event_error(last)
    if error is not None:
        raise error
    text = echoed + "".join(e.text for e in events)
    rows = None
    if table is not None:
        rows = table.extend(
            [t for e in events for t in e.tokens],
            [x for e in events for x in e.token_logprobs],
            [x for e in events for x in e.top_logprobs],
        )
        if last.finish_reason == "stop":
            rows = table.before(len(prompt_text) + len(text))
    assert last.usage is not None and last.finish_reason is not None
    return completion_result(head, text, last.finish_reason, rows, _usage(last.usage))


async def chat_completion(
    server: ServerContext, body: ChatCompletionRequest, request: Request
) -> Response | ChatCompletion:
    """POST /v1/chat/completions."""
    server.check_key(request)
    server.check_model(body.model)
    messages: list[ChatMessage] = []
    for m in body.messages:
        content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
        role = "system" if m.role == "developer" else m.role
        messages.append({"role": role, "content": content})
    template = ChatTemplate()
    try:
        prompt, template_stops = render_chat_prompt(messages, template)
    except (TypeError, ValueError) as exc:
        raise bad_field("messages", str(exc)) from None
    ids = server.check_ids(await server.encode(prompt), "messages")
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    top = (body.top_logprobs or 0) if body.logprobs else None
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_field("top_logprobs", "needs logprobs: true")
    gen = GenerationRequest(
        ids,
        server.max_tokens(limit, param),
        server.params(body, template_stops),
        top,
        await run_in_threadpool(server.constraint, body),
        template.reply_suffix,
    )
    handle = server.submit(gen)
    head = Head.new("chatcmpl", server.model_name)
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return _sse(_chat_stream(handle, head, server, usage))
    events = await _collect(handle, request)
    last = events[-1]
    error = _event_error(last)
    if error is not None:
        raise error
    strip = LeadingWhitespace()
    content = "".join(strip(e.text) for e in events)
    logprobs = None
    if top is not None:
        logprobs = chat_logprobs(
            server.tokenizer,
            [t for e in events for t in e.tokens],
            [x for e in events for x in e.token_logprobs],
            [x for e in events for x in e.top_logprobs],
        )
    assert last.usage is not None and last.finish_reason is not None
    return chat_result(head, content, last.finish_reason, logprobs, _usage(last.usage))


async def _completion_stream(
    handle: RequestHandle, head: Head, echoed: str, table: LogprobTable | None, include_usage: bool
) -> AsyncIterator[CompletionChunk]:
    if echoed:
        yield completion_chunk(head, echoed, None)
    async for event in handle.events():
        error = _event_error(event)
        if error is not None:
            raise error
        rows = table.extend(event.tokens, event.token_logprobs, event.top_logprobs) if table else None
        if event.text or event.finish_reason is not None or (rows and rows["tokens"]):
            yield completion_chunk(head, event.text, event.finish_reason, rows)
        if event.usage is not None and include_usage:
            yield completion_usage_chunk(head, _usage(event.usage))


async def _chat_stream(
    handle: RequestHandle, head: Head, server: ServerContext, include_usage: bool
) -> AsyncIterator[ChatCompletionChunk]:
    yield chat_chunk(head, {"role": "assistant", "content": ""}, None)
    strip = LeadingWhitespace()
    with_logprobs = handle.request.logprobs is not None
    async for event in handle.events():
        error = _event_error(event)
        if error is not None:
            raise error
        text = strip(event.text)
        logprobs = (
            chat_logprobs(server.tokenizer, event.tokens, event.token_logprobs, event.top_logprobs)
            if with_logprobs and event.tokens
            else None
        )
        if text or logprobs:
            yield chat_chunk(head, {"content": text}, None, logprobs)
        if event.finish_reason is not None:
            yield chat_chunk(head, {}, event.finish_reason)
        if event.usage is not None and include_usage:
            yield chat_usage_chunk(head, _usage(event.usage))
