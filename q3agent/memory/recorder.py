"""Writing a running conversation to a persistent session, so a killed run can resume.

The loop calls the recorder at three moments: messages are appended as they happen (the
user's task, each assistant turn), each tool result is recorded the moment its call completes
(through a thin proxy around the tool), and each step is closed together with its tool
messages in one transaction. After a ``kill -9`` the session therefore holds every finished
step, the assistant turn of the interrupted one, and the results of the calls of that turn
that had completed; resuming runs only the calls that had not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from q3agent.memory.sessions import Session
from q3agent.qwen3.messages import Message, ToolCall, ToolMessage
from q3agent.tools.base import DelegatingTool, Tool
from q3agent.tools.context import RunContext
from q3agent.tools.executor import ToolResult


class _RecordingTool(DelegatingTool):
    """Delegates to a tool and records its rendered output as soon as a call succeeds."""

    def __init__(self, inner: Tool, session: Session) -> None:
        super().__init__(inner)
        self.session = session
        self.requires_approval = inner.requires_approval
        self.strict = inner.strict

    def schema(self) -> dict[str, Any]:
        return self.inner.schema()

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        output = await self.inner.call(arguments, ctx)
        if ctx.tool_call is not None:
            self.session.record_tool_result(
                ctx.tool_call.id, {"name": self.name, "content": self.inner.render(output)}
            )
        return output


class SessionRecorder:
    """Persists one conversation into a :class:`~q3agent.memory.sessions.Session`."""

    def __init__(self, session: Session, next_step: int = 0) -> None:
        self.session = session
        self.next_step = next_step
        """The session-wide index the next completed step is stored under."""

    def messages(self, messages: Sequence[Message]) -> None:
        """Append messages (the task, an assistant turn) as they join the conversation."""
        self.session.append_messages(messages)

    def wrap(self, tools: Mapping[str, Tool]) -> dict[str, Tool]:
        """Tools that record each successful call's result the moment it completes."""
        return {name: _RecordingTool(tool, self.session) for name, tool in tools.items()}

    def completed(self, calls: Sequence[ToolCall]) -> dict[str, ToolResult]:
        """Results recorded for ``calls`` before an interruption, by call id."""
        done: dict[str, ToolResult] = {}
        for call in calls:
            stored = self.session.completed_tool_result(call.id)
            if isinstance(stored, dict) and isinstance(stored.get("content"), str):
                done[call.id] = ToolResult.ok(call.id, call.name, stored["content"])
        return done

    def step(self, record: Mapping[str, Any], tool_messages: Sequence[ToolMessage]) -> None:
        """Close a step: its record and its tool messages, atomically."""
        self.session.complete_step(self.next_step, record, tool_messages)
        self.next_step += 1

    def replace(self, messages: Sequence[Message]) -> None:
        """Replace the stored conversation (after older turns were summarised)."""
        self.session.replace_messages(messages)
