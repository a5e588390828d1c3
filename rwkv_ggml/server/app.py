"""The HTTP application: ``create_app(config_or_engine) -> FastAPI``.

Routes are thin: validate the body (schemas), check the key, the model name and the limits, tokenize and
admit the request to the :class:`~rwkv_ggml.server.engine.Engine` before the first byte of the answer, then
either collect its events into one OpenAI body or stream them as server-sent events (``data: {...}``
lines, then ``data: [DONE]``). An error after the stream started goes out as one ``data: {"error": ...}``
event and the stream ends. Every error is the OpenAI error object with a 4xx/5xx status; none carries a
traceback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..chat_format import ChatMessage, render_chat_prompt
from ..generation import embed
from ..sampling import SamplingParams
from . import metrics
from . import responses as R
from .config import ServerConfig
from .engine import Engine, EngineEvent, GenerationRequest, QueueFullError, RequestHandle, ShuttingDownError
from .schemas import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    bad_field,
    error_body,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25
# Seconds a client should wait before retrying after a 429.
RETRY_AFTER_S = 1


def engine_from_config(config: ServerConfig) -> Engine:
    """Loads the model the config names (the packaged default model if none) into a new engine."""
    from ..api import Model
    from ..generation import default_model_path

    model = Model(config.model if config.model is not None else default_model_path(), threads=config.threads)
    try:
        return Engine(
            model,
            max_batch=config.max_batch,
            max_queue=config.max_queue,
            state_cache_bytes=int(config.state_cache_mb * 2**20),
            request_timeout=config.request_timeout,
            prefill_chunk=config.prefill_chunk,
        )
    except BaseException:
        model.close()
        raise


class _Server:
    """What the routes share: the engine, the limits and the served model's name."""

    def __init__(self, engine: Engine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.model_name = config.model_name or Path(engine.model.path).stem
        self.tokenizer = engine.tokenizer
        self.counters = metrics.Counters()

    def check_key(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or given[len("Bearer ") :] != key:
            what = "no API key given" if not given else "the API key is wrong"
            raise APIError(
                401,
                f"{what}: send 'Authorization: Bearer KEY' with the key the server was started with",
                type="invalid_request_error",
                code="invalid_api_key",
            )

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(
                404,
                f"the model '{name}' does not exist; this server serves '{self.model_name}'",
                param="model",
                code="model_not_found",
            )

    def check_ids(self, ids: list[int], param: str) -> list[int]:
        if not ids:
            raise bad_field(param, "the prompt is empty")
        n_vocab = self.engine.model.n_vocab
        bad = [t for t in ids if not 0 <= t < n_vocab]
        if bad:
            raise bad_field(param, f"token {bad[0]} is outside the model's vocabulary [0, {n_vocab})")
        if len(ids) > self.config.max_prompt_tokens:
            raise APIError(
                400,
                f"{param}: the prompt has {len(ids)} tokens; this server accepts at most "
                f"{self.config.max_prompt_tokens}",
                param=param,
                code="context_length_exceeded",
            )
        return ids

    def max_tokens(self, value: int | None, param: str) -> int:
        if value is None:
            return self.config.default_max_tokens
        if value > self.config.max_tokens_cap:
            raise bad_field(param, f"{value} is over this server's cap of {self.config.max_tokens_cap}")
        return value

    def params(
        self, body: CompletionRequest | ChatCompletionRequest, extra_stops: tuple[str, ...]
    ) -> SamplingParams:
        options: dict[str, Any] = {}
        for field, name in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("min_p", "min_p"),
            ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"),
            ("repeat_penalty", "repetition_penalty"),
            ("penalty_decay", "penalty_decay"),
            ("seed", "seed"),
        ):
            value = getattr(body, field)
            if value is not None:
                options[name] = value
        if body.logit_bias:
            bias = {}
            for key, value in body.logit_bias.items():
                try:
                    token = int(key)
                except ValueError:
                    raise bad_field("logit_bias", f"key {key!r} is not a token id") from None
                if not 0 <= token < self.engine.model.n_vocab:
                    raise bad_field("logit_bias", f"token {token} is outside the vocabulary")
                bias[token] = value
            options["logit_bias"] = bias
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if any(not s for s in stops):
            raise bad_field("stop", "stop strings must not be empty")
        stops += [s for s in extra_stops if s not in stops]
        options["stop_strings"] = tuple(stops)
        try:
            return SamplingParams(**options)
        except (TypeError, ValueError) as exc:
            raise APIError(400, str(exc), code="invalid_value") from None

    def check_response_format(self, body: CompletionRequest | ChatCompletionRequest) -> None:
        fmt = body.response_format
        if fmt is not None and fmt.type != "text":
            raise bad_field(
                "response_format", f"type {fmt.type!r} is not supported by this server (only 'text')"
            )

    def submit(self, request: GenerationRequest) -> RequestHandle:
        try:
            return self.engine.submit(request)
        except QueueFullError as exc:
            raise APIError(
                429,
                f"{exc}; retry later",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        except ShuttingDownError as exc:
            raise APIError(503, str(exc), type="server_error", code="shutting_down") from None


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


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
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


def _error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(_validation_api_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        body = error_body(str(exc.detail), "invalid_request_error", None, code)
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        message = f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"
        return JSONResponse(error_body(message, "server_error", None, "server_error"), status_code=500)


def _validation_api_error(exc: RequestValidationError) -> APIError:
    """A 400 naming the first bad field (FastAPI would answer 422 with its own shape)."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "the request body is not valid")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # a union field reports each alternative's failure under the alternative's name: keep the field path
    param = ".".join(p for p in loc if not p.startswith(("str", "list[", "int", "function-"))) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return APIError(400, "the request body is not valid JSON", code="invalid_json")
    if kind == "missing" and param is None:
        return APIError(400, "the request needs a JSON body", code="invalid_json")
    if kind == "extra_forbidden":
        return APIError(400, f"unknown field '{param}'", param=param, code="unknown_field")
    if kind == "missing":
        return APIError(400, f"'{param}' is required", param=param, code="missing_field")
    return APIError(400, f"{param}: {first.get('msg', 'invalid value')}", param=param, code="invalid_value")


def create_app(config_or_engine: ServerConfig | Engine, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI application serving the OpenAI routes.

    ``config_or_engine``: a :class:`ServerConfig` (the model is loaded now and closed when the app shuts
    down) or an :class:`Engine` the caller owns (then ``config`` gives the limits, default ServerConfig()).
    """
    if isinstance(config_or_engine, Engine):
        engine, owned = config_or_engine, False
        config = config if config is not None else ServerConfig()
    elif isinstance(config_or_engine, ServerConfig):
        config, owned = config_or_engine, True
        engine = engine_from_config(config)
    else:
        raise TypeError(
            f"create_app takes a ServerConfig or an Engine, got {type(config_or_engine).__name__}"
        )
    server = _Server(engine, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await asyncio.get_running_loop().run_in_executor(None, engine.close)

    app = FastAPI(title="rwkv_ggml", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    app.state.engine = engine
    _install_error_handlers(app)
    app.add_middleware(metrics.CountingMiddleware, counters=server.counters)
    _add_info_routes(app, server)
    _add_generation_routes(app, server)
    _add_page_routes(app)
    return app


def _add_info_routes(app: FastAPI, server: _Server) -> None:
    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        server.check_key(request)
        return {"object": "list", "data": [_model_card(server)]}

    @app.get("/v1/models/{name}")
    async def model(name: str, request: Request) -> dict[str, Any]:
        server.check_key(request)
        server.check_model(name)
        return _model_card(server)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = server.engine.stats()
        model = server.engine.model
        return {
            "status": "ok",
            "model": server.model_name,
            "version": f"v{model.version}",
            "format": model.dtype,
            "running": stats.running,
            "waiting": stats.waiting,
            "batch_size": stats.batch_size,
            "tokens_per_second": round(stats.tokens_per_second, 2),
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(
            metrics.render(server.engine.stats(), server.counters, server.model_name),
            media_type="text/plain; version=0.0.4",
        )

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
        server.check_key(request)
        server.check_model(body.model)
        if body.dimensions is not None:
            raise bad_field("dimensions", "this model's embeddings have a fixed size; leave it out")
        inputs: list[str | list[int]]
        if isinstance(body.input, str) or (body.input and isinstance(body.input[0], int)):
            inputs = [body.input]
        else:
            inputs = list(body.input)  # type: ignore[arg-type]
        if not inputs:
            raise bad_field("input", "give at least one text")
        tok = server.tokenizer
        ids = [server.check_ids(tok.encode(x) if isinstance(x, str) else list(x), "input") for x in inputs]

        def job(model: Any) -> list[np.ndarray]:
            return [embed(model, x, tok) for x in ids]

        try:
            vectors = await server.engine.run_job(job)
        except ShuttingDownError as exc:
            raise APIError(503, str(exc), type="server_error", code="shutting_down") from None
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                if body.encoding_format == "base64"
                else [float(x) for x in v],
            }
            for i, v in enumerate(vectors)
        ]
        n = sum(len(x) for x in ids)
        return {
            "object": "list",
            "data": data,
            "model": server.model_name,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }


def _model_card(server: _Server) -> dict[str, Any]:
    return {"id": server.model_name, "object": "model", "created": 0, "owned_by": "rwkv_ggml"}


def _add_generation_routes(app: FastAPI, server: _Server) -> None:
    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response | dict[str, Any]:
        server.check_key(request)
        server.check_model(body.model)
        server.check_response_format(body)
        if body.suffix:
            raise bad_field("suffix", "inserting text before a suffix is not supported")
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise bad_field("prompt", "give one prompt per request (a list of prompts is not supported)")
            prompt = prompt[0]
        tok = server.tokenizer
        if isinstance(prompt, str):
            ids, prompt_text = tok.encode(prompt), prompt
        else:
            ids = list(prompt)  # type: ignore[arg-type]
            prompt_text = None
        server.check_ids(ids, "prompt")
        if prompt_text is None:
            prompt_text = tok.decode(ids)
        if body.echo and body.logprobs is not None:
            raise bad_field("logprobs", "logprobs of echoed prompt tokens are not supported; drop echo")
        gen = GenerationRequest(
            ids, server.max_tokens(body.max_tokens, "max_tokens"), server.params(body, ()), body.logprobs
        )
        handle = server.submit(gen)
        head = R.Head("cmpl", server.model_name)
        echoed = prompt_text if body.echo else ""
        table = R.CompletionLogprobs(tok, len(prompt_text)) if body.logprobs is not None else None
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
            tokens = [t for e in events for t in e.tokens]
            rows = table.rows(
                tokens,
                [x for e in events for x in e.token_logprobs],
                [x for e in events for x in e.top_logprobs],
            )
            if last.finish_reason == "stop":
                rows = R.trim_logprobs(rows, len(prompt_text) + len(text))
        assert last.usage is not None and last.finish_reason is not None
        return R.completion_body(head, text, last.finish_reason, rows, last.usage)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response | dict[str, Any]:
        server.check_key(request)
        server.check_model(body.model)
        server.check_response_format(body)
        messages: list[ChatMessage] = []
        for m in body.messages:
            content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
            role = "system" if m.role == "developer" else m.role
            messages.append({"role": role, "content": content})
        try:
            prompt, template_stops = render_chat_prompt(messages, None)
        except (TypeError, ValueError) as exc:
            raise bad_field("messages", str(exc)) from None
        ids = server.check_ids(server.tokenizer.encode(prompt), "messages")
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        top = (body.top_logprobs or 0) if body.logprobs else None
        if body.top_logprobs is not None and not body.logprobs:
            raise bad_field("top_logprobs", "needs logprobs: true")
        gen = GenerationRequest(
            ids, server.max_tokens(limit, param), server.params(body, template_stops), top
        )
        handle = server.submit(gen)
        head = R.Head("chatcmpl", server.model_name)
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return _sse(_chat_stream(handle, head, server, usage))
        events = await _collect(handle, request)
        last = events[-1]
        error = _event_error(last)
        if error is not None:
            raise error
        strip = R.LeadingWhitespace()
        content = "".join(strip(e.text) for e in events)
        logprobs = None
        if top is not None:
            logprobs = R.chat_logprobs(
                server.tokenizer,
                [t for e in events for t in e.tokens],
                [x for e in events for x in e.token_logprobs],
                [x for e in events for x in e.top_logprobs],
            )
        assert last.usage is not None and last.finish_reason is not None
        return R.chat_body(head, content, last.finish_reason, logprobs, last.usage)


async def _completion_stream(
    handle: RequestHandle, head: R.Head, echoed: str, table: R.CompletionLogprobs | None, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    if echoed:
        yield R.completion_chunk(head, echoed, None)
    async for event in handle.events():
        error = _event_error(event)
        if error is not None:
            raise error
        rows = table.rows(event.tokens, event.token_logprobs, event.top_logprobs) if table else None
        if event.text or event.finish_reason is not None or (rows and rows["tokens"]):
            yield R.completion_chunk(head, event.text, event.finish_reason, rows)
        if event.usage is not None and include_usage:
            yield R.usage_chunk(head, "text_completion", event.usage)


async def _chat_stream(
    handle: RequestHandle, head: R.Head, server: _Server, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    yield R.chat_chunk(head, {"role": "assistant", "content": ""}, None)
    strip = R.LeadingWhitespace()
    with_logprobs = handle.request.logprobs is not None
    async for event in handle.events():
        error = _event_error(event)
        if error is not None:
            raise error
        text = strip(event.text)
        logprobs = (
            R.chat_logprobs(server.tokenizer, event.tokens, event.token_logprobs, event.top_logprobs)
            if with_logprobs and event.tokens
            else None
        )
        if text or logprobs:
            yield R.chat_chunk(head, {"content": text}, None, logprobs)
        if event.finish_reason is not None:
            yield R.chat_chunk(head, {}, event.finish_reason)
        if event.usage is not None and include_usage:
            yield R.usage_chunk(head, "chat.completion.chunk", event.usage)


def _add_page_routes(app: FastAPI) -> None:
    """The chat page (``static/index.html``) at ``/`` and its files under ``/static``, when present."""
    if STATIC_DIR.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", response_model=None)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return Response(page.read_bytes(), media_type="text/html; charset=utf-8")
        return PlainTextResponse(
            "rwkv_ggml server: the OpenAI-compatible API is under /v1 (see /v1/models, /health, /metrics).\n"
        )
