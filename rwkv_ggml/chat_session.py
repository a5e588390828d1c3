"""A conversation with a model that keeps its state between turns (:class:`ChatSession`).

Built on :func:`rwkv_ggml.generation.generate`: each turn is one generation on top of the state the
conversation reached, so nothing said before is ever read again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .chat_format import ChatTemplate
from .generation import (
    DEFAULT_MAX_TOKENS,
    FloatArray,
    Generation,
    _sampling_params,
    _tokenizer_for,
    generate,
    strip_leading_whitespace,
)
from .sampling import Sampler, SamplingParams, stop_tuple
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .model import Model


class ChatSession:
    """A conversation with a model that keeps its state between turns.

    The transcript follows a :class:`~rwkv_ggml.chat_format.ChatTemplate` (default: RWKV's
    ``"User: ...\\n\\nAssistant: ...\\n\\n"``; ``user``/``assistant`` rename the two roles, ``template``
    replaces the whole format). Each turn feeds the user message and ``"Assistant:"``, then streams the
    reply until a stop string (the template's, ``"\\n\\nUser:"``, and any in ``stop``), a stop token or
    ``max_tokens``; the whitespace the model puts after ``"Assistant:"`` is not part of the reply.
    Afterwards the state is set to "the state after the prompt + reply + blank line", re-reading only the
    reply in sequence mode; so the state holds exactly the transcript, whatever the model generated past
    the stop string, and nothing of the conversation before this turn is ever read again. A reply cut
    short (the stream closed early, or Ctrl-C) is kept as far as it went.

    ``system``: a system message, fed once at the start (and after :meth:`reset`) as
    ``"System: {system}\\n\\n"``. ``**sampling``: as for :func:`generate`. With a ``seed``, the random
    stream is seeded once per session (and again by :meth:`reset`), not once per turn: the same
    conversation gives the same replies, and two turns do not draw the same random numbers.
    """

    def __init__(
        self,
        model: Model,
        tokenizer: Tokenizer | str | None = None,
        *,
        system: str | None = None,
        user: str = "User",
        assistant: str = "Assistant",
        stop: str | Sequence[str] | None = None,
        params: SamplingParams | None = None,
        template: ChatTemplate | None = None,
        **sampling: Any,
    ) -> None:
        self.model = model
        self.tokenizer = _tokenizer_for(model, tokenizer)
        if template is None:
            template = ChatTemplate(user=user, assistant=assistant)
        elif not isinstance(template, ChatTemplate):
            raise TypeError(f"template must be a ChatTemplate, got {type(template).__name__}")
        elif (user, assistant) != ("User", "Assistant"):
            raise TypeError("give the role names either as user=/assistant= or in the template, not both")
        self.template = template
        self.user, self.assistant = template.names["user"], template.names["assistant"]
        self.params = _sampling_params(params, (*template.stop_strings(), *stop_tuple(stop)), dict(sampling))
        Sampler(self.params, model.n_vocab)
        if system is not None:
            template.format_message("system", system)  # an empty or non-text system message fails here
        self.system = system
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (back to the fresh state, plus the system message if any) and restart
        the random stream from the seed."""
        self._state = self.model.init_state()
        self._rng = np.random.default_rng(self.params.seed)
        if self.system:
            ids = self.tokenizer.encode(self.template.format_message("system", self.system))
            if ids:
                _, self._state = self.model.eval_sequence(ids, self._state)

    @property
    def state(self) -> FloatArray:
        """The model state after the conversation so far (a copy)."""
        return self._state.copy()

    @state.setter
    def state(self, value: FloatArray) -> None:
        self._state = self.model._check_state(value, "state").copy()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves the conversation state as a state file (:class:`rwkv_ggml.state.State`)."""
        from .state import State

        State.from_array(self.model, self._state).save(path)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restores a state saved by :meth:`save`; it must come from this model (same weights)."""
        from .state import State

        self._state = State.load(path, self.model).array.copy()

    def send(self, message: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> Iterator[str]:
        """Streams the reply to ``message``; the state is updated when the stream ends (or is closed)."""
        if not isinstance(message, str):
            raise TypeError(f"message must be a str, got {type(message).__name__}")
        prompt = self.template.format_message("user", message) + self.template.generation_prompt()
        ids = self.tokenizer.encode(prompt)
        logits, prompt_state = self.model.eval_sequence(ids, self._state)
        gen = generate(
            self.model,
            [],
            max_tokens,
            state=prompt_state,
            logits=logits,
            tokenizer=self.tokenizer,
            params=self.params,
            rng=self._rng,
        )
        return self._stream(gen, prompt_state)

    def _stream(self, gen: Generation, prompt_state: FloatArray) -> Iterator[str]:
        try:
            yield from strip_leading_whitespace(gen)
        finally:
            reply = gen.text.strip()
            suffix = self.template.reply_suffix(reply) if reply else self.template.separator
            _, self._state = self.model.eval_sequence(self.tokenizer.encode(suffix), prompt_state)

    def ask(self, message: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> str:
        """The whole reply as one string."""
        return "".join(self.send(message, max_tokens))


__all__ = ["ChatSession"]
