"""Structured output: generation constrained by a JSON schema, a regular expression or a grammar.

The constraint engine is `llguidance <https://github.com/guidance-ai/llguidance>`_ (the optional extra
``rwkv_ggml[structured]``; it is imported only here, and only when a constraint is asked for). It takes a
tokenizer as the list of its tokens' bytes, so all three of our tokenizers serve:

* "20b" and "world": the end-of-text token 0 ends a constrained text; the mask allows it only where the text
  is complete. World's byte tokens (ids 1..256) and tokens that end inside a multi-byte UTF-8 character are
  ordinary tokens for the engine, which matches bytes, not characters;
* "bytes" (the packaged default model) has no end-of-text token: the engine gets a virtual one (id 256, never
  in the model's mask) and a constrained text ends as soon as it is complete.

A :class:`Constraint` holds one request's parse state: make one per generation (generation refuses one that
was already used, so no state can leak between requests). The generation loop asks it for the mask of
allowed next tokens (:meth:`Constraint.allowed_tokens`, a boolean array the sampler applies in its first
step), feeds it the sampled token (:meth:`Constraint.consume`), and ends the text with finish reason "stop"
once :attr:`Constraint.finished`. :meth:`Constraint.prefetch` starts computing the next mask on a worker
thread (the engine releases the GIL, as the model's eval does), so the mask is ready when the eval is;
it does so only for masks that take long enough to be worth the hand-over
(:attr:`Constraint.prefetch_threshold_s`).

JSON schemas are compiled to single-line JSON with ``", "`` and ``": "`` separators (what ``json.dumps``
writes), which keeps small models from wandering into endless whitespace; a schema's ``"x-guidance"`` key
may override this (llguidance's JSON options). An object schema with ``properties`` and no word on other
properties allows only its own (``"additionalProperties": false`` is filled in, as OpenAI's strict mode
asks); ``"additionalProperties": true`` opens it again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .errors import ConstraintError
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    import llguidance

BoolArray = npt.NDArray[np.bool_]

#: The llguidance JSON options used unless a schema's "x-guidance" says otherwise.
JSON_DEFAULTS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_INSTALL_HINT = "structured output needs the llguidance package: pip install 'rwkv_ggml[structured]'"


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return llguidance


class _Vocabulary:
    """A tokenizer in the shape ``llguidance.TokenizerWrapper`` reads: token bytes, end-of-text and special
    ids, and a call that encodes text (bytes or str) to ids."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.tokens = [tokenizer.token_bytes(i) for i in range(tokenizer.n_vocab)]
        eos = tokenizer.eos_token_id
        if eos is None:  # the byte vocabulary: a virtual end-of-text token after the last byte
            eos = len(self.tokens)
            self.tokens.append(b"")
        self.eos_token_id = eos
        self.bos_token_id: int | None = None
        # Ids without bytes (end-of-text, padding, World's unused ids) can never be part of a text.
        self.special_token_ids = [i for i, b in enumerate(self.tokens) if not b]

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, str):
            return self._tokenizer.encode(text)
        return self._tokenizer.encode_bytes(text)


_LL_TOKENIZERS: dict[int, tuple[Tokenizer, Any]] = {}
_LL_LOCK = threading.Lock()


def ll_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """The llguidance tokenizer of ``tokenizer`` (built once per tokenizer object: ~0.25 s for 65536
    tokens)."""
    with _LL_LOCK:
        cached = _LL_TOKENIZERS.get(id(tokenizer))
        if cached is None or cached[0] is not tokenizer:
            llg = _llguidance()
            cached = (tokenizer, llg.LLTokenizer(llg.TokenizerWrapper(_Vocabulary(tokenizer))))
            _LL_TOKENIZERS[id(tokenizer)] = cached
        result: llguidance.LLTokenizer = cached[1]
        return result


