"""One HTTP request through an ASGI application in this process, its response as a stream of messages.

A Serve replica runs the server's FastAPI app (:func:`rwkv_ggml.server.create_app`) this way: the router
deployment hands it the request's method, path, headers and body through a deployment handle, and gets
back the response start (status and headers) followed by the body chunks, so a streamed answer
(server-sent events) flows chunk by chunk. No Ray here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


async def call_asgi(
    app: ASGIApp,
    method: str,
    path: str,
    query_string: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> AsyncIterator[tuple[int, list[tuple[bytes, bytes]]] | bytes]:
    """Runs the request; yields ``(status, headers)`` once, then the body chunks (bytes). If the caller
    stops reading (its client went away), the app sees ``http.disconnect`` and its task is cancelled."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": "",
        "query_string": query_string,
        "headers": headers,
        "client": ("ray-serve", 0),
        "server": ("ray-serve", 0),
    }
    outbox: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await outbox.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await outbox.put(None)

    task = asyncio.create_task(run())
    try:
        while True:
            message = await outbox.get()
            if message is None:
                break
            if message["type"] == "http.response.start":
                yield int(message["status"]), [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunk = bytes(message.get("body", b""))
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    break
        await task  # re-raises what the app raised (it has answered with a 500 first, as ASGI servers do)
    finally:
        gone.set()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
