"""The OpenAI-compatible HTTP server (``pip install "rwkv_ggml[server]"``, then ``rwkv-ggml serve``).

FastAPI and uvicorn are imported only inside this package, so ``import rwkv_ggml`` works without them.
``create_app(ServerConfig(...))`` builds the application (the factory tests, Ray and other hosts use);
:func:`rwkv_ggml.server.runner.serve` runs it under uvicorn. docs/server.md describes the routes, the
options, the scheduling policy and the state cache.
"""

from __future__ import annotations

from .app import create_app, engine_from_config
from .config import ServerConfig
from .engine import Engine

__all__ = ["Engine", "ServerConfig", "create_app", "engine_from_config"]
