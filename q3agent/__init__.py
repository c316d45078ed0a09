"""q3agent: a Qwen3 agent and tool-calling framework.

``Agent(model="Qwen3-30B-A3B").run(task)`` runs a Qwen3 model through multi-step tool use with
budgeted thinking, on embedded SGLang, a remote server or local transformers. Names are loaded
on first use, so ``import q3agent`` imports neither torch, transformers nor sglang.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from q3agent._lazy import lazy_getattr

__version__ = "0.2.0"

_EXPORTS = {
    "Agent": "q3agent.agent",
    "AgentSession": "q3agent.agent",
    "RunOptions": "q3agent.options",
    "RunResult": "q3agent.result",
    "StepRecord": "q3agent.result",
    "UsageLimits": "q3agent.result",
    "tool": "q3agent.tools.function",
    "Tool": "q3agent.tools.base",
    "ToolError": "q3agent.tools.base",
    "RunContext": "q3agent.tools.context",
    "AlwaysThink": "q3agent.policy.builtin",
    "NeverThink": "q3agent.policy.builtin",
    "PlanAct": "q3agent.policy.builtin",
    "StepMode": "q3agent.policy.base",
    "ScriptedRuntime": "q3agent.testing.runtimes",
    "FunctionRuntime": "q3agent.testing.runtimes",
    "SamplingParams": "q3agent.types",
    "Usage": "q3agent.types",
}

if TYPE_CHECKING:
    from q3agent.agent import Agent, AgentSession
    from q3agent.options import RunOptions
    from q3agent.policy.base import StepMode
    from q3agent.policy.builtin import AlwaysThink, NeverThink, PlanAct
    from q3agent.result import RunResult, StepRecord, UsageLimits
    from q3agent.testing.runtimes import FunctionRuntime, ScriptedRuntime
    from q3agent.tools.base import Tool, ToolError
    from q3agent.tools.context import RunContext
    from q3agent.tools.function import tool
    from q3agent.types import SamplingParams, Usage

__all__ = [
    "Agent",
    "AgentSession",
    "AlwaysThink",
    "FunctionRuntime",
    "NeverThink",
    "PlanAct",
    "RunContext",
    "RunOptions",
    "RunResult",
    "SamplingParams",
    "ScriptedRuntime",
    "StepMode",
    "StepRecord",
    "Tool",
    "ToolError",
    "Usage",
    "UsageLimits",
    "tool",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
