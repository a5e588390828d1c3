"""Choosing the next token from a model's logits (pure numpy).

:class:`SamplingParams` holds the options and validates them; :class:`Sampler` applies them
to one logits vector at a time and keeps the state that penalties need (which tokens were
generated, and how often); :class:`StopChecker` finds stop strings in streamed text.

The steps of :meth:`Sampler.sample`, in order:

1. logit changes: ``logit_bias`` is added, ``banned_tokens`` become -inf, then the penalties
   for tokens generated so far (repetition, then presence + frequency), then the tokens a
   structured-output mask forbids become -inf (:mod:`rwkv_ggml.structured`);
2. ``temperature`` (0 means greedy: the argmax of step 1, nothing below applies);
3. ``top_k`` keeps the k most likely tokens (0 = off);
4. ``top_p`` keeps the smallest set of most likely tokens whose probability reaches top_p
   (1.0 = off);
5. ``min_p`` drops tokens less likely than min_p times the most likely one (0 = off);
6. a draw from what is left, renormalised, with ``np.random.Generator(PCG64(seed))``.

Every step only ever removes tokens from the candidate set, never the most likely one, so
sampling cannot fail once step 1 has left at least one finite logit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .errors import ConstraintError

_F = TypeVar("_F")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


#: The sampling defaults, shared by the Python API and the command line (one definition, so the same seed
#: gives the same text everywhere). They are those of the ``rwkv`` package's ``PIPELINE_ARGS`` and the
#: RWKV demos for free text: full temperature, nucleus 0.85 (cuts the long tail of unlikely tokens that
#: derails small models), no top-k/min-p. The penalties stay off: on byte-level vocabularies they would
#: penalise letters and spaces.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.85
DEFAULT_TOP_K = 0
DEFAULT_MIN_P = 0.0
DEFAULT_PRESENCE_PENALTY = 0.0
DEFAULT_FREQUENCY_PENALTY = 0.0
DEFAULT_REPETITION_PENALTY = 1.0
DEFAULT_PENALTY_DECAY = 0.996


@dataclass
class SamplingParams:
    """Sampling options; the defaults are the ``DEFAULT_*`` constants of this module (temperature 1.0,
    top_p 0.85, everything else off). ``SamplingParams(top_p=1.0)`` samples from the model's plain
    distribution.

    ``presence_penalty``, ``frequency_penalty`` and ``penalty_decay`` follow the RWKV chat
    front ends (ChatRWKV's chat/API demo, ``alpha_presence``/``alpha_frequency``/
    ``alpha_decay``): see :class:`Sampler`. ``repetition_penalty`` is the multiplicative
    CTRL/HuggingFace penalty (1.0 = off). ``stop_tokens`` and ``stop_strings`` are not used by
    the Sampler itself; generation loops read them (:meth:`Sampler.is_stop_token`,
    :class:`StopChecker`).
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    min_p: float = DEFAULT_MIN_P
    presence_penalty: float = DEFAULT_PRESENCE_PENALTY
    frequency_penalty: float = DEFAULT_FREQUENCY_PENALTY
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    penalty_decay: float = DEFAULT_PENALTY_DECAY
    logit_bias: dict[int, float] | None = None
    banned_tokens: Sequence[int] = ()
    stop_tokens: Sequence[int] = ()
    stop_strings: Sequence[str] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError (TypeError for a wrong type) naming the first bad option."""

        def number(name: str) -> float:
            value = getattr(self, name)
            if not _is_number(value):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            return float(value)

        if number("temperature") < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not _is_int(self.top_k):
            raise TypeError(f"top_k must be an integer, got {self.top_k!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 < number("top_p") <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not 0.0 <= number("min_p") <= 1.0:
            raise ValueError(f"min_p must be in [0, 1] (0 = off), got {self.min_p!r}")
        number("presence_penalty")
        number("frequency_penalty")
        if number("repetition_penalty") <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty!r}")
        if not 0.0 <= number("penalty_decay") <= 1.0:
            raise ValueError(f"penalty_decay must be in [0, 1], got {self.penalty_decay!r}")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise TypeError(
                    f"logit_bias must be a dict {{token id: bias}}, got {type(self.logit_bias).__name__}"
                )
            for token, bias in self.logit_bias.items():
                if not _is_int(token) or token < 0:
                    raise ValueError(f"logit_bias key {token!r} is not a token id (an integer >= 0)")
                if not _is_number(bias) or math.isnan(bias) or bias == math.inf:
                    raise ValueError(
                        f"logit_bias[{token}] must be a finite number or -inf (a ban), got {bias!r}"
                    )
        for name in ("banned_tokens", "stop_tokens"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(
                value, (Sequence, set, frozenset, np.ndarray)
            ):
                raise TypeError(f"{name} must be a sequence of token ids, got {value!r}")
            for token in value:
                if not _is_int(token) or token < 0:
                    raise ValueError(f"{name} contains {token!r}, which is not a token id (an integer >= 0)")
        if isinstance(self.stop_strings, str) or not isinstance(
            self.stop_strings, (Sequence, set, frozenset)
        ):
            raise TypeError(f"stop_strings must be a sequence of strings, got {self.stop_strings!r}")
        for s in self.stop_strings:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop_strings must hold non-empty strings, got {s!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0, got {self.seed!r}")

    def max_token_id(self) -> int:
        """The largest token id any option mentions (-1 if none), to check against a vocabulary."""
        ids = [*self.banned_tokens, *self.stop_tokens, *(self.logit_bias or {})]
        return int(max(ids)) if ids else -1


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SamplingParams)}

#: The description of the sampling keywords, appended to the docstring of every function taking them.
SAMPLING_DOC = """
    Sampling (defaults shared with the command line; :mod:`rwkv_ggml.sampling`):

    * ``temperature``: 1.0; 0 = greedy (always the most likely token).
    * ``top_p``: 0.85; keep the smallest set of most likely tokens whose probability reaches it (1 = off).
    * ``top_k``: 0 (off); keep the k most likely tokens.
    * ``min_p``: 0 (off); drop tokens less likely than min_p times the most likely one.
    * ``presence_penalty`` / ``frequency_penalty``: 0; subtracted from the logit of each token already
      generated (once / per decayed occurrence). ``penalty_decay`` (0.996): per-token decay of the counts.
    * ``repetition_penalty`` (``repeat_penalty`` in the OpenAI-shaped methods): 1.0 (off); divides a
      repeated token's positive logit, multiplies a negative one.
    * ``logit_bias``: {token id: added logit}; ``banned_tokens``: ids never sampled.
    * ``stop``: stop string(s), not included in the text; ``stop_tokens``: ids that end the generation.
    * ``seed``: an integer for reproducible output (None: a fresh random seed).
    * ``params``: a whole :class:`~rwkv_ggml.sampling.SamplingParams` instead; options given here that
      differ from their defaults override its fields.
