"""The serving engine: one scheduler thread owns the model, a :class:`~rwkv_ggml.batch_generation.
BatchGenerator` and the prefix state cache; the asyncio side submits requests and reads their events.

Threads. HTTP handlers run on the event loop; they call :meth:`Engine.submit` / :meth:`Engine.cancel` /
:meth:`Engine.run_job`, which only append a command to the inbox under a lock and wake the scheduler. The
scheduler thread drains the inbox between steps (so joins, cancels and disconnects take effect between
steps), runs one :meth:`BatchGenerator.step`, and hands each request's events to its event loop with
``loop.call_soon_threadsafe``. The model's evals release the GIL (cffi calls), so the event loop keeps
serving while a step runs.

Admission. At most ``max_batch`` requests run and ``max_queue`` wait; beyond that :meth:`submit` raises
:class:`QueueFullError` at once (the route answers 429), and after :meth:`begin_shutdown`
:class:`ShuttingDownError` (503). A request that is not finished ``request_timeout`` seconds after it was
admitted is cancelled with finish reason "timeout".

The state cache. A request's prompt is looked up in the :class:`~rwkv_ggml.server.state_cache.StateCache`;
on a hit the request starts from the cached state and reads only the rest of its prompt. When a request
ends with "stop" or "length" its state after the prompt and after the fed part of its reply are stored,
and for a chat request whose reply the template renders differently from what the model wrote, the state
after the prompt plus that rendering (what the client's next turn starts with).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple, TypeVar

from ..batch_generation import BatchGenerator
from ..errors import RwkvGgmlError
from ..model import DEFAULT_CHUNK_SIZE, FloatArray, Model
from ..sampling import SamplingParams
from ..structured import Constraint
from ..tokenizer import Tokenizer
from .config import ServerConfig
from .state_cache import StateCache

T = TypeVar("T")

# Tokens/s is measured over this many seconds of recent steps.
RATE_WINDOW_S = 5.0


class EngineError(RwkvGgmlError):
    """A request the engine cannot take now."""


class QueueFullError(EngineError):
    """Every slot is busy and the waiting queue is full (HTTP 429)."""


class ShuttingDownError(EngineError):
    """The server is shutting down and takes no new requests (HTTP 503)."""


@dataclasses.dataclass
class GenerationRequest:
    """What a route submits: the whole prompt as token ids, the limits and the sampling options."""

    prompt_ids: list[int]
    max_tokens: int
    params: SamplingParams
    logprobs: int | None = None
    constraint: Constraint | None = None  # structured output: a fresh constraint for this request
    #: For chat: the text that follows the prompt once a reply is part of the history (the template's
    #: ``reply_suffix``), so the state there is cached too.
    reply_suffix: Callable[[str], str] | None = None


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclasses.dataclass
class EngineEvent:
    """A piece of a request's output. ``tokens`` are the tokens sampled since the previous event (with
    their log-probabilities when asked); the last event has ``finish_reason`` ("stop", "length",
    "cancelled", "timeout" or "error", with ``error`` saying what went wrong) and ``usage``."""

    text: str
    tokens: list[int]
    token_logprobs: list[float]
    top_logprobs: list[dict[int, float]]
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None


class RequestHandle:
    """The asyncio side of one submitted request: iterate :meth:`events`; leaving the iteration early
    (a disconnect) cancels the request in the scheduler."""

    def __init__(self, engine: Engine, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.request = request
        self.loop = loop
        self.queue: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self.finished = False

    def deliver(self, event: EngineEvent) -> None:
        """Called on the scheduler thread: hands the event to the request's event loop."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    async def events(self) -> AsyncIterator[EngineEvent]:
        try:
            while True:
                event = await self.queue.get()
                if event.finish_reason is not None:
                    self.finished = True
                yield event
                if self.finished:
                    return
        finally:
            if not self.finished:
                self.engine.cancel(self)


