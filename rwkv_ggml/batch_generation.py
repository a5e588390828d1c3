"""Text generation for many prompts at once: one :meth:`~rwkv_ggml.model.Model.eval_batch` per step.

:func:`generate_batch` runs a list of prompts to completion; :class:`BatchGenerator` is the streaming
form, which accepts new requests while it runs, reports each request's text as it is produced and
cancels requests. Both keep every running sequence's state in a row of a
:class:`~rwkv_ggml.batch.StateBank`:

* a request joins when a slot is free: its prompt is read in sequence mode
  (:meth:`~rwkv_ggml.model.Model.eval_sequence`) straight into its bank row, from the model's initial
  state or a state the caller gives (e.g. a cached state after a prefix of the prompt: then only the rest
  is read). With ``prefill_chunk=N`` a step reads at most N prompt tokens in all (prompt reading is
  spread over steps, so a long prompt joining delays the running requests' next token by one chunk's
  time, not the whole prompt's);
* each step samples one token for every running request, from its own logits with its own
  :class:`~rwkv_ggml.sampling.Sampler` (its own parameters and seed), feeds the tokens through its own
  incremental decoder and :class:`~rwkv_ggml.sampling.StopChecker`, then feeds all the new tokens to the
  model in one ``eval_batch`` over the slots still running;
* a request that finishes (a stop token or stop string: ``"stop"``; ``max_tokens``: ``"length"``;
  :meth:`BatchGenerator.cancel`: ``"cancelled"``) frees its slot and leaves the batch at once.

The per-request rules are those of :func:`rwkv_ggml.generation.generate` (a stop token is not part of the
tokens, a stop string and what follows is not part of the text, a multi-byte character is emitted once
complete), so a request's result equals generating its prompt alone, up to the rounding of the batch's
matrix products: with one running request ``eval_batch`` is bit-identical to ``eval`` and the results are
identical; with B > 1 the logits differ from single-sequence ones by the mat-mat rounding (module
:mod:`rwkv_ggml.batch`), which can only change a token where two candidates are that close (a greedy
near-tie, or a random draw within that distance of a boundary).

A request added with ``keep_states=True`` keeps a copy of its state at the end of its prompt and at the end
of its reply (:meth:`BatchGenerator.states`), for a cache of states keyed by token prefix; ``logprobs=n``
records each generated token's log-probability and the n most likely alternatives.
:meth:`BatchGenerator.release` forgets a finished request (a long-running scheduler calls it so the
table of requests stays bounded).

Not thread-safe: one BatchGenerator drives one model at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from . import _checks
from .batch import StateBank
from .generation import DEFAULT_MAX_TOKENS, _check_max_tokens, _encode, _tokenizer_for
from .sampling import Sampler, SamplingParams, StopChecker, params_from_options, token_logprob
from .structured import Constraint, constraint_from_options, next_token
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .model import Model

FloatArray = npt.NDArray[np.float32]
Prompt = str | Sequence[int] | np.ndarray

#: Default number of requests that run at once in a :class:`BatchGenerator`.
DEFAULT_CAPACITY = 8


@dataclasses.dataclass
class BatchResult:
    """One request's outcome: the generated ``text`` and ``tokens`` (a stop token is not included; a stop
    string is cut from the text, its tokens stay), ``finish_reason`` ("stop", "length", "cancelled", "error"
    after a step failed, or "running") and the token counts. With ``logprobs=n``: each generated token's
    log-probability (``token_logprobs``, from the log-softmax of the raw logits) and its n most likely
    alternatives with theirs (``top_logprobs``); empty otherwise."""

    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    token_logprobs: list[float] = dataclasses.field(default_factory=list)
    top_logprobs: list[dict[int, float]] = dataclasses.field(default_factory=list)


class BatchEvent(NamedTuple):
    """Text produced by one request in one step; ``finish_reason`` is set on the request's last event."""

    request_id: int
    text: str
    finish_reason: str | None


class KeptStates(NamedTuple):
    """The states a ``keep_states=True`` request kept: after its prompt (None if it never finished reading
    it), and after its prompt plus its first ``reply_tokens`` generated tokens (None unless it finished
    with "stop" or "length"; the last sampled token is never fed, so ``reply_tokens`` is usually one less
    than the tokens generated)."""

    prompt_state: FloatArray | None
    reply_state: FloatArray | None
    reply_tokens: int


