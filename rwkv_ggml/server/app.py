"""The HTTP application: ``create_app(config_or_engine) -> FastAPI``, its error handlers and its routes.

Routes are thin: the generation routes' work is in :mod:`~rwkv_ggml.server.generation_routes`, the checks
they share in :mod:`~rwkv_ggml.server.context`. Every error is the OpenAI error object with a 4xx/5xx
status (FastAPI's 422 for a bad body becomes a 400 naming the field); none carries a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..generation import embed
from ..openai_shapes import ChatCompletion, Completion
from . import generation_routes as routes
from . import metrics
from .config import ServerConfig
from .context import ServerContext
from .engine import Engine
from .schemas import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    bad_field,
    error_body,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"


def engine_from_config(config: ServerConfig) -> Engine:
    """Loads the model the config names (the packaged default model if none) into a new engine."""
    from ..api import Model
    from ..generation import default_model_path

    model = Model(config.model if config.model is not None else default_model_path(), threads=config.threads)
    return Engine.for_model(model, config)


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
    param = ".".join(p for p in loc if not _is_union_alternative(p)) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return APIError(400, "the request body is not valid JSON", code="invalid_json")
    if kind == "missing" and param is None:
        return APIError(400, "the request needs a JSON body", code="invalid_json")
    if kind == "extra_forbidden":
        return APIError(400, f"unknown field '{param}'", param=param, code="unknown_field")
    if kind == "missing":
        return APIError(400, f"'{param}' is required", param=param, code="missing_field")
    message = str(first.get("msg", "invalid value"))
    if param is None:
        return APIError(400, f"the request body: {message}", code="invalid_value")
    return APIError(400, f"{param}: {message}", param=param, code="invalid_value")


def _is_union_alternative(part: str) -> bool:
    """A location part naming a type (``str``, ``list[int]``, ``TextPart``...), not a field or an index."""
    return (
        part in ("str", "int", "float", "bool")
        or part.startswith(("list[", "dict[", "function-"))
        or (part[:1].isupper())
    )


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
    server = ServerContext(engine, config)

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


def _add_info_routes(app: FastAPI, server: ServerContext) -> None:
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
        ids = [
            server.check_ids(await server.encode(x) if isinstance(x, str) else list(x), "input")
            for x in inputs
        ]

        def job(model: Any) -> list[np.ndarray]:
            return [embed(model, x, tok) for x in ids]

        vectors = await server.admitted(server.engine.run_job(job))
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


def _model_card(server: ServerContext) -> dict[str, Any]:
    return {"id": server.model_name, "object": "model", "created": 0, "owned_by": "rwkv_ggml"}


def _add_generation_routes(app: FastAPI, server: ServerContext) -> None:
    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response | Completion:
        return await routes.completion(server, body, request)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response | ChatCompletion:
        return await routes.chat_completion(server, body, request)


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