"""


def with_sampling_doc(function: _F) -> _F:
    """Appends :data:`SAMPLING_DOC` to a function's docstring (indented as a method's if it is one)."""
    doc = function.__doc__ or ""
    indent = "    " if doc and "\n        " in doc else ""
    function.__doc__ = (
        doc.rstrip() + "\n" + "\n".join(indent + line if line else line for line in SAMPLING_DOC.splitlines())
    )
    return function


def params_from_options(
    params: SamplingParams | None, stop: str | Sequence[str] | None = None, **options: Any
) -> SamplingParams:
    """SamplingParams from explicit keyword options (validated), or ``params`` with the options that
    differ from their defaults applied; ``stop`` is added to the stop strings."""
    if params is None:
        sp = SamplingParams(**options)
    elif not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
    else:
        changed = {k: v for k, v in options.items() if not _same(v, _FIELD_DEFAULTS[k])}
        sp = dataclasses.replace(params, **changed) if changed else params
    extra = stop_tuple(stop)
    return dataclasses.replace(sp, stop_strings=(*sp.stop_strings, *extra)) if extra else sp


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(type(a) is type(b) and a == b)
    except (TypeError, ValueError):
        return False


def stop_tuple(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """``stop`` (None, one string or several) as a tuple of strings."""
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


class Sampler:
    """Samples token ids from logits with :class:`SamplingParams`, keeping penalty state.

    Penalties follow ChatRWKV's chat/API demo: every generated token's occurrence count is
    kept; before each draw every count is multiplied by ``penalty_decay`` (0.996: a token
    generated 170 tokens ago weighs half) and the accepted token's count then grows by its
    weight (1 by default). Each token that has occurred since the last :meth:`reset` gets

        logit -= presence_penalty + frequency_penalty * count

    (ChatRWKV gives whitespace and digit tokens weight 0, so that they only get the presence
    penalty; pass ``accept(token, weight=0.0)`` for that). ``repetition_penalty`` r is applied
    to the same tokens first: a positive logit is divided by r, a negative one multiplied.

    The sampler does not see the prompt: call :meth:`accept` for prompt tokens too if they
    should be penalised. One Sampler serves one generation stream at a time.
    """

    def __init__(self, params: SamplingParams | None, n_vocab: int) -> None:
        """``params`` None means the defaults; ``n_vocab`` is the model's vocabulary size."""
        if params is None:
            params = SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        params.validate()  # the dataclass is mutable: check again what we are given now
        if not _is_int(n_vocab) or n_vocab <= 0:
            raise ValueError(f"n_vocab must be a positive integer, got {n_vocab!r}")
        if params.max_token_id() >= n_vocab:
            raise ValueError(
                f"sampling options mention token id {params.max_token_id()}, outside the vocabulary "
                f"[0, {n_vocab})"
            )
        self.params = params
        self.n_vocab = int(n_vocab)
        # Logit changes that do not depend on history, precomputed once: bias, then bans.
        self._offset = np.zeros(self.n_vocab, dtype=np.float64)
        for token, bias in (params.logit_bias or {}).items():
            self._offset[token] += bias
        if len(params.banned_tokens):
            self._offset[np.asarray(params.banned_tokens, dtype=np.int64)] = -np.inf
        self._has_offset = bool(params.logit_bias) or bool(len(params.banned_tokens))
        self._stop_tokens = frozenset(int(t) for t in params.stop_tokens)
        self._forbidden: npt.NDArray[np.bool_] | None = None  # scratch for a mask's complement
        self.reset()

    def reset(self) -> None:
        """Forget the generated tokens and restart the random stream from the seed.

        With a seed, the same logits after reset() give the same tokens again.
        """
        self._counts = np.zeros(self.n_vocab, dtype=np.float64)
        self._seen = np.zeros(self.n_vocab, dtype=bool)
        self._seen_ids: list[int] = []
        self.rng = np.random.default_rng(self.params.seed)

    # History ---------------------------------------------------------------------------------

    def accept(self, token: int, weight: float = 1.0) -> None:
        """Record a generated token: decay all counts, then add ``weight`` to this token's."""
        if not _is_int(token) or not 0 <= token < self.n_vocab:
            raise ValueError(f"token {token!r} is outside the vocabulary [0, {self.n_vocab})")
        if not _is_number(weight) or not math.isfinite(weight):
            raise ValueError(f"weight must be a finite number, got {weight!r}")
        token = int(token)
        if self.params.penalty_decay != 1.0 and self._seen_ids:
            self._counts *= self.params.penalty_decay
        self._counts[token] += weight
        if not self._seen[token]:
            self._seen[token] = True
            self._seen_ids.append(token)

    def counts(self) -> npt.NDArray[np.float64]:
        """A copy of the decayed occurrence counts (for inspection and tests)."""
        return self._counts.copy()

    def is_stop_token(self, token: int) -> bool:
        """Whether generation should end at this token (it is one of ``stop_tokens``)."""
        return int(token) in self._stop_tokens

    # Sampling --------------------------------------------------------------------------------

    def adjusted_logits(
        self, logits: npt.ArrayLike, mask: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.float64]:
        """Step 1: logits after bias, bans and penalties (a new float64 array); with ``mask`` (a boolean
        array of shape (n_vocab,), e.g. a :class:`~rwkv_ggml.structured.Constraint`'s), every token where
        it is False becomes -inf, last, so that no later step or option can bring it back."""
        out = np.array(logits, dtype=np.float64, copy=True)
        if out.shape != (self.n_vocab,):
            raise ValueError(f"logits must have shape ({self.n_vocab},), got {out.shape}")
        if mask is not None and (
            not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.n_vocab,)
        ):
            raise ValueError(f"mask must be a boolean array of shape ({self.n_vocab},)")
        if np.isnan(out).any() or np.isposinf(out).any():
            bad = int(np.flatnonzero(np.isnan(out) | np.isposinf(out))[0])
            raise ValueError(f"logits contain {out[bad]} (at token {bad}); they must be finite or -inf")
        if self._has_offset:
            out += self._offset
        if self._seen_ids:
            p = self.params
            seen = np.asarray(self._seen_ids, dtype=np.int64)
            if p.repetition_penalty != 1.0:
                vals = out[seen]
                out[seen] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
            if p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:
                out[seen] -= p.presence_penalty + p.frequency_penalty * self._counts[seen]
        if mask is not None:
            if self._forbidden is None:
                self._forbidden = np.empty(self.n_vocab, dtype=np.bool_)
            np.copyto(out, -np.inf, where=np.logical_not(mask, out=self._forbidden))
        if not np.isfinite(out).any():
            if mask is not None:
                raise ConstraintError(
                    "every token the constraint allows is banned or has logit -inf: nothing can be sampled"
                )
            raise ValueError("every token has logit -inf after bans and biases: nothing can be sampled")
        return out

    def probabilities(
        self, logits: npt.ArrayLike, mask: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.float64]:
        """The distribution :meth:`sample` draws from (steps 1-5), summing to 1; 0 wherever ``mask`` is
        False.

        For temperature 0 it is one-hot at the greedy choice.
        """
        adjusted = self.adjusted_logits(logits, mask)
        p = self.params
        if p.temperature == 0.0:
            probs = np.zeros(self.n_vocab, dtype=np.float64)
            probs[int(np.argmax(adjusted))] = 1.0
            return probs
        # Subtract the max before dividing so a tiny temperature cannot overflow exp().
        z = (adjusted - adjusted.max()) / p.temperature
        probs = np.exp(z)
        probs /= probs.sum()

        if p.top_k and p.top_k < self.n_vocab:
            keep = np.argpartition(-probs, p.top_k - 1)[: p.top_k]
            probs = _restrict(probs, keep)
        if p.top_p < 1.0:
            probs = _restrict(probs, _nucleus(probs, p.top_p))
        if p.min_p > 0.0:
            probs = _restrict(probs, np.flatnonzero(probs >= p.min_p * probs.max()))
        return probs

    def sample(self, logits: npt.ArrayLike, mask: npt.NDArray[np.bool_] | None = None) -> int:
        """Choose the next token id, only among those where ``mask`` (if given) is True. Does not call
        :meth:`accept`: the caller does that."""
        if self.params.temperature == 0.0:
            return int(np.argmax(self.adjusted_logits(logits, mask)))
        probs = self.probabilities(logits, mask)
        candidates = np.flatnonzero(probs)
        cdf = np.cumsum(probs[candidates])
        # Draw u in [0, total) and take the first candidate whose cdf exceeds it; a candidate
        # of zero probability can never be chosen this way.
        u = self.rng.random() * cdf[-1]
        index = min(int(np.searchsorted(cdf, u, side="right")), len(candidates) - 1)
        return int(candidates[index])

    def __repr__(self) -> str:
        return f"Sampler(n_vocab={self.n_vocab}, params={self.params!r})"