class TokenRows(NamedTuple):
    """A request's generated tokens from some position on, with their log-probabilities (empty lists
    unless the request records them)."""

    tokens: list[int]
    token_logprobs: list[float]
    top_logprobs: list[dict[int, float]]


class _Request:
    """One request's sampling and text side; the model side (state row, logits) is the generator's."""

    def __init__(
        self,
        ids: list[int],
        max_tokens: int,
        params: SamplingParams,
        tokenizer: Tokenizer,
        n_vocab: int,
        constraint: Constraint | None = None,
        *,
        start_state: FloatArray | None = None,
        keep_states: bool = False,
        logprobs: int | None = None,
    ) -> None:
        if constraint is not None:
            constraint.claim(n_vocab)
        self.constraint = constraint
        self.prompt_tokens = ids
        self.max_tokens = max_tokens
        self.sampler = Sampler(params, n_vocab)
        self.stops = StopChecker(params.stop_strings)
        self.decoder = tokenizer.incremental_decoder()
        self.tokens: list[int] = []
        self.chunks: list[str] = []
        self.finish_reason: str | None = None
        self.slot: int | None = None
        self.logits: FloatArray | None = None
        self.start_state = start_state  # dropped once the prompt is read
        self.read = 0  # prompt tokens read into the slot's row
        self.fed = 0  # generated tokens fed into the slot's row
        self.keep_states = keep_states
        self.prompt_state: FloatArray | None = None
        self.reply_state: FloatArray | None = None
        self.logprobs = logprobs
        self.token_logprobs: list[float] = []
        self.top_logprobs: list[dict[int, float]] = []

    @property
    def decoding(self) -> bool:
        """Whether the prompt is read and the request samples."""
        return self.read == len(self.prompt_tokens)

    def _emit(self, text: str, out: list[str]) -> None:
        if text:
            shown, stopped = self.stops.feed(text)
            if shown:
                out.append(shown)
            if stopped:
                self.finish_reason = "stop"

    def finish(self, reason: str, out: list[str]) -> None:
        """Ends the request: the decoder's and the stop checker's held-back text is released."""
        if self.finish_reason is None:
            self._emit(self.decoder.flush(), out)
        if self.finish_reason is None:
            tail = self.stops.flush()
            if tail:
                out.append(tail)
            self.finish_reason = reason

    def advance(self) -> str:
        """Samples the next token from :attr:`logits` (or finishes); returns the text that became
        complete. After it, the request is finished or its last token waits to be fed."""
        out: list[str] = []
        logits = self.logits
        constraint = self.constraint
        tok: int | None = None
        if constraint is not None and constraint.finished:
            self.finish("stop", out)
        elif len(self.tokens) >= self.max_tokens:
            self.finish("length", out)
        elif constraint is None:
            assert logits is not None
            tok = self.sampler.sample(logits)
        else:
            assert logits is not None
            tok, reason = next_token(constraint, lambda mask: self.sampler.sample(logits, mask))
            if reason is not None:
                self.finish(reason, out)
        if tok is not None:
            if self.sampler.is_stop_token(tok):
                self.finish("stop", out)
            else:
                if self.logprobs is not None and logits is not None:
                    lp, top = token_logprob(logits, tok, self.logprobs)
                    self.token_logprobs.append(lp)
                    self.top_logprobs.append(top)
                self.sampler.accept(tok)
                self.tokens.append(tok)
                if constraint is not None:
                    constraint.consume(tok)
                    constraint.prefetch()  # computed while eval_batch runs
                self._emit(self.decoder.feed([tok]), out)
                if self.finish_reason is None and len(self.tokens) >= self.max_tokens:
                    self.finish("length", out)  # no need to feed a token nobody samples after
        text = "".join(out)
        self.chunks.append(text)
        return text

    def result(self) -> BatchResult:
        return BatchResult(
            text="".join(self.chunks),
            tokens=list(self.tokens),
            finish_reason=self.finish_reason or "running",
            prompt_tokens=len(self.prompt_tokens),
            completion_tokens=len(self.tokens),
            token_logprobs=list(self.token_logprobs),
            top_logprobs=list(self.top_logprobs),
        )


