"""RunContext: what a tool can see of the agent run that called it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from q3agent.qwen3.messages import Message, ToolCall

DepsT = TypeVar("DepsT")


@dataclass
class RunContext(Generic[DepsT]):
    """What a tool can see of the run that called it.

    A function tool receives it by declaring a parameter annotated ``RunContext`` (or
    ``RunContext[MyDeps]``); that parameter is filled in by the executor and never appears in
    the JSON schema the model sees. The executor gives each call its own copy with
    :attr:`tool_call` set, so parallel calls do not see each other's call.
    """

    deps: DepsT
    """User-supplied dependencies (``Agent(deps=...)``): clients, connections, settings. May be
    ``None``."""
    run_id: str
    """Identifier of the agent run, stable across its steps."""
    step: int
    """Index of the model step whose tool calls are being executed (0-based)."""
    messages: Sequence[Message]
    """The conversation so far; treat it as read-only."""
    tool_call: ToolCall | None = None
    """The call being executed (set by the executor)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form values the application wants tools to see (shared by all calls of a run)."""
