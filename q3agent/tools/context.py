"""RunContext: what a tool can see of the agent run that called it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    progress_sink: ProgressSink | None = field(default=None, repr=False)
    """Where :meth:`report_progress` goes (the agent loop turns it into stream events)."""

    def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Say how far the running call has got; a ``ToolProgress`` event in the run's stream.

        Does nothing outside an agent run (no sink).
        """
        if self.progress_sink is not None:
            self.progress_sink(self.tool_call, progress, total, message)


ProgressSink = Callable[[ToolCall | None, float, float | None, str | None], None]
"""Receives ``(call, progress, total, message)`` from :meth:`RunContext.report_progress`."""
