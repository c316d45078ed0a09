"""Events a streaming run yields, from step start to the final result.

This is the one place to import event types from. The model-output events
(:class:`ReasoningDelta`, :class:`ContentDelta`, :class:`ToolCallEvent`) are defined next to
the stream parser that emits them (:mod:`q3agent.qwen3.streaming`) and re-exported here; the
agent loop yields them as the parser made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from q3agent.qwen3.streaming import ContentDelta, ReasoningDelta, ToolCallEvent

__all__ = [
    "ContentDelta",
    "Event",
    "FinalResult",
    "ReasoningDelta",
    "StepEnd",
    "StepStart",
    "ToolCallEvent",
    "ToolProgress",
    "ToolResultEvent",
]

if TYPE_CHECKING:
    from q3agent.policy.base import StepMode
    from q3agent.result import RunResult, StepRecord
    from q3agent.tools.executor import ToolResult


@dataclass(frozen=True, slots=True)
class StepStart:
    """A model step begins, in the mode the policy chose."""

    step: int
    mode: StepMode
    kind: Literal["step_start"] = "step_start"


@dataclass(frozen=True, slots=True)
class ToolProgress:
    """A running tool reported progress (e.g. an MCP server's ``notifications/progress``)."""

    step: int
    call_id: str
    name: str
    progress: float
    total: float | None = None
    message: str | None = None
    kind: Literal["tool_progress"] = "tool_progress"


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    """A tool call's response, in call order."""

    step: int
    result: ToolResult
    kind: Literal["tool_result"] = "tool_result"


@dataclass(frozen=True, slots=True)
class StepEnd:
    """A step finished; its record has the usage and latency."""

    record: StepRecord
    kind: Literal["step_end"] = "step_end"


@dataclass(frozen=True, slots=True)
class FinalResult:
    """The run ended; ``result.status`` says how."""

    result: RunResult
    kind: Literal["final"] = "final"


Event = (
    StepStart
    | ReasoningDelta
    | ContentDelta
    | ToolCallEvent
    | ToolProgress
    | ToolResultEvent
    | StepEnd
    | FinalResult
)
"""Any event of :meth:`q3agent.Agent.stream`; switch on ``event.kind``."""
