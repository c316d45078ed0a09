"""Thinking policies: per step, think under a budget or answer directly, and say why."""

from q3agent.policy.base import Policy, ReconsideringPolicy, RunState, StepMode, ThinkingCapability
from q3agent.policy.builtin import AlwaysThink, NeverThink, PlanAct

__all__ = [
    "AlwaysThink",
    "NeverThink",
    "PlanAct",
    "Policy",
    "ReconsideringPolicy",
    "RunState",
    "StepMode",
    "ThinkingCapability",
]
