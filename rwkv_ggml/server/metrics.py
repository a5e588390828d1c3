"""``/metrics``: the server's counters and gauges in the Prometheus text format (written here: a dozen
lines do not need the client library), and the ASGI middleware counting responses by route and status."""

from __future__ import annotations

import collections
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .engine import EngineStats

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Only these paths get a label of their own; anything else counts as "other" (bounded label set).
_ROUTES = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health", "/metrics", "/"}
)


class Counters:
    """HTTP responses by (route, status); updated on the event loop, read by /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: collections.Counter[tuple[str, int]] = collections.Counter()

    def count(self, route: str, status: int) -> None:
        with self._lock:
            self.responses[(route if route in _ROUTES else "other", status)] += 1

    def snapshot(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return dict(self.responses)


class CountingMiddleware:
    """Counts each HTTP response's status under its route (pure ASGI: streaming is left untouched)."""

    def __init__(self, app: ASGIApp, counters: Counters) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counters.count(str(scope.get("path", "")), int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)


def render(stats: EngineStats, counters: Counters, model: str) -> str:
    """The Prometheus exposition text."""
    label = f'model="{_escape(model)}"'
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float, labels: str = label) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{{{labels}}} {value:g}")

    lines.append("# HELP rwkv_http_responses_total HTTP responses by route and status code.")
    lines.append("# TYPE rwkv_http_responses_total counter")
    for (route, status), n in sorted(counters.snapshot().items()):
        lines.append(f'rwkv_http_responses_total{{route="{route}",status="{status}"}} {n}')
    metric("rwkv_requests_total", "counter", "Generation requests admitted.", stats.requests_total)
    metric(
        "rwkv_prompt_tokens_total",
        "counter",
        "Prompt tokens of finished requests.",
        stats.prompt_tokens_total,
    )
    metric("rwkv_generation_tokens_total", "counter", "Tokens generated.", stats.completion_tokens_total)
    metric(
        "rwkv_tokens_per_second", "gauge", "Tokens generated per second (last 5 s).", stats.tokens_per_second
    )
    metric("rwkv_requests_running", "gauge", "Requests holding a slot.", stats.running)
    metric("rwkv_queue_depth", "gauge", "Requests waiting for a slot.", stats.waiting)
    metric("rwkv_batch_size", "gauge", "Requests in the last scheduler step.", stats.batch_size)
    metric(
        "rwkv_state_cache_hits_total",
        "counter",
        "Prompts that started from a cached state.",
        stats.cache_hits,
    )
    metric("rwkv_state_cache_misses_total", "counter", "Prompts with no cached prefix.", stats.cache_misses)
    metric(
        "rwkv_state_cache_cached_tokens_total",
        "counter",
        "Prompt tokens not read thanks to the state cache.",
        stats.cached_tokens_total,
    )
    metric("rwkv_state_cache_bytes", "gauge", "Bytes of states in the cache.", stats.cache_bytes)
    metric("rwkv_state_cache_entries", "gauge", "States in the cache.", stats.cache_entries)
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
