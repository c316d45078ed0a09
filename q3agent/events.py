"""Events a streaming run yields, from step start to the final result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from q3agent.qwen3.messages import ToolCall, ToolCallError

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
class ReasoningDelta:
    """More of the model's thinking."""

    step: int
    text: str
    kind: Literal["reasoning_delta"] = "reasoning_delta"


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """More of the model's visible answer text."""

    step: int
    text: str
    kind: Literal["content_delta"] = "content_delta"


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """The model finished writing a tool call (or a call that could not be parsed)."""

    step: int
    call: ToolCall | ToolCallError
    kind: Literal["tool_call"] = "tool_call"


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
