"""rwkv_ggml on Ray (``pip install "rwkv_ggml[ray]"``): batch inference with Ray Data, serving with Ray Serve.

* :mod:`rwkv_ggml.ray.data`: callable classes for ``Dataset.map_batches`` (generation, embeddings,
  log-likelihood scoring), one model per actor;
* :mod:`rwkv_ggml.ray.serve`: the OpenAI-compatible server (:mod:`rwkv_ggml.server`) as a Serve
  application, ``serve_app(...)``, with replicas, autoscaling and session affinity.

docs/scale-out.md describes running them on a cluster and sizing the actors. Ray is imported only inside
this package (absolute ``import ray`` is the Ray package, not this one), so ``import rwkv_ggml`` works
without it.
"""

from __future__ import annotations

from typing import Any

try:
    import ray as _ray  # noqa: F401  (only to fail early with the install hint)
except ImportError as exc:  # pragma: no cover - exercised only where Ray is absent
    raise ImportError(
        f"rwkv_ggml.ray needs Ray ({exc}); install it with: pip install 'rwkv_ggml[ray]'"
    ) from exc

_LAZY = {"serve_app": "rwkv_ggml.ray.serve", "build_app": "rwkv_ggml.ray.serve"}


def __getattr__(name: str) -> Any:
    # Ray Serve and FastAPI load only for serving, not for a Ray Data job
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rwkv_ggml.ray' has no attribute {name!r}")


__all__ = ["build_app", "serve_app"]
