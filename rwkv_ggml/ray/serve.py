"""The OpenAI-compatible server on Ray Serve: replicas, autoscaling, and session affinity.

``serve.run(serve_app(model="/models/rwkv.bin", num_replicas=4, threads=2))``, or from a config file
``serve run rwkv_ggml/ray/serve_config.yaml`` (its ``import_path`` is :func:`build_app`). Two deployments:

* ``RWKVServer``: the model replicas. Each loads the model (``mmap``: the replicas on one node share one
  copy through the page cache) into its own :class:`~rwkv_ggml.server.engine.Engine`, which batches the
  requests the replica holds and keeps its prefix state cache, and runs the server's FastAPI app
  (:func:`rwkv_ggml.server.create_app`: the same routes, errors and limits as ``rwkv-ggml serve``);
* ``RWKVRouter``: the HTTP ingress (FastAPI, ``@serve.ingress``; no model, no CPU reserved). It forwards
  every request to a replica through a deployment handle and streams the answer back.

Session affinity. A conversation's follow-up turn is fastest on the replica whose state cache holds the
state after its previous turn (the replica reads only the new messages). The router gives each request a
session key and sends it as the handle's ``multiplexed_model_id``; the model deployment's request router
(:class:`rwkv_ggml.ray.affinity.SessionAffinityRouter`) sends a key to one replica chosen by rendezvous
hashing, and to the least loaded other replica when that one is full or gone. The key is, in order: the
``X-Session-Id`` header; for a chat request, a hash of the messages up to the first user message (the
part every turn of a conversation repeats); for a completion prompt of at least :data:`PREFIX_CHARS`
characters, a hash of its first ones (shorter prompts are cheap to re-read and get no key). Requests
without a key go to any replica. (With a Ray older than 2.46, which has no pluggable request routers, the
replicas register their keys with ``@serve.multiplexed`` and Serve's own multiplexing routes by them,
best effort: a follow-up that arrives before the registration has reached the router may go elsewhere.)

Failures. A replica that dies is replaced by Serve. A request whose replica died before it answered is
retried on another replica (up to :data:`RETRIES` times); one that had started streaming ends with an
error event; one that cannot be placed gets a 503 OpenAI error object. Nothing waits forever.
"""

# No "from __future__ import annotations": FastAPI reads the route parameters' annotations (Request) at
# runtime, and Serve's class-based view rewrites the route without this module's globals to resolve strings.
import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import exceptions as ray_exceptions
from ray import serve
from ray.serve import exceptions as serve_exceptions
from ray.serve.handle import DeploymentHandle

from ..server.config import ServerConfig
from ._asgi import call_asgi
from ._common import DEFAULT_RAY_PLACEMENT, check_threads, load_model
from .affinity import request_router_config

#: A completion prompt this long (characters) or longer gets a session key from its beginning.
PREFIX_CHARS = 64
#: Session keys a replica remembers (least recently used dropped first); the state cache is the real bound.
SESSIONS_PER_REPLICA = 4096
#: Times a request is sent again after its replica died before answering.
RETRIES = 2
#: The header a client sets to name its session explicitly.
SESSION_HEADER = "x-session-id"
#: The header the router adds to every answer: which replica served it.
REPLICA_HEADER = "x-rwkv-replica"
_HOP_HEADERS = {b"content-length", b"transfer-encoding", b"connection", b"host"}
# a replica that died or cannot take the request now (the names present in this Ray version)
_RETRIABLE: tuple[type[BaseException], ...] = tuple(
    getattr(module, name)
    for module, name in [
        (ray_exceptions, "RayActorError"),
        (ray_exceptions, "RaySystemError"),
        (serve_exceptions, "ReplicaUnavailableError"),
        (serve_exceptions, "DeploymentUnavailableError"),
        (serve_exceptions, "BackPressureError"),
    ]
    if hasattr(module, name)
)


def session_key(path: str, headers: dict[str, str], body: bytes) -> str | None:
    """The session key of a request (see the module docstring), or None."""
    explicit = headers.get(SESSION_HEADER)
    if explicit:
        return "session:" + explicit
    if not path.endswith("/completions") or not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # the replica answers the 400
    if not isinstance(data, dict):
        return None
    if path.endswith("/chat/completions"):
        messages = data.get("messages")
        if not isinstance(messages, list):
            return None
        head = []
        for message in messages:
            head.append(message)
            if isinstance(message, dict) and message.get("role") == "user":
                break
        text = json.dumps(head, sort_keys=True, ensure_ascii=False)
        return "chat:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    prompt = data.get("prompt")
    if isinstance(prompt, str) and len(prompt) >= PREFIX_CHARS:
        digest = hashlib.sha256(prompt[:PREFIX_CHARS].encode("utf-8", "surrogatepass")).hexdigest()
        return "prefix:" + digest[:32]
    return None


