"""The server's settings: one dataclass, filled from ``rwkv-ggml serve``'s options or built in Python
(``create_app(ServerConfig(model="model.bin"))``). Knows nothing of HTTP."""

from __future__ import annotations

import dataclasses
from pathlib import Path

#: The most prompt tokens one scheduler step reads (over all joining requests): a multiple of the model's
#: sequence chunk (256), so a lone prompt is read exactly as ``Model.eval_sequence`` reads it.
DEFAULT_PREFILL_CHUNK = 256


@dataclasses.dataclass
class ServerConfig:
    """What ``rwkv-ggml serve`` runs.

    ``model``: the model file (None: the packaged default model); ``model_name``: the id clients name in
    ``"model"`` (default: the file's stem); ``max_batch``: requests decoded together; ``max_queue``: requests
    waiting for a slot before new ones get 429; ``state_cache_mb``: the prefix state cache's bound (0: off);
    ``api_key``: required as ``Authorization: Bearer KEY`` on /v1 routes when set; ``max_tokens_cap``: the
    largest ``max_tokens`` accepted; ``default_max_tokens``: a request's limit when it gives none;
    ``max_prompt_tokens``: the longest prompt accepted; ``request_timeout``: seconds a request may take
    from admission to its last token before it is cancelled; ``prefill_chunk``: prompt tokens per step;
    ``shutdown_timeout``: seconds in-flight requests get to finish after SIGTERM before they are cancelled.
    """

    model: str | Path | None = None
    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int | None = None
    max_batch: int = 8
    max_queue: int = 64
    state_cache_mb: float = 256.0
    api_key: str | None = None
    max_tokens_cap: int = 4096
    default_max_tokens: int = 200
    max_prompt_tokens: int = 32768
    request_timeout: float = 600.0
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        positive_ints = ("port", "max_batch", "max_tokens_cap", "max_prompt_tokens", "prefill_chunk")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("max_queue", "default_max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("state_cache_mb", "shutdown_timeout"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.request_timeout, (int, float)) or self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be a number > 0, got {self.request_timeout!r}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key is empty: give a key, or None for no key")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens_cap)
