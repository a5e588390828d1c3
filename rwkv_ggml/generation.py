"""Text in, text out: streaming generation, completion, sentence embeddings and chat on a Model.

Everything here composes the lower layers: :class:`~rwkv_ggml.model.Model` (sequence mode for the
prompt, one :meth:`~rwkv_ggml.model.Model.eval` per new token), a
:class:`~rwkv_ggml.tokenizer.Tokenizer` (picked from the model's vocabulary size unless given) and
the :mod:`~rwkv_ggml.sampling` options. The functions take the model as their first argument; the
package's ``rwkv_ggml.Model`` (:mod:`rwkv_ggml.api`) exposes them as methods (``model.generate(...)``,
``model.complete(...)``, ``model.embed(...)``, ``model.chat_session(...)``).

State continuation. An RWKV model's whole memory of the text so far is its state vector, so a
conversation never has to be re-read: :class:`Generation` exposes ``state`` (the model state after
the prompt and every generated token) and ``logits`` (the next-token logits at that state), and
``generate(model, "", state=g.state, logits=g.logits)`` picks up exactly where ``g`` stopped:
with greedy sampling, two calls of n and m tokens produce the same tokens as one call of n + m.
(Penalties restart with each call: a :class:`~rwkv_ggml.sampling.Sampler` only remembers its own
tokens.)

Empty prompts. Without a state there is nothing to continue from, so an empty prompt raises
ValueError rather than silently starting from some special token: the byte-level models have no
end-of-text token, and for the 20B/World models the right separator depends on how the model was
tuned. With ``state`` and ``logits`` an empty prompt means "continue".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .errors import ModelIOError
from .sampling import (
    DEFAULT_FREQUENCY_PENALTY,
    DEFAULT_MIN_P,
    DEFAULT_PENALTY_DECAY,
    DEFAULT_PRESENCE_PENALTY,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    Sampler,
    SamplingParams,
    StopChecker,
    params_from_options,
    token_logprob,
    with_sampling_doc,
)
from .structured import Constraint, next_token, request_constraint
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .model import Model

FloatArray = npt.NDArray[np.float32]

#: Default number of new tokens, for the Python API and the command line alike (with the sampling
#: defaults of :mod:`rwkv_ggml.sampling`, the same seed gives the same text in both).
DEFAULT_MAX_TOKENS = 200
#: The small byte-level RWKV-4 shipped inside the package (docs/default-model.md).
DEFAULT_MODEL_FILE = Path(__file__).resolve().parent / "data" / "default-model.bin"

_SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))


def default_model_path() -> Path:
    """Path of the packaged default model, so ``rwkv-ggml generate "..."`` works with no download."""
    if not DEFAULT_MODEL_FILE.is_file():
        raise ModelIOError(
            f"the packaged default model '{DEFAULT_MODEL_FILE}' is missing; "
            "reinstall rwkv_ggml or pass a model path"
        )
    return DEFAULT_MODEL_FILE


def _tokenizer_for(model: Model, tokenizer: Tokenizer | str | None) -> Tokenizer:
    """A Tokenizer instance, a kind name ("20b", "world", "bytes") or None (chosen from n_vocab)."""
    if tokenizer is None or isinstance(tokenizer, str):
        return Tokenizer.for_model(model, tokenizer)
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a Tokenizer, a kind name or None, got {type(tokenizer).__name__}")
    if tokenizer.n_vocab > model.n_vocab:
        raise ValueError(
            f"tokenizer {tokenizer.name!r} produces ids up to {tokenizer.n_vocab - 1}, but the "
            f"model has only {model.n_vocab} vocabulary rows"
        )
    return tokenizer


def _encode(tokenizer: Tokenizer, prompt: str | Sequence[int] | np.ndarray) -> list[int]:
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if isinstance(prompt, (bytes, bytearray, memoryview)):
        return tokenizer.encode_bytes(bytes(prompt))
    if isinstance(prompt, np.ndarray):
        if prompt.ndim != 1 or (prompt.size and not np.issubdtype(prompt.dtype, np.integer)):
            raise TypeError(f"a token prompt must be a 1-D integer array, got {prompt.dtype} {prompt.shape}")
        return [int(t) for t in prompt]
    try:
        ids = list(prompt)
    except TypeError:
        raise TypeError(
            f"prompt must be a str or a sequence of token ids, got {type(prompt).__name__}"
        ) from None
    for pos, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"prompt token at position {pos} is {t!r}, not an int")
    return [int(t) for t in ids]


def _sampling_params(
    params: SamplingParams | None, stop: str | Sequence[str] | None, sampling: dict[str, Any]
) -> SamplingParams:
    """params_from_options for a ``**sampling`` dict; an unknown name is a TypeError listing the known."""
    unknown = sorted(set(sampling) - _SAMPLING_FIELDS)
    if unknown:
        known = ", ".join(sorted(_SAMPLING_FIELDS))
        raise TypeError(f"unknown sampling option(s) {', '.join(unknown)}; known: {known}")
    return params_from_options(params, stop, **sampling)


def _check_max_tokens(max_tokens: Any) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 0:
        raise ValueError(f"max_tokens must be an integer >= 0, got {max_tokens!r}")
    return int(max_tokens)


class Generation(Iterator[str]):
    """A running generation: iterate it for text chunks as they are produced.

    Each chunk is complete text: a multi-byte character split across tokens is held back until
    its last byte arrives (the tokenizer's incremental decoder), and text that may be the start
    of a stop string is held back until it is known not to be one. After (or during) the
    iteration:

    * ``tokens``: the generated token ids (a stop token itself is not included);
    * ``text``: everything yielded so far;
    * ``finish_reason``: None while running, then "length", "stop_token", "stop_string", or with a
      ``constraint`` (:mod:`rwkv_ggml.structured`) "stop" when the constrained text is complete
      ("error" if the constraint engine failed);
    * ``state`` / ``logits``: the model state after the prompt and ``tokens``, and the
      next-token logits there (copies), to continue with ``generate(model, "", state=...,
      logits=...)``. A generation that stopped on a stop string has fed every token up to the
      one that completed the stop string, so the state includes the stop string's text.

    The prompt is evaluated on the first ``next()``, not when the object is created.
    """

    def __init__(
        self,
        model: Model,
        prompt_tokens: list[int],
        max_tokens: int,
        tokenizer: Tokenizer,
        params: SamplingParams,
        state: FloatArray | None,
        logits: FloatArray | None,
        rng: np.random.Generator | None = None,
        logprobs: int | None = None,
        constraint: Constraint | None = None,
    ) -> None:
        if constraint is not None:
            constraint.claim(model.n_vocab)
        #: The structured-output constraint the tokens obey (its mask is applied in the sampler's step 1).
        self.constraint = constraint
        self.model = model
        self.tokenizer = tokenizer
        self.params = params
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.sampler = Sampler(params, model.n_vocab)
        if rng is not None:
            self.sampler.rng = rng
        self.logprobs = logprobs
        #: With ``logprobs``: each generated token's log-probability, and the ``logprobs`` most likely
        #: tokens with theirs, both from the log-softmax of the raw logits the sampler saw.
        self.token_logprobs: list[float] = []
        self.top_logprobs: list[dict[int, float]] = []
        self.tokens: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None
        self._decoder = tokenizer.incremental_decoder()
        self._stops = StopChecker(params.stop_strings)
        self._state = None if state is None else np.array(state, dtype=np.float32, copy=True)
        self._logits = None if logits is None else np.array(logits, dtype=np.float32, copy=True)
        self._pending: int | None = None  # sampled and emitted, not yet fed to the model
        self._started = False
        self._queue: list[str] = []

    # ---- the model side ----
    def _start(self) -> None:
        self._started = True
        if self.prompt_tokens:
            self._logits, self._state = self.model.eval_sequence(self.prompt_tokens, self._state)
        elif self._state is None or self._logits is None:  # generate() prevents this; be safe anyway
            raise ValueError("nothing to generate from: the prompt is empty and no state/logits were given")

    def _feed_pending(self) -> None:
        """Feeds the last sampled token. Done lazily: the final token of a run is only fed if the
        caller asks for ``state``/``logits`` (or the run continues), which saves one eval per run."""
        if self._pending is not None:
            tok, self._pending = self._pending, None
            logits, self._state = self.model.eval(tok, self._state, state_out=self._state)
            self._logits = np.array(logits, dtype=np.float32, copy=True)

    @property
    def state(self) -> FloatArray:
        """The model state after the prompt and every generated token (a copy)."""
        if not self._started:
            self._start()
        self._feed_pending()
        assert self._state is not None
        return self._state.copy()

    @property
    def logits(self) -> FloatArray:
        """The next-token logits at :attr:`state` (a copy)."""
        if not self._started:
            self._start()
        self._feed_pending()
        assert self._logits is not None
        return self._logits.copy()

    # ---- iteration ----
    def __iter__(self) -> Generation:
        return self

    def _emit(self, text: str) -> None:
        if text:
            out, stopped = self._stops.feed(text)
            if out:
                self._queue.append(out)
            if stopped:
                self.finish_reason = "stop_string"

    def _finish(self, reason: str) -> None:
        if self.finish_reason is None:
            self._emit(self._decoder.flush())
        if self.finish_reason is None:
            tail = self._stops.flush()
            if tail:
                self._queue.append(tail)
            self.finish_reason = reason

    def _step(self) -> None:
        """Samples one token (or finishes); queues whatever text became complete."""
        if not self._started:
            self._start()
        if self.constraint is not None and self.constraint.finished:
            self._finish("stop")  # complete, and nothing may follow: no eval of the last token needed
            return
        if len(self.tokens) >= self.max_tokens:
            self._finish("length")
            return
        self._feed_pending()
        assert self._logits is not None
        logits = self._logits
        if self.constraint is None:
            tok = self.sampler.sample(logits)
        else:
            choice, reason = next_token(self.constraint, lambda mask: self.sampler.sample(logits, mask))
            if choice is None:
                self._finish(reason or "stop")
                return
            tok = choice
        if self.sampler.is_stop_token(tok):
            self._finish("stop_token")
            return
        if self.logprobs is not None:
            self._record_logprobs(self._logits, tok)
        self.sampler.accept(tok)
        self.tokens.append(tok)
        self._pending = tok
        if self.constraint is not None:
            self.constraint.consume(tok)
            self.constraint.prefetch()  # the next mask is computed while the model reads tok
        self._emit(self._decoder.feed([tok]))

    def _record_logprobs(self, logits: FloatArray, token: int) -> None:
        lp, top = token_logprob(logits, token, self.logprobs or 0)
        self.token_logprobs.append(lp)
        self.top_logprobs.append(top)

    def __next__(self) -> str:
        while not self._queue:
            if self.finish_reason is not None:
                raise StopIteration
            self._step()
        chunk = self._queue.pop(0)
        self.text += chunk
        return chunk

    def __repr__(self) -> str:
        return (
            f"Generation({len(self.prompt_tokens)} prompt tokens, {len(self.tokens)}/{self.max_tokens} "
            f"generated, finish_reason={self.finish_reason!r})"
        )


def _check_start(
    model: Model, ids: list[int], state: FloatArray | None, logits: FloatArray | None
) -> tuple[FloatArray | None, FloatArray | None]:
    """The checked ``state`` and ``logits`` a generation of prompt ``ids`` starts from."""
    if state is not None:
        state = model._check_state(state, "state")
    if logits is not None:
        logits = np.asarray(logits, dtype=np.float32)
        if logits.shape != (model.n_vocab,):
            raise ValueError(f"logits must have shape ({model.n_vocab},), got {logits.shape}")
    if not ids:
        if state is None or logits is None:
            raise ValueError(
                "the prompt is empty: give some text to continue (an empty prompt is only "
                "allowed together with state= and logits= from a previous generation)"
            )
    else:
        bad = [t for t in ids if not 0 <= t < model.n_vocab]
        if bad:
            raise ValueError(f"prompt token {bad[0]} is outside the model's vocabulary [0, {model.n_vocab})")
    return state, logits


@with_sampling_doc
def generate(
    model: Model,
    prompt: str | Sequence[int] | np.ndarray,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    top_k: int = DEFAULT_TOP_K,
    min_p: float = DEFAULT_MIN_P,
    presence_penalty: float = DEFAULT_PRESENCE_PENALTY,
    frequency_penalty: float = DEFAULT_FREQUENCY_PENALTY,
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
    penalty_decay: float = DEFAULT_PENALTY_DECAY,
    logit_bias: dict[int, float] | None = None,
    banned_tokens: Sequence[int] = (),
    stop: str | Sequence[str] | None = None,
    stop_tokens: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    seed: int | None = None,
    params: SamplingParams | None = None,
    state: FloatArray | None = None,
    logits: FloatArray | None = None,
    tokenizer: Tokenizer | str | None = None,
    rng: np.random.Generator | None = None,
    logprobs: int | None = None,
    response_format: Mapping[str, Any] | None = None,
    grammar: str | None = None,
    regex: str | None = None,
    constraint: Constraint | None = None,
) -> Generation:
    """Streams up to ``max_tokens`` (default 200) new tokens after ``prompt`` as text chunks.

    ``prompt``: text, or token ids. It is fed in sequence mode (fast), on top of ``state`` if
    given. ``logits``: the next-token logits at ``state`` (e.g. a previous Generation's); with
    both, ``prompt`` may be empty to continue right there. ``tokenizer``: a Tokenizer or a kind
    ("20b", "world", "bytes"); default chosen from the model's vocabulary size. ``stop_strings``:
    like ``stop`` (the :class:`~rwkv_ggml.sampling.SamplingParams` field's name). ``rng``: draw from this
    random generator instead of a new one seeded with ``seed`` (to continue one random stream across
    calls). ``logprobs``: record each token's log-probability and the ``logprobs`` most likely
    alternatives (:attr:`Generation.token_logprobs`, :attr:`Generation.top_logprobs`).

    Structured output (:mod:`rwkv_ggml.structured`, needs llguidance): ``response_format`` (OpenAI's, e.g.
    ``{"type": "json_object"}``), ``grammar`` (Lark or GBNF), ``regex``, or a fresh ``constraint``; at most
    one. The text then obeys it, and ends with finish_reason "stop" once complete ("length" if
    ``max_tokens`` runs out first). A bad schema, grammar or regex raises ConstraintError.

    Raises ValueError for an empty prompt without state and logits (see the module docstring),
    TypeError/ValueError for bad options (before anything is computed).
    """
    max_tokens = _check_max_tokens(max_tokens)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if logprobs is not None and (
        isinstance(logprobs, bool) or not isinstance(logprobs, (int, np.integer)) or logprobs < 0
    ):
        raise ValueError(f"logprobs must be None or an integer >= 0, got {logprobs!r}")
    tok = _tokenizer_for(model, tokenizer)
    sp = params_from_options(
        params,
        stop,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        repetition_penalty=repetition_penalty,
        penalty_decay=penalty_decay,
        logit_bias=logit_bias,
        banned_tokens=banned_tokens,
        stop_tokens=stop_tokens,
        stop_strings=stop_strings,
        seed=seed,
    )
    constraint = request_constraint(
        tok, model.n_vocab, constraint, response_format=response_format, grammar=grammar, regex=regex
    )
    ids = _encode(tok, prompt)
    state, logits = _check_start(model, ids, state, logits)
    return Generation(
        model,
        ids,
        max_tokens,
        tok,
        sp,
        state,
        logits,
        rng,
        None if logprobs is None else min(int(logprobs), model.n_vocab),
        constraint,
    )


@with_sampling_doc
def complete(
    model: Model,
    prompt: str | Sequence[int] | np.ndarray,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    top_k: int = DEFAULT_TOP_K,
    min_p: float = DEFAULT_MIN_P,
    presence_penalty: float = DEFAULT_PRESENCE_PENALTY,
    frequency_penalty: float = DEFAULT_FREQUENCY_PENALTY,
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
    penalty_decay: float = DEFAULT_PENALTY_DECAY,
    logit_bias: dict[int, float] | None = None,
    banned_tokens: Sequence[int] = (),
    stop: str | Sequence[str] | None = None,
    stop_tokens: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    seed: int | None = None,
    params: SamplingParams | None = None,
    state: FloatArray | None = None,
    logits: FloatArray | None = None,
    tokenizer: Tokenizer | str | None = None,
    response_format: Mapping[str, Any] | None = None,
    grammar: str | None = None,
    regex: str | None = None,
) -> str:
    """The whole continuation of ``prompt`` as one string (:func:`generate` without streaming, with the
    same arguments)."""
    gen = generate(
        model,
        prompt,
        max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        repetition_penalty=repetition_penalty,
        penalty_decay=penalty_decay,
        logit_bias=logit_bias,
        banned_tokens=banned_tokens,
        stop=stop,
        stop_tokens=stop_tokens,
        stop_strings=stop_strings,
        seed=seed,
        params=params,
        state=state,
        logits=logits,
        tokenizer=tokenizer,
        response_format=response_format,
        grammar=grammar,
        regex=regex,
    )
    return "".join(gen)


def embed(
    model: Model,
    text_or_tokens: str | Sequence[int] | np.ndarray,
    tokenizer: Tokenizer | str | None = None,
    *,
    state: FloatArray | None = None,
) -> FloatArray:
    """A sentence embedding: the model's final hidden vector for the last token, L2-normalised.

    The vector is the output of ``ln_out`` (what the head reads to predict the next token), after
    reading the whole text in sequence mode from a fresh state (or ``state``). Because an RWKV state
    summarises everything read, the last token's hidden vector depends on the whole text; the
    normalisation makes the dot product of two embeddings their cosine similarity. Shape
    ``(n_embed,)``, float32. Deterministic for a given model file and thread count.
    """
    ids = _encode(_tokenizer_for(model, tokenizer), text_or_tokens)
    if not ids:
        raise ValueError("cannot embed an empty text")
    hidden, _ = model.hidden(ids, state)
    vec = np.asarray(hidden, dtype=np.float64)
    norm = float(np.linalg.norm(vec))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"the hidden vector has norm {norm}; it cannot be normalised")
    return (vec / norm).astype(np.float32)


class LeadingWhitespace:
    """Drops the whitespace at the start of a stream of text pieces (the space or newline a model writes
    after ``"Assistant:"``): call it on each piece in order."""

    def __init__(self) -> None:
        self.started = False

    def __call__(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        return text


def strip_leading_whitespace(chunks: Iterator[str]) -> Iterator[str]:
    """The stream with its leading whitespace removed (pieces that become empty are dropped)."""
    strip = LeadingWhitespace()
    for chunk in chunks:
        chunk = strip(chunk)
        if chunk:
            yield chunk


def __getattr__(name: str) -> Any:
    # ChatSession moved to rwkv_ggml.chat_session (it builds on this module); the old name still works.
    if name == "ChatSession":
        from .chat_session import ChatSession

        return ChatSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL_FILE",
    "Generation",
    "complete",
    "default_model_path",
    "embed",
    "generate",
    "strip_leading_whitespace",
]
