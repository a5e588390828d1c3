"""The package's friendly Model: the core model plus text in, text out.

:class:`rwkv_ggml.model.Model` is the model layer (load, evals, hidden vectors, perplexity: token ids in,
arrays out). This Model adds the text methods, which delegate to :mod:`rwkv_ggml.generation` and
:mod:`rwkv_ggml.completions`; it is what ``rwkv_ggml.Model`` is, so
``rwkv_ggml.Model(path).complete("Hello")`` works. The dependency points down: this module imports the
model and the text layer, neither of them imports this one.

Sampling options are explicit keyword parameters (visible to ``help()`` and IDEs) whose defaults are the
one set of defaults of :mod:`rwkv_ggml.sampling` and :data:`rwkv_ggml.generation.DEFAULT_MAX_TOKENS`, the
same as the command line's: temperature 1.0, top_p 0.85, top_k 0 (off), min_p 0 (off), no penalties,
200 new tokens.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import chat_session as _chat
from . import completions as _oai
from . import generation as _text
from .batch_generation import BatchResult
from .chat_format import ChatMessage, ChatTemplate, TemplateLike
from .generation import DEFAULT_MAX_TOKENS
from .model import FloatArray
from .model import Model as CoreModel
from .sampling import (
    DEFAULT_FREQUENCY_PENALTY,
    DEFAULT_MIN_P,
    DEFAULT_PENALTY_DECAY,
    DEFAULT_PRESENCE_PENALTY,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    SamplingParams,
    params_from_options,
    with_sampling_doc,
)
from .structured import constraint_from_options
from .tokenizer import Tokenizer

__all__ = ["Model"]

Prompt = str | Sequence[int] | np.ndarray


#: The sampling keywords the methods take, under SamplingParams' names.
_SAMPLING_NAMES = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "penalty_decay",
    "logit_bias",
    "banned_tokens",
    "stop_tokens",
    "seed",
)


def _sampling_options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The sampling keywords among a method's arguments (its ``locals()``), under SamplingParams' names:
    the OpenAI-shaped methods call repetition_penalty ``repeat_penalty``, as llama-cpp-python does."""
    options = {name: arguments[name] for name in _SAMPLING_NAMES if name in arguments}
    if "repeat_penalty" in arguments:
        options["repetition_penalty"] = arguments["repeat_penalty"]
    return options


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class Model(CoreModel):
    """An RWKV model with text methods: :meth:`generate` (streaming), :meth:`complete`,
    :meth:`create_completion` / :meth:`create_chat_completion` (OpenAI-shaped results), :meth:`chat_session`,
    :meth:`embed`, :meth:`tokenize` / :meth:`detokenize`. Everything else is
    :class:`rwkv_ggml.model.Model`'s, with the same arguments (``Model(path, threads=None, ...)``).

    The tokenizer is chosen from the vocabulary size (GPT-NeoX 20B for 50277, RWKV World for 65536, bytes
    for 256); set :attr:`tokenizer` (or pass ``tokenizer=`` to a method) to use another.
    """

    @classmethod
    def from_pretrained(
        cls,
        repo_id: str,
        filename: str | None = None,
        *,
        dtype: str = "Q8_0",
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        progress: bool | None = None,
        **model_kwargs: Any,
    ) -> Model:
        """A checkpoint from the Hugging Face hub (``"BlinkDL/rwkv-7-world"``, and ``filename`` when
        the repository holds several), downloaded, converted to ``dtype`` and cached on first use, then
        loaded. ``**model_kwargs``: the Model's own (``placement``, ``gn_eps``, ``bf16``).
        See :func:`rwkv_ggml.hub.pretrained_model_file` for the arguments, the cache and the errors."""
        from .hub import pretrained_model_file

        path = pretrained_model_file(
            repo_id,
            filename,
            dtype=dtype,
            revision=revision,
            cache_dir=cache_dir,
            threads=threads,
            progress=progress,
        )
        return cls(path, threads, **model_kwargs)

    # ---- tokenizer ----
    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the text methods use unless given one (chosen from the vocabulary size; assign a
        Tokenizer or a kind name, "20b", "world" or "bytes", to change it)."""
        chosen = self.__dict__.get("_text_tokenizer")
        if chosen is None:
            chosen = self.__dict__["_text_tokenizer"] = _text._tokenizer_for(self, None)
        assert isinstance(chosen, Tokenizer)
        return chosen

    @tokenizer.setter
    def tokenizer(self, value: Tokenizer | str) -> None:
        if value is None:
            raise TypeError(
                "tokenizer must be a Tokenizer or a kind name ('20b', 'world', 'bytes'), not None"
            )
        self.__dict__["_text_tokenizer"] = _text._tokenizer_for(self, value)

    def _tok(self, tokenizer: Tokenizer | str | None) -> Tokenizer:
        return self.tokenizer if tokenizer is None else _text._tokenizer_for(self, tokenizer)

    def tokenize(self, text: str, *, tokenizer: Tokenizer | str | None = None) -> list[int]:
        """The token ids of ``text`` (with :attr:`tokenizer`, or ``tokenizer`` if given)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tok(tokenizer).encode(text)

    def detokenize(self, ids: Sequence[int] | np.ndarray, *, tokenizer: Tokenizer | str | None = None) -> str:
        """The text of token ids (invalid UTF-8, e.g. half a character, becomes U+FFFD)."""
        return self._tok(tokenizer).decode(ids)

    # ---- generation ----
    @with_sampling_doc
    def generate(
        self,
        prompt: Prompt,
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
        seed: int | None = None,
        params: SamplingParams | None = None,
        state: FloatArray | None = None,
        logits: FloatArray | None = None,
        tokenizer: Tokenizer | str | None = None,
        response_format: dict[str, Any] | None = None,
        grammar: str | None = None,
        regex: str | None = None,
    ) -> _text.Generation:
        """Streams up to ``max_tokens`` (default 200) new tokens after ``prompt`` (text or token ids) as
        text chunks: ``for chunk in model.generate("Once upon a time"): print(chunk, end="")``.

        The returned :class:`~rwkv_ggml.generation.Generation` also has ``tokens``, ``text``,
        ``finish_reason`` and, to continue, ``state``/``logits``: pass them back as ``state=``/``logits=``
        (then ``prompt`` may be empty). ``tokenizer``: a Tokenizer or a kind ("20b", "world", "bytes");
        default :attr:`tokenizer`. Bad options raise TypeError/ValueError before anything is computed.
        ``response_format`` / ``grammar`` / ``regex``: structured output (:mod:`rwkv_ggml.structured`).
        """
        return _text.generate(
            self,
            prompt,
            max_tokens,
            **_sampling_options(locals()),
            stop=stop,
            params=params,
            state=state,
            logits=logits,
            tokenizer=self._tok(tokenizer),
            response_format=response_format,
            grammar=grammar,
            regex=regex,
        )

    @with_sampling_doc
    def complete(
        self,
        prompt: Prompt,
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
        seed: int | None = None,
        params: SamplingParams | None = None,
        state: FloatArray | None = None,
        logits: FloatArray | None = None,
        tokenizer: Tokenizer | str | None = None,
        response_format: dict[str, Any] | None = None,
        grammar: str | None = None,
        regex: str | None = None,
    ) -> str:
        """The whole continuation of ``prompt`` as one string: :meth:`generate` without streaming, with
        the same arguments (the same seed gives the same text as ``rwkv-ggml generate --seed``)."""
        return "".join(
            self.generate(
                prompt,
                max_tokens,
                **_sampling_options(locals()),
                stop=stop,
                params=params,
                state=state,
                logits=logits,
                tokenizer=tokenizer,
                response_format=response_format,
                grammar=grammar,
                regex=regex,
            )
        )

    @with_sampling_doc
    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS,
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
        seed: int | None = None,
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tokenizer: Tokenizer | str | None = None,
    ) -> list[BatchResult]:
        """Continuations of many prompts decoded together, one batched step per token
        (:func:`rwkv_ggml.batch_generation.generate_batch`); the results (``text``, ``tokens``,
        ``finish_reason``, token counts) in prompt order. The sampling keywords are :meth:`generate`'s and
        apply to every prompt (each request samples with its own copy, the seed included, so each result
        equals ``generate`` of that prompt alone with the same options: bit for bit in greedy mode up to
        the batch rounding of the module's docstring). ``params``: one SamplingParams, or one per prompt;
        keywords that differ from their defaults are applied on top of each. ``max_tokens``: one limit or
        one per prompt. Bad options raise TypeError/ValueError before anything is computed."""
        from .batch_generation import generate_batch

        options = _sampling_options(locals())
        per: SamplingParams | list[SamplingParams]
        if params is None or isinstance(params, SamplingParams):
            per = params_from_options(params, None, **options)
        elif isinstance(params, (list, tuple)):
            per = [params_from_options(p, None, **options) for p in params]
        else:
            raise TypeError(
                f"params must be None, a SamplingParams or a list of them, got {type(params).__name__}"
            )
        return generate_batch(
            self, prompts, max_tokens, tokenizer=self._tok(tokenizer), params=per, stop=stop
        )

    # ---- OpenAI-shaped ----
    @with_sampling_doc
    def create_completion(
        self,
        prompt: str | Sequence[int],
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        top_k: int = DEFAULT_TOP_K,
        min_p: float = DEFAULT_MIN_P,
        presence_penalty: float = DEFAULT_PRESENCE_PENALTY,
        frequency_penalty: float = DEFAULT_FREQUENCY_PENALTY,
        repeat_penalty: float = DEFAULT_REPETITION_PENALTY,
        penalty_decay: float = DEFAULT_PENALTY_DECAY,
        logit_bias: dict[int, float] | None = None,
        stop: str | Sequence[str] | None = None,
        stop_tokens: Sequence[int] = (),
        seed: int | None = None,
        stream: bool = False,
        logprobs: int | None = None,
        echo: bool = False,
        params: SamplingParams | None = None,
        tokenizer: Tokenizer | str | None = None,
        model: str | None = None,
        response_format: dict[str, Any] | None = None,
        grammar: str | None = None,
        regex: str | None = None,
    ) -> _oai.Completion | Iterator[_oai.CompletionChunk]:
        """A text completion in the OpenAI / llama-cpp-python shape::

            {"id": "cmpl-...", "object": "text_completion", "created": 1700000000, "model": "<path>",
             "choices": [{"text": "...", "index": 0, "logprobs": None, "finish_reason": "stop" | "length"}],
             "usage": {"prompt_tokens": 4, "completion_tokens": 200, "total_tokens": 204}}

        ``finish_reason`` is "stop" for a stop string or stop token (the stop string is not in ``text``),
        "length" when ``max_tokens`` (default 200) ran out. ``stream=True`` returns an iterator of chunks of
        the same shape without ``usage``, each with a piece of text; the last one has text "" and the
        ``finish_reason``. ``logprobs=n``: ``choices[0]["logprobs"]`` holds, per token, its text
        (``tokens``), its log-probability (``token_logprobs``), the n most likely tokens with theirs
        (``top_logprobs``) and where its text starts (``text_offset``); these are the log-softmax of the
        model's raw logits (before temperature, top-p or penalties), as OpenAI reports them; when
        streaming each chunk carries the tokens sampled since the previous one. ``echo``: the text starts
        with the prompt (with ``logprobs``, the prompt tokens get theirs too, the first one None).
        ``model``: the name reported in ``"model"`` (default: the model file's path).
        ``response_format`` (``{"type": "json_object"}``, ``{"type": "json_schema", "json_schema": {"name":
        ..., "schema": {...}}}``), ``grammar`` (Lark or GBNF) or ``regex``: structured output, the text obeys
        it and ends with "stop" once complete (:mod:`rwkv_ggml.structured`; ConstraintError if bad).
        """
        sp = params_from_options(
            params,
            stop,
            **_sampling_options(locals()),
        )
        return _oai.completion(
            self,
            prompt,
            max_tokens=max_tokens,
            params=sp,
            tokenizer=self._tok(tokenizer),
            constraint=constraint_from_options(
                self._tok(tokenizer),
                self.n_vocab,
                response_format=response_format,
                grammar=grammar,
                regex=regex,
            ),
            stream=_check_flag(stream, "stream"),
            logprobs=logprobs,
            echo=_check_flag(echo, "echo"),
            model_name=model,
        )

    @with_sampling_doc
    def create_chat_completion(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        top_k: int = DEFAULT_TOP_K,
        min_p: float = DEFAULT_MIN_P,
        presence_penalty: float = DEFAULT_PRESENCE_PENALTY,
        frequency_penalty: float = DEFAULT_FREQUENCY_PENALTY,
        repeat_penalty: float = DEFAULT_REPETITION_PENALTY,
        penalty_decay: float = DEFAULT_PENALTY_DECAY,
        logit_bias: dict[int, float] | None = None,
        stop: str | Sequence[str] | None = None,
        stop_tokens: Sequence[int] = (),
        seed: int | None = None,
        stream: bool = False,
        chat_template: TemplateLike | None = None,
        params: SamplingParams | None = None,
        tokenizer: Tokenizer | str | None = None,
        model: str | None = None,
        response_format: dict[str, Any] | None = None,
        grammar: str | None = None,
        regex: str | None = None,
    ) -> _oai.ChatCompletion | Iterator[_oai.ChatCompletionChunk]:
        """The assistant's reply to a message list, in the OpenAI chat shape::

            model.create_chat_completion([
                {"role": "system", "content": "You are a poet."},
                {"role": "user", "content": "Write about the sea."},
            ])["choices"][0]["message"]["content"]

        Returns ``{"id": "chatcmpl-...", "object": "chat.completion", "created", "model", "choices":
        [{"index": 0, "message": {"role": "assistant", "content": "..."}, "logprobs": None,
        "finish_reason": "stop" | "length"}], "usage": {...}}``. The messages (roles "system", "user",
        "assistant") are written with
        ``chat_template`` (default :class:`~rwkv_ggml.chat_format.ChatTemplate`: RWKV's ``"User: ...\\n\\n
        Assistant: ...\\n\\n"``), followed by ``"Assistant:"``; the reply ends at the template's stop string
        ``"\\n\\nUser:"`` (plus ``stop``), and the whitespace after ``"Assistant:"`` is not part of it.
        ``chat_template`` may also be any callable from the message list to the prompt text (then only
        ``stop`` ends the reply early). ``stream=True``: an iterator of ``"chat.completion.chunk"`` dicts,
        the first with ``delta`` {"role": "assistant"}, then {"content": piece}, the last {} with the
        ``finish_reason``. Each call starts from a fresh state (for a conversation that keeps its state
        between turns, see :meth:`chat_session`). ``response_format`` / ``grammar`` / ``regex``: structured
        output, as for :meth:`create_completion`.
        """
        sp = params_from_options(
            params,
            stop,
            **_sampling_options(locals()),
        )
        return _oai.chat_completion(
            self,
            messages,
            max_tokens=max_tokens,
            params=sp,
            tokenizer=self._tok(tokenizer),
            constraint=constraint_from_options(
                self._tok(tokenizer),
                self.n_vocab,
                response_format=response_format,
                grammar=grammar,
                regex=regex,
            ),
            stream=_check_flag(stream, "stream"),
            template=chat_template,
            model_name=model,
        )

    # ---- embeddings and chat ----
    def embed(
        self,
        text_or_tokens: Prompt,
        tokenizer: Tokenizer | str | None = None,
        *,
        state: FloatArray | None = None,
    ) -> FloatArray:
        """The L2-normalised final hidden vector of the text (shape ``(n_embed,)``): dot products of two
        embeddings are cosine similarities. ``state``: read the text on top of this state instead of a
        fresh one. See :func:`rwkv_ggml.generation.embed`."""
        return _text.embed(self, text_or_tokens, self._tok(tokenizer), state=state)

    @with_sampling_doc
    def chat_session(
        self,
        tokenizer: Tokenizer | str | None = None,
        *,
        system: str | None = None,
        user: str = "User",
        assistant: str = "Assistant",
        template: ChatTemplate | None = None,
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
        seed: int | None = None,
        params: SamplingParams | None = None,
    ) -> _chat.ChatSession:
        """A conversation that keeps its state between turns (``session.ask("Hi")``, ``session.send("Hi")``
        to stream, ``session.save(path)`` / ``load(path)``, ``reset()``): ``system`` is fed once at the
        start, each turn is written with ``template`` (default: RWKV's ``"User: ...\\n\\nAssistant:"``, with
        the ``user``/``assistant`` names), the reply stops at ``"\\n\\nUser:"`` (and at ``stop``). A
        ``seed`` seeds the session once, not each turn. See :class:`rwkv_ggml.chat_session.ChatSession`."""
        sp = params_from_options(
            params,
            None,  # ChatSession adds stop to its template's turn stop
            **_sampling_options(locals()),
        )
        return _chat.ChatSession(
            self,
            self._tok(tokenizer),
            system=system,
            user=user,
            assistant=assistant,
            stop=stop,
            params=sp,
            template=template,
        )