def _restrict(probs: npt.NDArray[np.float64], keep: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """probs with everything outside keep set to 0, renormalised."""
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    out /= out.sum()
    return out


def _nucleus(probs: npt.NDArray[np.float64], top_p: float) -> npt.NDArray[np.intp]:
    """Indices of the smallest set of most likely tokens whose total probability >= top_p (ties in the
    order of the token ids, as a stable sort would take them).

    The nucleus is usually a few dozen tokens: look at the m most likely first (argpartition is linear:
    every token left out is no more likely than those kept). When it is large (a flat distribution, as
    from random weights or a high temperature), one sort of the values finds the probability where the
    nucleus ends, and the set is every token above it plus the first tied ones: an index sort of the
    whole vocabulary, or repeated partitions, would cost ten times more.
    """
    n = probs.shape[0]
    for m in (64, 1024):
        if m >= n:
            break
        top = np.argpartition(-probs, m - 1)[:m]
        order = top[np.argsort(-probs[top], kind="stable")]
        # The full sum is 1 only up to rounding, so allow a hair below top_p.
        hit = np.flatnonzero(np.cumsum(probs[order]) >= top_p - 1e-12)
        if hit.size:
            size = int(hit[0]) + 1
            if size < m and probs[order[size]] < probs[order[size - 1]]:
                return order[:size]  # no token left out is as likely as the last one kept
            return _most_likely(probs, size, probs[order[size - 1]])
    descending = np.sort(probs)[::-1]
    hit = np.flatnonzero(np.cumsum(descending) >= top_p - 1e-12)
    size = int(hit[0]) + 1 if hit.size else n
    return _most_likely(probs, size, descending[size - 1])


def _most_likely(probs: npt.NDArray[np.float64], size: int, last: float) -> npt.NDArray[np.intp]:
    """The ``size`` most likely tokens, given the probability of the last of them: all more likely ones,
    then the tied ones in the order of their ids."""
    above = np.flatnonzero(probs > last)
    tied = np.flatnonzero(probs == last)[: size - above.size]
    return np.concatenate([above, tied])


class StopChecker:
    """Watches streamed text for stop strings.

    ``feed(chunk)`` returns ``(text_to_emit, stopped)``. Text that might be the beginning of a
    stop string is held back until the next chunk shows whether it is (then it and everything
    after it is dropped and ``stopped`` is True) or is not (then it is emitted). ``flush()``
    returns what is held back when the stream ends without a stop. With no stop strings every
    chunk passes straight through.
    """

    def __init__(self, stop_strings: Sequence[str] = ()) -> None:
        if isinstance(stop_strings, str):
            raise TypeError("stop_strings must be a sequence of strings, not a single string")
        self.stop_strings = tuple(stop_strings)
        for s in self.stop_strings:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
        self._held = ""
        self.stopped = False
        #: The stop string that ended the stream, or None.
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        if not isinstance(text, str):
            raise TypeError(f"feed() takes str, got {type(text).__name__}")
        if self.stopped:
            return "", True
        if not self.stop_strings:
            return text, False
        buffer = self._held + text
        # The earliest stop string wins (the longest one if several start at the same place).
        hits = [(at, -len(s), s) for s in self.stop_strings if (at := buffer.find(s)) >= 0]
        if hits:
            first, _, self.matched = min(hits)
            self.stopped = True
            self._held = ""
            return buffer[:first], True
        hold = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], False

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of buffer that is a proper prefix of some stop string."""
        longest = 0
        for s in self.stop_strings:
            for k in range(min(len(s) - 1, len(buffer)), longest, -1):
                if buffer.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def flush(self) -> str:
        """End of stream without a stop: the held-back text (empty after a stop)."""
        out = "" if self.stopped else self._held
        self._held = ""
        return out

    def reset(self) -> None:
        self._held = ""
        self.stopped = False
        self.matched = None


def token_logprob(logits: npt.NDArray[np.float32], token: int, n_top: int) -> tuple[float, dict[int, float]]:
    """The log-probability of ``token`` under the softmax of ``logits`` (the raw distribution, before any
    sampling setting), and the ``n_top`` most likely tokens with theirs, most likely first (ties in id
    order): what the ``logprobs`` options of the OpenAI APIs report."""
    z = logits.astype(np.float64)
    z -= z.max()
    logp = z - math.log(float(np.exp(z).sum()))
    n = min(n_top, logp.shape[0])
    top = np.argpartition(-logp, n - 1)[:n] if n else np.empty(0, dtype=np.intp)
    top = top[np.argsort(-logp[top], kind="stable")]
    return float(logp[token]), {int(t): float(logp[t]) for t in top}


__all__ = [
    "DEFAULT_FREQUENCY_PENALTY",
    "DEFAULT_MIN_P",
    "DEFAULT_PENALTY_DECAY",
    "DEFAULT_PRESENCE_PENALTY",
    "DEFAULT_REPETITION_PENALTY",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_K",
    "DEFAULT_TOP_P",
    "SAMPLING_DOC",
    "Sampler",
    "SamplingParams",
    "StopChecker",
    "params_from_options",
    "stop_tuple",
    "token_logprob",
    "with_sampling_doc",
]
