"""The policy interface: what a policy sees of a run, and the step mode it decides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from q3agent.types import SamplingParams

if TYPE_CHECKING:
    from q3agent.qwen3.parsing import Parsed

ThinkingCapability = Literal["hybrid", "thinking_only", "non_thinking"]
"""Qwen3 hybrid models switch per request; 2507 Thinking always thinks; 2507 Instruct never."""


@dataclass(frozen=True, slots=True)
class StepMode:
    """How one step runs: with or without thinking, under what budget and sampling, and why.

    ``budget`` caps the reasoning tokens of a thinking step (``None``: no cap beyond
    ``sampling.max_tokens``). ``reason`` is a short human sentence kept in the step record.
    """

    thinking: bool
    budget: int | None
    sampling: SamplingParams
    reason: str


@dataclass(frozen=True, slots=True)
class RunState:
    """The facts about a run a policy decides from (a snapshot taken before each step)."""

    step: int
    """Index of the step about to run (0 for the first)."""
    task_tokens: int
    """Length of the current user task in tokens."""
    num_tools: int
    capability: ThinkingCapability
    tool_calls_so_far: int
    failures_so_far: int
    """Tool responses that reported an error (parse, unknown tool, arguments, exception, …)."""
    last_step_failed: bool
    """Whether any tool response of the previous step was an error."""
    last_step_had_calls: bool
    last_thinking_hit_budget: bool
    thinking_steps: int
    """Steps of this task that ran with thinking."""
    thinking_tokens_used: int
    max_steps: int
    soft_switch: bool | None = None
    """The user's ``/think`` (True) or ``/no_think`` (False) switch, when present."""
    user_enable_thinking: bool | None = None
    """A per-run override from the caller (``agent.run(task, thinking=...)``)."""


@runtime_checkable
class Policy(Protocol):
    """Decides, for each step, between budgeted thinking and direct answers."""

    def decide(self, state: RunState) -> StepMode:
        """The mode of the step about to run."""
        ...


@runtime_checkable
class ReconsideringPolicy(Policy, Protocol):
    """A policy that may ask for a final answer to be regenerated with thinking.

    When a step ends with an answer and no tool calls, the loop asks ``reconsider``; a returned
    mode makes the loop discard that draft and run the step again in that mode (the prompt
    prefix is shared, so a prefix cache re-prefills nothing).
    """

    def reconsider(self, state: RunState, draft: Parsed) -> StepMode | None:
        """A mode to redo the final answer in, or ``None`` to keep the draft."""
        ...