class RWKVServer:
    """A model replica: the server's engine and FastAPI app, reached through :meth:`forward_request`."""

    def __init__(self, config: ServerConfig, placement: str = DEFAULT_RAY_PLACEMENT) -> None:
        from ..generation import default_model_path
        from ..server import Engine, create_app

        spec = config.model if config.model is not None else default_model_path()
        model = load_model(spec, config.threads or 1, placement)
        self.engine = Engine.for_model(model, config)
        self.app = create_app(self.engine, config)
        context = serve.get_replica_context()
        replica_id = getattr(context, "replica_id", None)
        self.replica = str(
            getattr(replica_id, "unique_id", None) or getattr(context, "replica_tag", os.getpid())
        )

    @serve.multiplexed(max_num_models_per_replica=SESSIONS_PER_REPLICA)  # type: ignore[untyped-decorator]
    async def session(self, key: str) -> str:
        # nothing to load: the key only tells Serve's router that this replica holds the session's state
        return key

    async def forward_request(
        self, method: str, path: str, query_string: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> AsyncIterator[tuple[int, list[tuple[bytes, bytes]]] | bytes]:
        """The request through the app: ``(status, headers)``, then the body chunks."""
        key = serve.get_multiplexed_model_id()
        if key:
            await self.session(key)
        first = True
        async for item in call_asgi(self.app, method, path, query_string, headers, body):
            if first and isinstance(item, tuple):
                item = (item[0], [*item[1], (REPLICA_HEADER.encode(), self.replica.encode())])
                first = False
            yield item

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


router_app = FastAPI(title="rwkv_ggml on Ray Serve", docs_url=None, redoc_url=None)
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


def _unavailable(message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": "unavailable"}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


async def _body(stream: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    except _RETRIABLE as exc:
        # the replica died mid-answer: a streamed answer ends with an error event, as the server's own do
        error = {"message": f"the model replica failed ({type(exc).__name__})", "type": "server_error"}
        yield f"data: {json.dumps({'error': error})}\n\n".encode()
    finally:
        stream.cancel()


# The app is frozen (pickled) by @serve.ingress here: what its routes use must be defined above.
@serve.ingress(router_app)
class RWKVRouter:
    """The HTTP ingress: forwards each request to a :class:`RWKVServer` replica, with its session key."""

    def __init__(self, server: DeploymentHandle[Any]) -> None:
        self.server = server.options(stream=True)

    @router_app.api_route("/{path:path}", methods=_METHODS)
    async def forward(self, path: str, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        key = session_key(request.url.path, headers, body)
        handle = self.server.options(multiplexed_model_id=key) if key else self.server
        raw_headers = [(k, v) for k, v in request.scope["headers"] if k.lower() not in _HOP_HEADERS]
        args = (request.method, request.url.path, request.scope.get("query_string", b""), raw_headers, body)
        for attempt in range(RETRIES + 1):
            stream: Any = handle.forward_request.remote(*args)
            try:
                start = await stream.__anext__()
            except _RETRIABLE as exc:
                if attempt == RETRIES:
                    return _unavailable(f"no model replica could answer ({type(exc).__name__}); retry later")
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            except StopAsyncIteration:
                return _unavailable("the model replica ended the request without an answer; retry later")
            assert isinstance(start, tuple)
            status, out_headers = start
            return StreamingResponse(
                _body(stream),
                status_code=status,
                headers={
                    k.decode("latin-1"): v.decode("latin-1") for k, v in out_headers if k not in _HOP_HEADERS
                },
            )
        raise AssertionError("unreachable")


def serve_app(
    model: str | os.PathLike[str] | None = None,
    *,
    num_replicas: int | None = 1,
    autoscaling_config: dict[str, Any] | None = None,
    threads: int = 1,
    placement: str = DEFAULT_RAY_PLACEMENT,
    max_ongoing_requests: int | None = None,
    router_replicas: int = 1,
    **server_options: Any,
) -> serve.Application:
    """The Serve application: ``serve.run(serve_app("model.bin", num_replicas=2))``.

    ``model``: a model file every node can read, or ``"hf:OWNER/NAME[/FILE]"`` (each node downloads and
    converts it once; None: the packaged default model). ``num_replicas``:
    model replicas, or ``autoscaling_config`` (Serve's: ``min_replicas``, ``max_replicas``,
    ``target_ongoing_requests``...; then ``num_replicas`` is ignored). ``threads``: engine threads per
    replica, which is also the CPUs each replica reserves. ``max_ongoing_requests``: requests Serve sends a
    replica at once (default: its ``max_batch`` + ``max_queue``, so the replica's own queue and 429s apply).
    ``server_options``: :class:`~rwkv_ggml.server.config.ServerConfig` fields (``max_batch``,
    ``state_cache_mb``, ``api_key``, ``model_name``, limits...).
    """
    threads = check_threads(threads)
    config = ServerConfig(
        model=None if model is None else os.fspath(model), threads=threads, **server_options
    )
    ongoing = max_ongoing_requests or config.max_batch + config.max_queue
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": threads},
        "max_ongoing_requests": ongoing,
    }
    router_config = request_router_config()
    if router_config is not None:
        options["request_router_config"] = router_config
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    server = serve.deployment(name="RWKVServer", **options)(RWKVServer).bind(config, placement)
    router = serve.deployment(
        name="RWKVRouter",
        num_replicas=router_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=10 * ongoing,
    )(RWKVRouter)
    app: serve.Application = router.bind(server)
    return app


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application builder for ``serve run`` and config files: ``args`` are :func:`serve_app`'s
    keyword arguments (``model``, ``num_replicas``, ``threads``, ``max_batch``...)."""
    return serve_app(**dict(args))


__all__ = ["PREFIX_CHARS", "RWKVRouter", "RWKVServer", "build_app", "serve_app", "session_key"]
