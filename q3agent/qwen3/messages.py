"""Typed chat messages and tool calls: the data q3agent exchanges with a Qwen3 model.

Messages are small pydantic models discriminated by ``role``, so a conversation serialises to
and from JSON (sessions, traces) without losing which part is which. Everything that accepts
messages also accepts OpenAI-style dicts; :func:`to_message` converts one.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

_CALL_PREFIX = os.urandom(8).hex()
_CALL_COUNTER = itertools.count()


def new_call_id() -> str:
    """A fresh tool-call id in the ``call_…`` form OpenAI-compatible clients expect.

    A random per-process prefix and a counter (24 hex digits): unique across processes and
    sessions like a uuid4, without a system call per id on the loop's hot path.
    """
    return f"call_{_CALL_PREFIX}{next(_CALL_COUNTER) & 0xFFFFFFFF:08x}"


class ToolCall(BaseModel):
    """A well-formed function call the model asked for.

    ``arguments`` is always a JSON object. ``raw`` keeps the exact text the call was parsed
    from (empty for calls built in code), so errors and traces can show what the model wrote.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str = Field(default_factory=new_call_id)
    raw: str = ""
    index: int = 0
    """Position among all call blocks of one completion (valid and invalid alike)."""

    def arguments_json(self) -> str:
        """The arguments as the chat template renders them (``tojson``: key order kept)."""
        return json.dumps(self.arguments, ensure_ascii=False)


class ToolCallError(BaseModel):
    """A call block the parser could not turn into a :class:`ToolCall`.

    It is not dropped: the agent loop answers it with a tool response that quotes ``raw`` and
    says what was wrong, so the model can correct itself.
    """

    model_config = ConfigDict(frozen=True)

    raw: str
    error: str
    name: str | None = None
    """The function name, when it could be recovered from the broken call."""
    id: str = Field(default_factory=new_call_id)
    index: int = 0


class SystemMessage(BaseModel):
    """Instructions for the model; Qwen3's template renders at most the first one specially."""

    role: Literal["system"] = "system"
    content: str


class UserMessage(BaseModel):
    """A turn written by the user."""

    role: Literal["user"] = "user"
    content: str


class AssistantMessage(BaseModel):
    """A turn the model produced: optional reasoning, visible content and tool calls."""

    role: Literal["assistant"] = "assistant"
    content: str = ""
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ToolMessage(BaseModel):
    """The result of one tool call, rendered inside ``<tool_response>`` in a user turn."""

    role: Literal["tool"] = "tool"
    content: str
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]
"""Any chat message; pydantic picks the class from ``role``."""

MessageLike = Message | Mapping[str, Any]
"""A :data:`Message` or an OpenAI-style dict (``{"role": ..., "content": ...}``)."""

_MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)
_MESSAGES_ADAPTER: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


def _call_from_openai(raw: Mapping[str, Any], index: int) -> ToolCall:
    fn = raw.get("function", raw)
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise ValueError(f"tool call {raw!r} has no function name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"tool call {fn['name']!r} has arguments that are not JSON: {args!r}"
            ) from exc
    if not isinstance(args, dict):
        raise ValueError(f"tool call {fn['name']!r} has arguments that are not an object")
    call_id = raw.get("id")
    return ToolCall(
        name=fn["name"],
        arguments=args,
        id=call_id if isinstance(call_id, str) else new_call_id(),
        index=index,
    )


def to_message(message: MessageLike) -> Message:
    """Convert an OpenAI-style dict (or a message) into a typed :data:`Message`.

    Raises ``ValueError`` naming the offending field when the dict is not a chat message.
    """
    if isinstance(message, SystemMessage | UserMessage | AssistantMessage | ToolMessage):
        return message
    data = dict(message)
    if data.get("role") == "assistant" and data.get("tool_calls"):
        data["tool_calls"] = [
            c if isinstance(c, ToolCall) else _call_from_openai(c, i)
            for i, c in enumerate(data["tool_calls"])
        ]
    if data.get("content") is None:
        data["content"] = ""
    try:
        return _MESSAGE_ADAPTER.validate_python(data)
    except Exception as exc:
        raise ValueError(
            f"not a chat message: {message!r} ({exc}). Expected a dict with 'role' in "
            "system/user/assistant/tool and a string 'content'."
        ) from exc


def to_messages(messages: Iterable[MessageLike]) -> list[Message]:
    """Convert many messages; see :func:`to_message`."""
    return [to_message(m) for m in messages]


def pending_tool_calls(messages: Sequence[Message]) -> list[ToolCall]:
    """Calls of the last assistant turn that no tool message answers yet.

    Non-empty only for a conversation cut off between a model's tool calls and their results
    (an interrupted step, to be finished when the task resumes).
    """
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, AssistantMessage):
            answered = {m.tool_call_id for m in messages[index + 1 :] if isinstance(m, ToolMessage)}
            return [c for c in message.tool_calls if c.id not in answered]
    return []


def dump_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Serialise messages to JSON-ready dicts (the inverse of :func:`load_messages`)."""
    dumped: list[dict[str, Any]] = _MESSAGES_ADAPTER.dump_python(list(messages), mode="json")
    return dumped


def load_messages(data: Any) -> list[Message]:
    """Load messages serialised by :func:`dump_messages`."""
    return _MESSAGES_ADAPTER.validate_python(data)
