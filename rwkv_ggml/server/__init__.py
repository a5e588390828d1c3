"""The OpenAI-compatible HTTP server (``pip install "rwkv_ggml[server]"``, then ``rwkv-ggml serve``).

FastAPI and uvicorn are imported only by ``app`` and ``runner``, and only when used: ``import rwkv_ggml``
never needs them, and the scheduler side (``config``, ``state_cache``, ``engine``) imports without them.
``create_app(ServerConfig(...))`` builds the application (the factory tests, Ray and other hosts use);
:func:`rwkv_ggml.server.runner.serve` runs it under uvicorn. docs/server.md describes the routes, the
options, the scheduling policy and the state cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServerConfig
from .engine import Engine

if TYPE_CHECKING:
    from .app import create_app, engine_from_config

__all__ = ["Engine", "ServerConfig", "create_app", "engine_from_config"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "engine_from_config"):  # the HTTP side: needs FastAPI
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'rwkv_ggml.server' has no attribute {name!r}")
