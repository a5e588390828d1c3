"""What the routes share (:class:`ServerContext`): the engine, the limits, and the checks that turn a request
body into a :class:`~rwkv_ggml.server.engine.GenerationRequest` or an OpenAI error."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..errors import ConstraintError
from ..sampling import SamplingParams
from ..structured import Constraint, constraint_from_options
from . import metrics
from .config import ServerConfig
from .engine import Engine, GenerationRequest, QueueFullError, RequestHandle, ShuttingDownError
from .schemas import APIError, ChatCompletionRequest, CompletionRequest, bad_field

T = TypeVar("T")

# Seconds a client should wait before retrying after a 429.
RETRY_AFTER_S = 1


class ServerContext:
    """What the routes share: the engine, the limits, the served model's name and the checks every route
    makes (key, model name, prompt length, max_tokens cap, sampling fields, structured output)."""

    def __init__(self, engine: Engine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.model_name = config.model_name or Path(engine.model.path).stem
        self.tokenizer = engine.tokenizer
        self.counters = metrics.Counters()

    async def encode(self, text: str) -> list[int]:
        """The text's token ids, off the event loop (a long prompt takes a while to tokenize)."""
        ids: list[int] = await run_in_threadpool(self.tokenizer.encode, text)
        return ids

    def check_key(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[len("Bearer ") :] if given.startswith("Bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):  # in constant time: no timing hints
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

    def constraint(self, body: CompletionRequest | ChatCompletionRequest) -> Constraint | None:
        """The request's structured-output constraint (None for plain text); a bad schema, grammar or
        regex is a 400 naming the field."""
        fmt = None if body.response_format is None else body.response_format.model_dump()
        given = [
            name
            for name, value in (("response_format", fmt), ("grammar", body.grammar), ("regex", body.regex))
            if value is not None and value != {"type": "text"}
        ]
        if not given:
            return None
        try:
            return constraint_from_options(
                self.tokenizer,
                self.engine.model.n_vocab,
                response_format=fmt,
                grammar=body.grammar,
                regex=body.regex,
            )
        except ConstraintError as exc:
            raise bad_field(given[0], str(exc)) from None
        except ImportError:
            raise bad_field(
                given[0],
                'structured output needs llguidance on the server: pip install "rwkv_ggml[structured]"',
            ) from None

    def submit(self, request: GenerationRequest) -> RequestHandle:
        with self._engine_errors():
            return self.engine.submit(request)

    async def admitted(self, job: Awaitable[T]) -> T:
        """Awaits an engine job, with the engine's refusals as HTTP errors."""
        with self._engine_errors():
            return await job

    @contextlib.contextmanager
    def _engine_errors(self) -> Iterator[None]:
        try:
            yield
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
