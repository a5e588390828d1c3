"""The package's friendly Model: the core model plus text in, text out.

:class:`rwkv_ggml.model.Model` is the model layer (load, evals, hidden vectors, perplexity: token ids in,
arrays out). This Model adds the text methods, which delegate to :mod:`rwkv_ggml.generation`; it is what
``rwkv_ggml.Model`` is, so ``rwkv_ggml.Model(path).complete("Hello")`` works. The dependency points down:
this module imports the model and the text layer, neither of them imports this one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import generation as _text
from .model import FloatArray
from .model import Model as CoreModel
from .sampling import SamplingParams
from .tokenizer import Tokenizer

__all__ = ["Model"]

Prompt = str | Sequence[int] | np.ndarray


class Model(CoreModel):
    """An RWKV model with text methods (:meth:`generate`, :meth:`complete`, :meth:`embed`,
    :meth:`chat_session`); everything else is :class:`rwkv_ggml.model.Model`'s, with the same arguments."""

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None = None, *, dtype: str = "Q8_0",
                        revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
                        threads: int | None = None, progress: bool | None = None,
                        **model_kwargs: Any) -> Model:
        """A checkpoint from the Hugging Face hub (``"BlinkDL/rwkv-7-world"``, and ``filename`` when
        the repository holds several), downloaded, converted to ``dtype`` and cached on first use, then
        loaded. ``**model_kwargs``: the Model's own (``placement``, ``gn_eps``, ``bf16``).
        See :func:`rwkv_ggml.hub.pretrained_model_file` for the arguments, the cache and the errors."""
        from .hub import pretrained_model_file

        path = pretrained_model_file(repo_id, filename, dtype=dtype, revision=revision, cache_dir=cache_dir,
                                     threads=threads, progress=progress)
        return cls(path, threads, **model_kwargs)

    def generate(self, prompt: Prompt, max_tokens: int = _text.DEFAULT_MAX_TOKENS, *,
                 state: FloatArray | None = None, logits: FloatArray | None = None,
                 tokenizer: Tokenizer | str | None = None, params: SamplingParams | None = None,
                 stop: str | Sequence[str] | None = None, **sampling: Any) -> _text.Generation:
        """Streams up to ``max_tokens`` new tokens after ``prompt`` (text or token ids) as text chunks.

        ``state``/``logits``: continue from a previous generation's state and next-token logits (then
        ``prompt`` may be empty). ``tokenizer``: a Tokenizer or a kind ("20b", "world", "bytes"); default
        chosen from the vocabulary size. ``params``: a SamplingParams; ``stop``: stop string(s) added to
        it; ``**sampling``: any SamplingParams field (temperature, top_p, top_k, min_p, presence_penalty,
        frequency_penalty, repetition_penalty, penalty_decay, logit_bias, banned_tokens, stop_tokens,
        stop_strings, seed), overriding ``params``; an unknown name raises TypeError.
        See :func:`rwkv_ggml.generation.generate`."""
        return _text.generate(self, prompt, max_tokens, state=state, logits=logits, tokenizer=tokenizer,
                              params=params, stop=stop, **sampling)

    def complete(self, prompt: Prompt, max_tokens: int = _text.DEFAULT_MAX_TOKENS, *,
                 state: FloatArray | None = None, logits: FloatArray | None = None,
                 tokenizer: Tokenizer | str | None = None, params: SamplingParams | None = None,
                 stop: str | Sequence[str] | None = None, **sampling: Any) -> str:
        """The whole continuation of ``prompt`` as one string: :meth:`generate` without streaming, same
        arguments. See :func:`rwkv_ggml.generation.complete`."""
        return _text.complete(self, prompt, max_tokens, state=state, logits=logits, tokenizer=tokenizer,
                              params=params, stop=stop, **sampling)

    def embed(self, text_or_tokens: Prompt, tokenizer: Tokenizer | str | None = None, *,
              state: FloatArray | None = None) -> FloatArray:
        """The L2-normalised final hidden vector of the text (shape ``(n_embed,)``): dot products of two
        embeddings are cosine similarities. ``state``: read the text on top of this state instead of a
        fresh one. See :func:`rwkv_ggml.generation.embed`."""
        return _text.embed(self, text_or_tokens, tokenizer, state=state)

    def chat_session(self, tokenizer: Tokenizer | str | None = None, *, system: str | None = None,
                     user: str = "User", assistant: str = "Assistant", stop: str | Sequence[str] | None = None,
                     params: SamplingParams | None = None, **sampling: Any) -> _text.ChatSession:
        """A conversation that keeps its state between turns: ``system`` is fed once at the start, each
        turn is ``"{user}: {message}\\n\\n{assistant}:"``, the reply stops at ``stop`` (default
        ``"\\n\\n{user}:"``); ``params``/``**sampling`` as for :meth:`generate`.
        See :class:`rwkv_ggml.generation.ChatSession`."""
        return _text.ChatSession(self, tokenizer, system=system, user=user, assistant=assistant, stop=stop,
                                 params=params, **sampling)