def _compile(kind: str, source: Any) -> str:
    """The llguidance grammar of a JSON schema (dict or JSON text), a regex or a Lark/GBNF grammar."""
    llg = _llguidance()
    if kind == "json_schema":
        if isinstance(source, str):
            try:
                source = json.loads(source)
            except ValueError as exc:
                raise ConstraintError(f"the JSON schema is not valid JSON: {exc}") from None
        if not isinstance(source, (Mapping, bool)):
            raise ConstraintError(f"a JSON schema must be an object (a dict), got {type(source).__name__}")
        source = _closed_objects(source)
        try:
            grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(source), defaults=JSON_DEFAULTS)
        except (ValueError, TypeError) as exc:
            raise ConstraintError(f"bad JSON schema: {exc}") from None
        return str(grammar)
    if not isinstance(source, str):
        raise ConstraintError(f"{kind} must be a str, got {type(source).__name__}")
    if not source.strip() and kind == "grammar":
        raise ConstraintError("the grammar is empty")
    try:
        return str(llg.grammar_from("regex" if kind == "regex" else "grammar", source))
    except ValueError as exc:
        raise ConstraintError(f"bad {kind}: {exc}") from None


_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")


def _closed_objects(schema: Any) -> Any:
    """A copy of ``schema`` where every object schema that lists ``properties`` but says nothing about
    other properties gets ``"additionalProperties": false`` (what OpenAI's strict mode requires, and
    xgrammar's default). Every text valid under the copy is valid under the original; without it a model
    may add properties of its own whose names and values never end. ``"additionalProperties": true``
    keeps them allowed."""
    if isinstance(schema, list):
        return [_closed_objects(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMAS:
        if key in out:
            out[key] = _closed_objects(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_closed_objects(s) for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), Mapping):
            out[key] = {name: _closed_objects(s) for name, s in out[key].items()}
    open_keys = ("additionalProperties", "patternProperties", "unevaluatedProperties")
    if isinstance(out.get("properties"), Mapping) and not any(k in out for k in open_keys):
        out["additionalProperties"] = False
    return out


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _LL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rwkv-ggml-mask")
        return _POOL


class Constraint:
    """One request's constrained-decoding state (see the module docstring). Not thread-safe; one per
    generation. ``description`` names what it enforces, for messages."""

    #: :meth:`prefetch` hands the mask to the worker thread only while computing it takes at least this long
    #: (a moving average). A cheap mask (typically 0.1 ms) costs less than the hand-over, and on a machine
    #: whose cores all run the model's eval the worker would slow the eval down; an expensive one (complex
    #: grammars: milliseconds) is worth overlapping. 0: always; ``math.inf``: never.
    prefetch_threshold_s = 1e-3

    def __init__(self, tokenizer: Tokenizer, n_vocab: int, grammar: str, description: str) -> None:
        llg = _llguidance()
        if isinstance(n_vocab, bool) or not isinstance(n_vocab, (int, np.integer)) or n_vocab <= 0:
            raise ValueError(f"n_vocab must be a positive integer, got {n_vocab!r}")
        self.description = description
        self.n_vocab = int(n_vocab)
        lltok = ll_tokenizer(tokenizer)
        problem = llg.LLMatcher.validate_grammar(grammar, lltok)
        if problem and not problem.startswith("WARNING"):
            raise ConstraintError(f"bad {description}: {problem.strip()}")
        self._matcher = llg.LLMatcher(lltok, grammar, log_level=0)
        if self._matcher.is_error():
            raise ConstraintError(f"bad {description}: {self._matcher.get_error().strip()}")
        eos = tokenizer.eos_token_id
        #: The model id that ends a complete text (None: the text ends as soon as it is complete).
        self.eos_token_id = eos if eos is not None and eos < self.n_vocab else None
        self._bitmask = np.full((1, (lltok.vocab_size + 31) // 32), -1, dtype=np.int32)
        self._known = min(self.n_vocab, tokenizer.n_vocab)  # model ids the tokenizer has bytes for
        self._allowed = np.zeros(self.n_vocab, dtype=np.bool_)
        self._fresh = False  # whether _allowed is the mask of the current state
        self._future: Future[None] | None = None
        self._claimed = False
        self._fill_seconds = 0.0  # moving average of the mask computation time
        self.n_consumed = 0

    def claim(self, n_vocab: int) -> None:
        """Marks the constraint as used by a generation on a model with ``n_vocab`` tokens; a second claim
        raises ConstraintError (a constraint's state belongs to one request)."""
        if n_vocab != self.n_vocab:
            raise ConstraintError(
                f"the constraint was made for a vocabulary of {self.n_vocab} tokens, the model has {n_vocab}"
            )
        if self._claimed:
            raise ConstraintError(
                f"this Constraint ({self.description}) is already used by another generation: make a new one "
                "for each request (constraint_from_options)"
            )
        self._claimed = True

    # ---- the mask ----
    def _fill(self) -> None:
        # llguidance writes the bitmask and releases the GIL meanwhile
        start = time.perf_counter()
        self._matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        self._fill_seconds = 0.75 * self._fill_seconds + 0.25 * (time.perf_counter() - start)

    def _wait(self) -> None:
        if self._future is not None:
            future, self._future = self._future, None
            future.result()

    def prefetch(self) -> None:
        """Starts computing the next mask on a worker thread, to overlap with the model's eval, if masks
        have been expensive lately (:attr:`prefetch_threshold_s`); otherwise :meth:`allowed_tokens` computes
        it when asked."""
        if self._fill_seconds < self.prefetch_threshold_s:
            return
        if not self._fresh and self._future is None and not self._matcher.is_stopped():
            self._future = _pool().submit(self._fill)

    def allowed_tokens(self) -> BoolArray:
        """The mask of the next token: ``mask[i]`` is True where model id i may come next (the end-of-text
        id only where the text is complete). Owned by the constraint: read it before :meth:`consume`."""
        if not self._fresh:
            if self._future is not None:
                self._wait()
            else:
                self._fill()
            bits = np.unpackbits(
                self._bitmask.view(np.uint8).reshape(-1), count=self._known, bitorder="little"
            )
            self._allowed[: self._known] = bits
            self._fresh = True
        return self._allowed

    # ---- the parse state ----
    def consume(self, token: int) -> None:
        """Advances the parse by the sampled ``token`` (not the end-of-text token, which ends the text).
        Raises ConstraintError for a token the constraint does not allow."""
        self._wait()
        if not 0 <= int(token) < self._known or not self._matcher.consume_token(int(token)):
            raise ConstraintError(f"token {token} is not allowed by the {self.description}")
        self.n_consumed += 1
        self._fresh = False

    @property
    def complete(self) -> bool:
        """Whether the text so far is a complete match (it may still go on)."""
        self._wait()
        return bool(self._matcher.is_accepting())

    @property
    def finished(self) -> bool:
        """Whether the text must end here: it is complete and nothing may follow it, or it is complete and
        the vocabulary has no end-of-text token to choose the end with."""
        self._wait()
        if self._matcher.is_error():
            return False
        return bool(self._matcher.is_stopped()) or (
            self.eos_token_id is None and bool(self._matcher.is_accepting())
        )

    @property
    def error(self) -> str | None:
        """The engine's error message, if the parse failed (e.g. a resource limit), else None."""
        self._wait()
        return self._matcher.get_error() or None

    def __repr__(self) -> str:
        return f"Constraint({self.description}, {self.n_consumed} tokens consumed)"


def next_token(constraint: Constraint, sample: Callable[[BoolArray], int]) -> tuple[int | None, str | None]:
    """One constrained step of a generation loop: ``(token, None)`` with the token ``sample(mask)`` chose,
    or ``(None, finish_reason)``: "stop" when the text is complete (finished, or the end-of-text token was
    sampled), "error" when no token is allowed although the text is incomplete (the engine hit a limit)."""
    if constraint.finished:
        return None, "stop"
    mask = constraint.allowed_tokens()
    if not mask.any():
        return None, "stop" if constraint.complete else "error"
    token = sample(mask)
    if token == constraint.eos_token_id:
        return None, "stop"
    return token, None


def constraint_from_options(
    tokenizer: Tokenizer,
    n_vocab: int,
    *,
    response_format: Mapping[str, Any] | None = None,
    grammar: str | None = None,
    regex: str | None = None,
    json_schema: Mapping[str, Any] | str | None = None,
) -> Constraint | None:
    """A fresh :class:`Constraint` from the request options, or None when they ask for none.

    ``response_format``: OpenAI's ``{"type": "text"}`` (no constraint), ``{"type": "json_object"}`` (any
    JSON object) or ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}``.
    ``grammar``: a grammar in llguidance's Lark syntax (or llama.cpp's GBNF); ``regex``: the whole text must
    match it (Rust ``regex`` syntax); ``json_schema``: a schema (dict or JSON text). Give at most one.
    ``n_vocab``: the model's vocabulary size (ids the tokenizer lacks are never allowed).

    Raises ConstraintError naming the problem for a bad schema, grammar, regex or response_format, and
    ImportError when llguidance is not installed.
    """
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a Tokenizer, got {type(tokenizer).__name__}")
    given: list[tuple[str, Any]] = []
    if response_format is not None:
        spec = _from_response_format(response_format)
        if spec is not None:
            given.append(spec)
    for kind, value in (("grammar", grammar), ("regex", regex), ("json_schema", json_schema)):
        if value is not None:
            given.append((kind, value))
    if not given:
        return None
    if len(given) > 1:
        names = " and ".join("response_format" if k == "json_format" else k for k, _ in given)
        raise ConstraintError(
            f"give only one of response_format, grammar, regex and json_schema (got {names})"
        )
    kind, source = given[0]
    description = {
        "json_format": "JSON schema",
        "json_schema": "JSON schema",
        "grammar": "grammar",
        "regex": "regular expression",
    }[kind]
    compiled = _compile("json_schema" if kind == "json_format" else kind, source)
    return Constraint(tokenizer, n_vocab, compiled, description)


def request_constraint(
    tokenizer: Tokenizer,
    n_vocab: int,
    constraint: Constraint | None,
    *,
    response_format: Mapping[str, Any] | None = None,
    grammar: str | None = None,
    regex: str | None = None,
) -> Constraint | None:
    """A request's constraint: the one given (checked), or one made from the options (at most one of all)."""
    if constraint is None:
        return constraint_from_options(
            tokenizer, n_vocab, response_format=response_format, grammar=grammar, regex=regex
        )
    if not isinstance(constraint, Constraint):
        raise TypeError(f"constraint must be a structured.Constraint, got {type(constraint).__name__}")
    if response_format is not None or grammar is not None or regex is not None:
        raise ConstraintError("give either constraint= or response_format=/grammar=/regex=, not both")
    return constraint


def _from_response_format(response_format: Any) -> tuple[str, Any] | None:
    if not isinstance(response_format, Mapping):
        raise ConstraintError(
            "response_format must be a dict like {'type': 'json_object'}, "
            f"got {type(response_format).__name__}"
        )
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ("json_format", {"type": "object"})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise ConstraintError(
                "response_format {'type': 'json_schema'} needs 'json_schema': {'name': ..., 'schema': {...}}"
            )
        schema = spec.get("schema")
        if schema is None:
            raise ConstraintError("response_format['json_schema'] has no 'schema'")
        return ("json_format", schema)
    raise ConstraintError(
        f"unknown response_format type {kind!r}; use 'text', 'json_object' or 'json_schema'"
    )


__all__ = [
    "JSON_DEFAULTS",
    "Constraint",
    "constraint_from_options",
    "ll_tokenizer",
    "next_token",
    "request_constraint",
]
