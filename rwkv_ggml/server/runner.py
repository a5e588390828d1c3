"""``rwkv-ggml serve``: the app under uvicorn, with a shutdown that ends every request.

On SIGTERM or SIGINT the server stops taking requests (new ones get 503, the listening socket closes),
lets the requests in flight run for ``shutdown_timeout`` seconds, then cancels those still running (their
streams end with an error event, their non-streaming calls with a 503), closes the model and returns 0. A
second signal cancels at once. uvicorn's own handler would re-raise the signal after its shutdown, which
makes the exit status 143 instead of 0; this one does not.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from .app import create_app
from .config import ServerConfig
from .engine import Engine

# uvicorn cancels the connections still open this long after our own grace period ran out.
_UVICORN_EXTRA_GRACE_S = 5.0


class _GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: Engine, grace: float) -> None:
        super().__init__(config)
        self.engine = engine
        self.grace = grace

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:  # a second signal: no more waiting
            self.engine.cancel_all()
            self.force_exit = True
            return
        self.engine.begin_shutdown()
        self.should_exit = True
        timer = threading.Timer(self.grace, self.engine.cancel_all)
        timer.daemon = True
        timer.start()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads, so a busy port is one clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(config: ServerConfig) -> int:
    """Runs the server until SIGTERM/SIGINT; returns the exit status (0)."""
    sock = _listen(config.host, config.port)
    try:
        return _serve_on(sock, config)
    finally:
        sock.close()


def _serve_on(sock: socket.socket, config: ServerConfig) -> int:
    app = create_app(config)
    engine: Engine = app.state.engine
    server = _GracefulServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(config.shutdown_timeout + _UVICORN_EXTRA_GRACE_S) + 1,
            lifespan="on",
        ),
        engine,
        config.shutdown_timeout,
    )
    model = engine.model
    name = app.state.server.model_name
    port = sock.getsockname()[1]
    threads = f"{model.threads} thread" + ("" if model.threads == 1 else "s")
    sys.stderr.write(
        f"rwkv-ggml serve: model '{name}' (RWKV v{model.version} {model.dtype}, {threads}), "
        f"batch {config.max_batch}, on http://{config.host}:{port} (Ctrl-C to stop)\n"
    )
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    finally:
        if not server.started:  # the lifespan never ran: close the engine here
            engine.close()
    return 0