class BatchGenerator:
    """Runs many generation requests together, ``capacity`` at a time (the rest wait for a free slot).

    :meth:`add` a request (validated at once; its prompt is read when it gets a slot), then call
    :meth:`step` (prompt reading for the requests that joined, one sampled token per request that has
    read its prompt, one ``eval_batch``) or iterate :meth:`events` until :attr:`done`; :meth:`result`
    gives a request's outcome, :meth:`cancel` stops it and frees its slot, :meth:`release` forgets a
    finished one. Requests can be added at any time, also while others run.

    ``prefill_chunk``: the most prompt tokens one step reads, over all joining requests (None: no limit,
    each joining prompt is read whole in the step it joins). A multiple of
    :data:`rwkv_ggml.model.DEFAULT_CHUNK_SIZE` keeps a lone prompt's reading bit-identical to one
    ``eval_sequence`` call (the same pieces in the same graphs).
    """

    def __init__(
        self,
        model: Model,
        *,
        capacity: int = DEFAULT_CAPACITY,
        tokenizer: Tokenizer | str | None = None,
        prefill_chunk: int | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if prefill_chunk is not None and (
            isinstance(prefill_chunk, bool)
            or not isinstance(prefill_chunk, (int, np.integer))
            or prefill_chunk < 1
        ):
            raise ValueError(f"prefill_chunk must be None or an integer >= 1, got {prefill_chunk!r}")
        self.model = model
        self.tokenizer = _tokenizer_for(model, tokenizer)
        self.bank = StateBank(model, int(capacity))
        self.prefill_chunk = None if prefill_chunk is None else int(prefill_chunk)
        self._requests: dict[int, _Request] = {}
        self._waiting: list[int] = []
        self._running: list[int] = []  # in the order they joined: the order of the batch's rows
        self._next_id = 0

    def add(
        self,
        prompt: Prompt,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        *,
        params: SamplingParams | None = None,
        stop: str | Sequence[str] | None = None,
        constraint: Constraint | None = None,
        state: FloatArray | None = None,
        keep_states: bool = False,
        logprobs: int | None = None,
    ) -> int:
        """Queues a request; returns its id. ``prompt``: text or token ids (not empty); ``params``: its
        sampling parameters and seed (default :class:`~rwkv_ggml.sampling.SamplingParams`); ``stop``:
        extra stop strings; ``constraint``: a fresh structured-output constraint for this request alone
        (:func:`rwkv_ggml.structured.constraint_from_options`; it ends the request with "stop" once complete).
        ``state``: the state the prompt is read on top of (default the model's initial state), e.g. a
        cached state after the start of a conversation, ``prompt`` being the rest. ``keep_states``: keep
        copies of the state after the prompt and after the reply (:meth:`states`). ``logprobs``: record
        log-probabilities with that many alternatives per token (:class:`BatchResult`).
        Raises TypeError/ValueError for bad arguments, before anything runs."""
        max_tokens = _check_max_tokens(max_tokens)
        sp = params_from_options(params, stop)
        ids = _encode(self.tokenizer, prompt)
        if not ids:
            raise ValueError("the prompt is empty: give some text (or token ids) to continue")
        bad = [t for t in ids if not 0 <= t < self.model.n_vocab]
        if bad:
            raise ValueError(
                f"prompt token {bad[0]} is outside the model's vocabulary [0, {self.model.n_vocab})"
            )
        if constraint is not None and not isinstance(constraint, Constraint):
            raise TypeError(f"constraint must be a structured.Constraint, got {type(constraint).__name__}")
        start = None if state is None else _checks.check_state_array(state, "state", self.model.state_size)
        if logprobs is not None and (
            isinstance(logprobs, bool) or not isinstance(logprobs, (int, np.integer)) or logprobs < 0
        ):
            raise ValueError(f"logprobs must be None or an integer >= 0, got {logprobs!r}")
        request = _Request(
            ids,
            max_tokens,
            sp,
            self.tokenizer,
            self.model.n_vocab,
            constraint,
            start_state=None if start is None else start.copy(),
            keep_states=bool(keep_states),
            logprobs=None if logprobs is None else int(logprobs),
        )
        rid = self._next_id
        self._next_id += 1
        self._requests[rid] = request
        self._waiting.append(rid)
        return rid

    @property
    def done(self) -> bool:
        """Whether no request is running or waiting."""
        return not self._running and not self._waiting

    @property
    def running(self) -> list[int]:
        """The ids of the requests that hold a slot (reading their prompt or generating), in batch order."""
        return list(self._running)

    @property
    def waiting(self) -> list[int]:
        """The ids of the requests waiting for a slot, in the order they were added."""
        return list(self._waiting)

    @property
    def n_decoding(self) -> int:
        """How many running requests have read their prompt (the rows of the next ``eval_batch``)."""
        return sum(1 for rid in self._running if self._requests[rid].decoding)

    def result(self, request_id: int) -> BatchResult:
        """The request's outcome so far (``finish_reason`` "running" until it finishes)."""
        return self._request(request_id).result()

    def tokens_since(self, request_id: int, start: int) -> TokenRows:
        """The request's generated tokens from position ``start`` on (what a stream has not reported
        yet), with their log-probabilities when recorded."""
        request = self._request(request_id)
        return TokenRows(request.tokens[start:], request.token_logprobs[start:], request.top_logprobs[start:])

    def states(self, request_id: int) -> KeptStates:
        """The states a ``keep_states=True`` request kept (see :class:`KeptStates`; all None otherwise)."""
        request = self._request(request_id)
        return KeptStates(request.prompt_state, request.reply_state, request.fed)

    def release(self, request_id: int) -> BatchResult:
        """Forgets a finished request (its result, kept states and id) and returns its result. Raises
        ValueError for a request that has not finished (cancel it first)."""
        request = self._request(request_id)
        if request.finish_reason is None:
            raise ValueError(f"request {request_id} has not finished: cancel it before releasing it")
        del self._requests[request_id]
        return request.result()

    def cancel(self, request_id: int) -> None:
        """Stops a request (waiting or running): its slot is freed, its result keeps the text so far with
        ``finish_reason`` "cancelled". Cancelling a finished request does nothing."""
        request = self._request(request_id)
        if request.finish_reason is not None:
            return
        request.finish_reason = "cancelled"
        if request_id in self._waiting:
            self._waiting.remove(request_id)
        else:
            self._leave(request_id)

    def step(self) -> list[BatchEvent]:
        """Admits waiting requests into free slots, reads prompt tokens (at most ``prefill_chunk``), samples
        one token for every request that has read its prompt and feeds them all in one ``eval_batch``.
        Returns the events of this step: one per request that produced text or finished."""
        self._admit()
        self._prefill()
        events: list[BatchEvent] = []
        for rid in list(self._running):
            request = self._requests[rid]
            if not request.decoding:
                continue
            text = request.advance()
            if request.finish_reason is not None:
                self._leave(rid)
            if text or request.finish_reason is not None:
                events.append(BatchEvent(rid, text, request.finish_reason))
        decoding = [self._requests[rid] for rid in self._running if self._requests[rid].decoding]
        if decoding:
            try:
                logits = self.bank.eval_batch([r.tokens[-1] for r in decoding], [r.slot for r in decoding])
            except BaseException:
                self._fail_running()
                raise
            assert logits is not None
            for row, request in enumerate(decoding):
                request.logits = logits[row]
                request.fed = len(request.tokens)
        return events

    def events(self) -> Iterator[BatchEvent]:
        """Steps until every request (also those added meanwhile) is finished, yielding the events."""
        while not self.done:
            yield from self.step()

    def _admit(self) -> None:
        while self._waiting and self.bank.n_free:
            rid = self._waiting[0]
            request = self._requests[rid]
            request.slot = self.bank.allocate(request.start_state)  # raises on a closed model: stays waiting
            self._running.append(self._waiting.pop(0))

    def _prefill(self) -> None:
        """Reads the joining requests' prompts, in join order, up to the step's budget."""
        budget = self.prefill_chunk
        for rid in list(self._running):
            request = self._requests[rid]
            if request.decoding:
                continue
            if budget is not None and budget <= 0:
                break
            todo = len(request.prompt_tokens) - request.read
            n = todo if budget is None else min(todo, budget)
            assert request.slot is not None
            row = self.bank.array[request.slot]
            try:
                logits, _ = self.model.eval_sequence(
                    request.prompt_tokens[request.read : request.read + n], row, state_out=row
                )
            except BaseException:  # e.g. the model was closed, or Ctrl-C: the request waits again
                self._requeue(rid)
                raise
            request.read += n
            if budget is not None:
                budget -= n
            if request.decoding:
                request.logits, request.start_state = logits, None
                if request.keep_states:
                    request.prompt_state = row.copy()

    def _requeue(self, request_id: int) -> None:
        """A request whose prompt reading failed goes back to the front of the queue, to start over."""
        request = self._requests[request_id]
        self._running.remove(request_id)
        assert request.slot is not None
        self.bank.free(request.slot)
        request.slot, request.read = None, 0
        self._waiting.insert(0, request_id)

    def _fail_running(self) -> None:
        """After a failed step the running requests' states are half-updated: they end, "error"."""
        for rid in list(self._running):
            request = self._requests[rid]
            if request.decoding:
                request.finish_reason = "error"
                self._leave(rid)

    def _leave(self, request_id: int) -> None:
        request = self._requests[request_id]
        self._running.remove(request_id)
        assert request.slot is not None
        if request.keep_states and request.finish_reason in ("stop", "length") and request.decoding:
            request.reply_state = self.bank.array[request.slot].copy()
        self.bank.free(request.slot)
        request.slot, request.logits = None, None

    def _request(self, request_id: int) -> _Request:
        if isinstance(request_id, bool) or request_id not in self._requests:
            raise KeyError(f"no request with id {request_id!r} in this BatchGenerator")
        return self._requests[request_id]


def _per_prompt(value: Any, n: int, what: str) -> list[Any]:
    """``value`` repeated for each of the n prompts, or a list/tuple of exactly n values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} entries for {n} prompts: give one per prompt")
        return list(value)
    return [value] * n


def generate_batch(
    model: Model,
    prompts: Sequence[Prompt],
    max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS,
    *,
    tokenizer: Tokenizer | str | None = None,
    params: SamplingParams | Sequence[SamplingParams] | None = None,
    stop: str | Sequence[str] | None = None,
    constraints: Sequence[Constraint | None] | None = None,
    response_format: dict[str, Any] | None = None,
    grammar: str | None = None,
    regex: str | None = None,
) -> list[BatchResult]:
    """Generates a continuation for every prompt at once (all in one batch); the results in prompt order.

    ``prompts``: a list of texts or token-id lists (none empty). ``max_tokens``: one limit for all, or a
    list with one per prompt. ``params``: None (the defaults), one
    :class:`~rwkv_ggml.sampling.SamplingParams` for all or a list with one per prompt (each request
    samples with its own, seed included). ``stop``: stop strings added to every request's. Each result
    equals generating that prompt alone with :func:`rwkv_ggml.generation.generate` and the same options,
    up to the batch rounding described in the module docstring. Structured output: ``constraints`` (one fresh
    :class:`~rwkv_ggml.structured.Constraint` or None per prompt), or ``response_format`` / ``grammar`` /
    ``regex`` for every prompt (each gets its own constraint).

    Raises TypeError for prompts that are not a list of prompts, ValueError for an empty list, an empty
    prompt or a per-prompt list of the wrong length (before anything is computed).
    """
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (list, tuple)):
        raise TypeError(
            f"prompts must be a list of prompts (str or token ids), got {type(prompts).__name__}"
            + ("; wrap a single prompt in a list" if isinstance(prompts, (str, bytes)) else "")
        )
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    n = len(prompts)
    limits = _per_prompt(max_tokens, n, "max_tokens")
    if isinstance(params, (list, tuple)):
        bad = [p for p in params if not isinstance(p, SamplingParams)]
        if bad:
            raise TypeError(f"params must hold SamplingParams, got a {type(bad[0]).__name__}")
    elif params is not None and not isinstance(params, SamplingParams):
        raise TypeError(
            f"params must be None, a SamplingParams or a list of them, got {type(params).__name__}"
        )
    per_params = _per_prompt(params, n, "params")
    generator = BatchGenerator(model, capacity=n, tokenizer=tokenizer)
    if constraints is None:
        constraints = [
            constraint_from_options(
                generator.tokenizer,
                model.n_vocab,
                response_format=response_format,
                grammar=grammar,
                regex=regex,
            )
            for _ in prompts
        ]
    elif response_format is not None or grammar is not None or regex is not None:
        raise ValueError("give either constraints or response_format/grammar/regex, not both")
    per_constraint = _per_prompt(list(constraints), n, "constraints")
    ids = []
    for i, (prompt, limit, sp, c) in enumerate(zip(prompts, limits, per_params, per_constraint, strict=True)):
        try:
            ids.append(generator.add(prompt, limit, params=sp, stop=stop, constraint=c))
        except TypeError as exc:
            raise TypeError(f"prompts[{i}]: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"prompts[{i}]: {exc}") from None
    for _ in generator.events():
        pass
    return [generator.result(rid) for rid in ids]


__all__ = [
    "DEFAULT_CAPACITY",
    "BatchEvent",
    "BatchGenerator",
    "BatchResult",
    "KeptStates",
    "TokenRows",
    "generate_batch",
]