@dataclasses.dataclass
class _Active:
    handle: RequestHandle
    request_id: int
    cached_tokens: int
    deadline: float
    sent: int = 0  # generated tokens already reported


class EngineStats(NamedTuple):
    running: int
    waiting: int
    batch_size: int
    tokens_per_second: float
    requests_total: int
    prompt_tokens_total: int
    completion_tokens_total: int
    cached_tokens_total: int
    cache_hits: int
    cache_misses: int
    cache_bytes: int
    cache_entries: int


class Engine:
    """Owns ``model`` (closed by :meth:`close`) and serves generation requests from one thread."""

    def __init__(
        self,
        model: Model,
        *,
        tokenizer: Tokenizer | None = None,
        max_batch: int = 8,
        max_queue: int = 64,
        state_cache_bytes: int = 256 << 20,
        request_timeout: float = 600.0,
        prefill_chunk: int | None = 256,
    ) -> None:
        self.model = model
        self.generator = BatchGenerator(
            model, capacity=max_batch, tokenizer=tokenizer, prefill_chunk=prefill_chunk
        )
        self.tokenizer = self.generator.tokenizer
        self.cache = StateCache(state_cache_bytes)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.request_timeout = request_timeout
        self.prefill_chunk = prefill_chunk if prefill_chunk is not None else DEFAULT_CHUNK_SIZE
        self._cond = threading.Condition()
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._in_flight = 0  # submitted and not finished (guarded by _cond)
        self._accepting = True
        self._stopping = False
        self._active: dict[int, _Active] = {}  # generator request id -> request (scheduler thread only)
        self._by_handle: dict[int, int] = {}  # id(handle) -> generator request id
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens) of steps
        self._stats_lock = threading.Lock()
        self._batch_size = 0
        self._totals = collections.Counter[str]()
        self._thread = threading.Thread(target=self._loop, name="rwkv-ggml-scheduler", daemon=True)
        self._thread.start()

    @classmethod
    def for_model(cls, model: Model, config: ServerConfig) -> Engine:
        """An engine around a loaded model with the limits of ``config``; the model is closed if that
        fails (it would otherwise leak with nobody holding it)."""
        try:
            return cls(
                model,
                max_batch=config.max_batch,
                max_queue=config.max_queue,
                state_cache_bytes=int(config.state_cache_mb * 2**20),
                request_timeout=config.request_timeout,
                prefill_chunk=config.prefill_chunk,
            )
        except BaseException:
            model.close()
            raise

    # ---- the asyncio side ----
    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Queues a request (call on the event loop); raises QueueFullError / ShuttingDownError at once."""
        handle = RequestHandle(self, request, asyncio.get_running_loop())
        self._admit_one(("add", handle))
        return handle

    def cancel(self, handle: RequestHandle) -> None:
        """Stops a request and frees its slot (between steps); harmless if it has finished."""
        with self._cond:
            self._inbox.append(("cancel", handle))
            self._cond.notify()

    async def run_job(self, job: Callable[[Model], T]) -> T:
        """Runs ``job(model)`` on the scheduler thread between steps (e.g. an embedding) and awaits it; it
        counts against the queue limit like a generation request."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._admit_one(("job", (job, future)))
        return await asyncio.wrap_future(future)

    def _admit_one(self, command: tuple[str, Any]) -> None:
        with self._cond:
            if not self._accepting:
                raise ShuttingDownError("the server is shutting down")
            if self._in_flight >= self.max_batch + self.max_queue:
                raise QueueFullError(
                    f"the server is busy: {self.max_batch} requests running and {self.max_queue} waiting"
                )
            self._in_flight += 1
            self._inbox.append(command)
            self._cond.notify()

    def begin_shutdown(self) -> None:
        """New requests get ShuttingDownError; the running and waiting ones go on."""
        with self._cond:
            self._accepting = False

    def cancel_all(self) -> None:
        """Cancels every request, running or waiting (their streams end with "cancelled")."""
        with self._cond:
            self._inbox.append(("cancel_all", None))
            self._cond.notify()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def close(self, timeout: float = 30.0) -> None:
        """Cancels what is left, stops the scheduler thread and closes the model."""
        self.begin_shutdown()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.model.close()

    def stats(self) -> EngineStats:
        """A snapshot for /health and /metrics (called on the event loop while the scheduler runs)."""
        now = time.monotonic()
        with self._stats_lock:
            recent = [n for t, n in self._recent if now - t <= RATE_WINDOW_S]
        with self._cond:
            submitted = sum(1 for kind, _ in self._inbox if kind == "add")
        gen = self.generator
        t = self._totals.copy()
        return EngineStats(
            running=len(gen.running),
            waiting=len(gen.waiting) + submitted,
            batch_size=self._batch_size,
            tokens_per_second=sum(recent) / RATE_WINDOW_S,
            requests_total=t["requests"],
            prompt_tokens_total=t["prompt_tokens"],
            completion_tokens_total=t["completion_tokens"],
            cached_tokens_total=t["cached_tokens"],
            cache_hits=self.cache.hits,
            cache_misses=self.cache.misses,
            cache_bytes=self.cache.bytes,
            cache_entries=len(self.cache),
        )

    # ---- the scheduler thread ----
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._inbox and self.generator.done and not self._stopping:
                    self._batch_size = 0
                    self._cond.wait()
                commands = list(self._inbox)
                self._inbox.clear()
                stopping = self._stopping
            try:
                for kind, arg in commands:
                    self._apply(kind, arg)
                if stopping:
                    self._cancel_everything("cancelled")
                    return
                self._expire(time.monotonic())
                if not self.generator.done:
                    self._step()
            except Exception as exc:  # a bug of ours: end every request with an error rather than hang them
                self._recover(exc)

    def _recover(self, exc: Exception) -> None:
        message = f"internal error in the scheduler: {type(exc).__name__}: {exc}"
        for rid, active in list(self._active.items()):
            self._active.pop(rid, None)
            self._by_handle.pop(id(active.handle), None)
            with contextlib.suppress(Exception):
                self.generator.cancel(rid)
                self.generator.release(rid)
            usage = Usage(len(active.handle.request.prompt_ids), active.sent, active.cached_tokens)
            active.handle.deliver(EngineEvent("", [], [], [], "error", usage, message))
            self._done_in_flight()

    def _apply(self, kind: str, arg: Any) -> None:
        if kind == "add":
            self._add(arg)
        elif kind == "cancel":
            rid = self._by_handle.get(id(arg))
            if rid is not None:
                self.generator.cancel(rid)
                self._finish(rid, "cancelled")
        elif kind == "cancel_all":
            self._cancel_everything("cancelled")
        elif kind == "job":
            job, future = arg
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(job(self.model))
                    except BaseException as exc:  # handed to the awaiting route
                        future.set_exception(exc)
            finally:
                self._done_in_flight()

    def _add(self, handle: RequestHandle) -> None:
        req = handle.request
        hit = self.cache.lookup(req.prompt_ids) if self.cache.max_bytes else None
        start = 0 if hit is None else hit.length
        try:
            rid = self.generator.add(
                req.prompt_ids[start:],
                req.max_tokens,
                params=req.params,
                state=None if hit is None else hit.state,
                keep_states=bool(self.cache.max_bytes),
                logprobs=req.logprobs,
                constraint=req.constraint,
            )
        except (TypeError, ValueError) as exc:
            self._done_in_flight()
            handle.deliver(EngineEvent("", [], [], [], "invalid", Usage(len(req.prompt_ids), 0, 0), str(exc)))
            return
        self._active[rid] = _Active(handle, rid, start, time.monotonic() + self.request_timeout)
        self._by_handle[id(handle)] = rid
        self._totals["requests"] += 1

    def _step(self) -> None:
        gen = self.generator
        self._batch_size = len(gen.running)
        try:
            events = gen.step()
        except Exception as exc:  # the model failed (closed, out of memory): no request is left hanging
            self._cancel_everything("error", f"{type(exc).__name__}: {exc}")
            return
        now = time.monotonic()
        produced = 0
        for event in events:
            active = self._active.get(event.request_id)
            if active is None:
                continue
            if event.finish_reason is not None:
                produced += len(gen.tokens_since(event.request_id, active.sent).tokens)
                error = None
                if event.finish_reason == "error":  # only a constraint ends one request with "error"
                    constraint = active.handle.request.constraint
                    error = (
                        constraint.error if constraint else None
                    ) or "the output constraint allows no token"
                self._finish(event.request_id, event.finish_reason, text=event.text, error=error)
                continue
            rows = gen.tokens_since(event.request_id, active.sent)
            produced += len(rows.tokens)
            active.sent += len(rows.tokens)
            active.handle.deliver(EngineEvent(event.text, *rows))
        with self._stats_lock:
            if produced:
                self._recent.append((now, produced))
            while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
                self._recent.popleft()

    def _finish(self, rid: int, reason: str, *, text: str = "", error: str | None = None) -> None:
        active = self._active.pop(rid, None)
        if active is None:
            return
        self._by_handle.pop(id(active.handle), None)
        gen = self.generator
        req = active.handle.request
        kept = gen.states(rid)
        rows = gen.tokens_since(rid, active.sent)
        result = gen.release(rid)
        if reason in ("stop", "length") and self.cache.max_bytes:
            if kept.prompt_state is not None:
                self.cache.store(req.prompt_ids, kept.prompt_state)
            if kept.reply_state is not None:
                self.cache.store(req.prompt_ids + result.tokens[: kept.reply_tokens], kept.reply_state)
        usage = Usage(len(req.prompt_ids), result.completion_tokens, active.cached_tokens)
        t = self._totals
        t["prompt_tokens"] += usage.prompt_tokens
        t["completion_tokens"] += usage.completion_tokens
        t["cached_tokens"] += usage.cached_tokens
        active.handle.deliver(EngineEvent(text, *rows, reason, usage, error))
        self._done_in_flight()
        if reason in ("stop", "length") and self.cache.max_bytes and kept.prompt_state is not None:
            self._store_rendered_reply(
                req, result.text, result.tokens[: kept.reply_tokens], kept.prompt_state
            )

    def _store_rendered_reply(
        self, req: GenerationRequest, text: str, fed: list[int], prompt_state: FloatArray
    ) -> None:
        """Caches the state after the prompt plus the reply as a chat client will send it back (the
        template's rendering: leading whitespace and blank lines normalised, the separator after it),
        when that differs from what the model wrote. Read here, after the final event went out and before
        the next inbox drain, so the client's next turn finds it; at most ``prefill_chunk`` tokens, the
        same bound on the other streams' delay as a prompt chunk."""
        if req.reply_suffix is None:
            return
        try:
            # without the separator after the reply: a tokenizer may write "\n\n" as one token at the end
            # of a text but as two before the next message, and the key must be the tokens the next turn has
            suffix = self.tokenizer.encode(req.reply_suffix(text).rstrip())
        except ValueError:  # an empty reply: the client sends no assistant message
            return
        if not suffix or suffix[: len(fed)] == fed or len(suffix) > self.prefill_chunk:
            return  # the reply state already covers it, or it is too long to read between two steps
        _, state = self.model.eval_sequence(suffix, prompt_state)
        self.cache.store(req.prompt_ids + suffix, state)

    def _expire(self, now: float) -> None:
        for rid, active in list(self._active.items()):
            if now > active.deadline:
                self.generator.cancel(rid)
                self._finish(rid, "timeout", error=f"the request took longer than {self.request_timeout:g} s")

    def _cancel_everything(self, reason: str, error: str | None = None) -> None:
        for rid in list(self._active):
            self.generator.cancel(rid)
            self._finish(rid, reason, error=error)

    def _done_in_flight(self) -> None:
        with self._cond:
            self._in_flight -= 1
