"""The chat template: how a conversation is written as text for an RWKV model.

RWKV chat models (the World models and ChatRWKV's demos) are trained on transcripts of the form::

    System: You are a helpful assistant.

    User: What is RWKV?

    Assistant: An RNN with transformer-level quality.

    User: ...

Each message is ``"{Name}: {content}\\n\\n"``; a reply is generated after ``"Assistant:"`` and ends where
the model starts the next user turn, ``"\\n\\nUser:"``. A message's blank lines are collapsed to single
newlines, because a blank line followed by ``"User:"`` is a turn boundary: a message must not be able to
fake one.

:class:`ChatTemplate` is the one definition of this format: :class:`rwkv_ggml.chat_session.ChatSession`
(one turn at a time, keeping the state) and ``Model.create_chat_completion`` (a whole message list) both
render through it. Override it with different names (``ChatTemplate(user="Bob", assistant="Alice")``), a
subclass (override :meth:`ChatTemplate.format_message`, :meth:`ChatTemplate.generation_prompt` and
:meth:`ChatTemplate.stop_strings`), or, for ``create_chat_completion`` only, any callable taking the message
list and returning the prompt text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypedDict

__all__ = ["ChatMessage", "ChatTemplate", "Role", "TemplateLike", "render_chat_prompt"]

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")


class ChatMessage(TypedDict):
    """One message of a conversation, as in the OpenAI chat API: ``{"role": "user", "content": "Hi"}``."""

    role: Role
    content: str


def collapse_blank_lines(text: str) -> str:
    """The text stripped, with its empty lines removed (so it cannot contain a turn boundary)."""
    return "\n".join(line for line in text.strip().splitlines() if line.strip())


class ChatTemplate:
    """RWKV's ``User:``/``Assistant:`` transcript format (see the module docstring).

    ``user``, ``assistant``, ``system``: the names written before each role's messages (defaults
    ``"User"``, ``"Assistant"``, ``"System"``). ``separator``: what ends a message (``"\\n\\n"``).
    """

    def __init__(
        self,
        user: str = "User",
        assistant: str = "Assistant",
        system: str = "System",
        separator: str = "\n\n",
    ) -> None:
        for name, value in (("user", user), ("assistant", assistant), ("system", system)):
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise ValueError(f"the {name} name must be a non-empty one-line string, got {value!r}")
        if not isinstance(separator, str) or not separator:
            raise ValueError(f"separator must be a non-empty string, got {separator!r}")
        self.names: dict[Role, str] = {"system": system, "user": user, "assistant": assistant}
        self.separator = separator

    def format_message(self, role: Role, content: str) -> str:
        """One finished message as transcript text: ``"User: Hello\\n\\n"``. Raises ValueError for an
        unknown role or a message that is empty once its blank lines are collapsed."""
        if role not in self.names:
            raise ValueError(f"unknown chat role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise TypeError(f"the content of a {role} message must be a str, got {type(content).__name__}")
        text = collapse_blank_lines(content)
        if not text:
            raise ValueError(f"the {role} message is empty")
        return f"{self.names[role]}: {text}{self.separator}"

    def generation_prompt(self) -> str:
        """What opens the assistant's reply, after which the model writes: ``"Assistant:"`` (no space:
        the model's own first token carries it)."""
        return f"{self.names['assistant']}:"

    def stop_strings(self) -> tuple[str, ...]:
        """Where a generated reply ends: the start of the next user turn, ``"\\n\\nUser:"``."""
        return (f"{self.separator.rstrip(' ')}{self.names['user']}:",)

    def reply_suffix(self, reply: str) -> str:
        """The transcript text that follows :meth:`generation_prompt` once ``reply`` is finished, to bring a
        kept state up to date: ``" {reply}\\n\\n"`` (the assistant message minus the prompt already read)."""
        message = self.format_message("assistant", reply)
        prompt = self.generation_prompt()
        if not message.startswith(prompt):
            raise ValueError("the template's assistant message does not start with its generation prompt")
        return message[len(prompt) :]

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The whole conversation as prompt text, ending with :meth:`generation_prompt` if asked."""
        parts = [self.format_message(*_role_and_content(m, i)) for i, m in enumerate(messages)]
        if add_generation_prompt:
            parts.append(self.generation_prompt())
        return "".join(parts)

    def __call__(self, messages: Sequence[ChatMessage]) -> str:
        return self.render(messages)

    def __repr__(self) -> str:
        n = self.names
        return (
            f"ChatTemplate(user={n['user']!r}, assistant={n['assistant']!r}, system={n['system']!r}, "
            f"separator={self.separator!r})"
        )


TemplateLike = ChatTemplate | Callable[[Sequence[ChatMessage]], str]


def _role_and_content(message: object, index: int) -> tuple[Role, str]:
    if not isinstance(message, dict):
        raise TypeError(
            f"message {index} must be a dict with 'role' and 'content', got {type(message).__name__}"
        )
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise ValueError(f"message {index} has role {role!r}; expected one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise TypeError(f"message {index} content must be a str, got {type(content).__name__}")
    return role, content


def render_chat_prompt(
    messages: Sequence[ChatMessage], template: TemplateLike | None
) -> tuple[str, tuple[str, ...]]:
    """The prompt for ``messages`` and the stop strings that end the reply (none for a plain callable)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages is empty: give at least one message")
    if template is None:
        template = ChatTemplate()
    if isinstance(template, ChatTemplate):
        return template.render(messages), template.stop_strings()
    if not callable(template):
        raise TypeError(f"chat_template must be a ChatTemplate or a callable, got {type(template).__name__}")
    for i, m in enumerate(messages):
        _role_and_content(m, i)
    prompt = template(messages)
    if not isinstance(prompt, str):
        raise TypeError(f"the chat template returned {type(prompt).__name__}, not a str")
    return prompt, ()
