"""Built-in thinking policies: AlwaysThink, NeverThink and the default PlanAct."""

from __future__ import annotations

from dataclasses import dataclass

from q3agent.policy.base import RunState, StepMode
from q3agent.qwen3.models import sampling_for
from q3agent.qwen3.parsing import Parsed

SHORT_THINKING_BUDGET = 256
"""Budget used when a Thinking-only model must think although the policy would not."""


def _adapt(state: RunState, mode: StepMode) -> StepMode:
    """Fit a decision to what the model can do, instead of sending switches it ignores."""
    if state.capability == "non_thinking" and mode.thinking:
        return StepMode(
            False,
            None,
            sampling_for(thinking=False),
            f"{mode.reason}; but this Instruct model cannot think, so answering directly",
        )
    if state.capability == "thinking_only" and not mode.thinking:
        return StepMode(
            True,
            SHORT_THINKING_BUDGET,
            sampling_for(thinking=True),
            f"{mode.reason}; but this Thinking model always thinks, so keeping it short",
        )
    return mode


@dataclass(frozen=True)
class AlwaysThink:
    """Think on every step, each under the same budget (``None``: unbudgeted)."""

    budget: int | None = 4096

    def decide(self, state: RunState) -> StepMode:
        """Thinking with the fixed budget."""
        return _adapt(
            state, StepMode(True, self.budget, sampling_for(thinking=True), "always thinking")
        )


@dataclass(frozen=True)
class NeverThink:
    """Never think: every step answers or calls tools directly."""

    def decide(self, state: RunState) -> StepMode:
        """Non-thinking."""
        return _adapt(state, StepMode(False, None, sampling_for(thinking=False), "never thinking"))


@dataclass(frozen=True)
class PlanAct:
    """Think to plan, to recover and to synthesise; act on the plan without thinking.

    - Step 0 thinks: the model plans which tools to call.
    - After a tool error or an empty result, the next step thinks: recovery.
    - Steps that carry out calls following a plan do not think.
    - When a hard task (several calls, failures, or a long request) ends with a non-thinking
      answer, that draft is regenerated once with thinking: synthesis.

    Budgets come from a per-task ``pool`` of thinking tokens. Each thinking step gets
    ``base_budget`` scaled up by the task's length, the number of tools, the failures so far and
    whether the previous thinking ran out of budget, clamped to ``[min_budget, max_budget]``
    and to what is left of the pool. With less than ``min_budget`` left, the step does not think.
    The user's ``/think`` and ``/no_think`` switches and a per-run ``thinking=`` override win.
    """

    pool: int = 16384
    base_budget: int = 1024
    min_budget: int = 256
    max_budget: int = 8192
    hard_task_calls: int = 3
    """A task that made at least this many tool calls gets a thinking synthesis."""
    hard_task_tokens: int = 400

    def budget(self, state: RunState) -> int:
        """The thinking budget for this state, before the pool clamp."""
        scale = 1.0
        scale += min(state.task_tokens / 400, 1.0)  # long requests: up to 2x
        scale += min(state.num_tools, 16) / 16  # many tools to choose from: up to +1x
        scale += 0.5 * min(state.failures_so_far, 4)  # each failure so far: +0.5x, up to +2x
        if state.last_thinking_hit_budget:
            scale *= 1.5
        return max(self.min_budget, min(self.max_budget, int(self.base_budget * scale)))

    def _think(self, state: RunState, reason: str) -> StepMode:
        left = self.pool - state.thinking_tokens_used
        if left < self.min_budget:
            return StepMode(
                False,
                None,
                sampling_for(thinking=False),
                f"{reason}, but the task's thinking pool is spent ({state.thinking_tokens_used}"
                f"/{self.pool} tokens)",
            )
        budget = min(self.budget(state), left)
        return StepMode(True, budget, sampling_for(thinking=True), f"{reason} (budget {budget})")

    def decide(self, state: RunState) -> StepMode:
        """Plan on the first step, recover after failures, act directly otherwise."""
        forced = state.user_enable_thinking
        if forced is None:
            forced = state.soft_switch
        if forced is True:
            return _adapt(state, self._think(state, "thinking requested by the user"))
        if forced is False:
            return _adapt(
                state,
                StepMode(False, None, sampling_for(thinking=False), "/no_think from the user"),
            )
        if state.step == 0:
            return _adapt(state, self._think(state, "planning the task"))
        if state.last_step_failed:
            return _adapt(state, self._think(state, "recovering from a failed or empty result"))
        return _adapt(
            state,
            StepMode(False, None, sampling_for(thinking=False), "executing the plan"),
        )

    def reconsider(self, state: RunState, draft: Parsed) -> StepMode | None:
        """Redo a hard task's non-thinking final answer once, with thinking."""
        if state.capability != "hybrid":
            return None
        if state.user_enable_thinking is False or state.soft_switch is False:
            return None
        hard = (
            state.tool_calls_so_far >= self.hard_task_calls
            or state.failures_so_far > 0
            or state.task_tokens >= self.hard_task_tokens
        )
        if not hard or draft.tool_calls or draft.errors:
            return None
        mode = self._think(state, "synthesising the final answer of a hard task")
        return mode if mode.thinking else None
