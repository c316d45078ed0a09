"""How a run behaves: the one options object :class:`~q3agent.Agent` and its callers share.

``RunOptions`` gathers the limits and tool-handling choices of a run (steps, usage limits,
tool errors, tool timeout, output cap, tool choice, parallel calls, approval, completion
tokens), so that ``Agent``, the MCP server's agent and ``ResearchAgent`` take one object
instead of repeating a dozen keyword parameters, and the loop reads them from one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from q3agent.result import UsageLimits
from q3agent.tools.executor import ApprovalCallback

ToolChoice = Literal["auto", "required"] | str
"""``auto``: the model decides; ``required``: the first step must call a tool; a tool name:
the first step must call that tool. Enforced by constrained decoding where the runtime can."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The behaviour of a run: its limits and how tool calls are handled.

    >>> Agent(runtime=runtime, options=RunOptions(max_steps=5, tool_timeout=10))  # doctest: +SKIP

    Values are checked when the object is made: a bad one raises :class:`ValueError` saying
    what to pass instead. Use :meth:`replace` for a copy with some fields changed.
    """

    max_steps: int = 20
    """Most model steps in one task; reaching it ends the run with status ``step_limit``."""
    usage_limits: UsageLimits = field(default_factory=UsageLimits)
    """Caps on requests and tokens; reaching one ends the run with status ``usage_limit``."""
    max_tool_errors: int = 8
    """Most failed tool calls in one run, all tools together, before it ends with ``error``
    (successes do not reset it; each tool's own ``max_retries`` counts failures in a row)."""
    tool_timeout: float | None = 60.0
    """Seconds a tool call may take unless the tool sets its own; ``None``: no limit."""
    max_output_chars: int = 16_000
    """Longest tool result the model is shown; longer ones are cut, saying so."""
    tool_choice: ToolChoice = "auto"
    """``auto``, ``required`` or a tool name: see :data:`ToolChoice`."""
    parallel_tool_calls: bool = True
    """False runs a step's calls one at a time, in order (for stateful tools)."""
    approve: ApprovalCallback | None = None
    """Asked before each call of a tool with ``requires_approval``; ``None`` denies them."""
    max_tokens: int | None = None
    """Completion tokens per model request, thinking included; ``None``: see
    :meth:`q3agent.Agent.completion_limit`."""

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.max_tool_errors < 0:
            raise ValueError(f"max_tool_errors must be 0 or more, got {self.max_tool_errors}")
        if self.tool_timeout is not None and self.tool_timeout <= 0:
            raise ValueError(
                f"tool_timeout must be a positive number of seconds or None, "
                f"got {self.tool_timeout}"
            )
        if self.max_output_chars < 1:
            raise ValueError(f"max_output_chars must be at least 1, got {self.max_output_chars}")
        if not isinstance(self.tool_choice, str) or not self.tool_choice:
            raise ValueError(
                f"tool_choice must be 'auto', 'required' or a tool's name, got {self.tool_choice!r}"
            )

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def check_tool_choice(self, tool_names: set[str] | list[str]) -> None:
        """Raise :class:`ValueError` when ``tool_choice`` names none of ``tool_names``."""
        if self.tool_choice not in ("auto", "required") and self.tool_choice not in tool_names:
            raise ValueError(
                f"tool_choice={self.tool_choice!r} names no tool of this agent; "
                f"use 'auto', 'required' or one of {sorted(tool_names)}"
            )
