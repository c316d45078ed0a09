"""Thinking policies: the decisions they make over scripted runs, and why."""

from __future__ import annotations

import json

import pytest

from q3agent import Agent, AlwaysThink, NeverThink, PlanAct, tool
from q3agent.policy.base import RunState
from q3agent.qwen3.models import NON_THINKING_SAMPLING, THINKING_SAMPLING
from q3agent.qwen3.parsing import parse
from q3agent.testing.runtimes import ScriptedRuntime

pytestmark = pytest.mark.anyio


def call(name: str, **arguments: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def think(text: str) -> str:
    return f"<think>\n{text}\n</think>\n\n"


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: The key.
    """
    return "" if key == "missing" else f"value of {key}"


def state(**changes: object) -> RunState:
    base: dict[str, object] = {
        "step": 1,
        "task_tokens": 20,
        "num_tools": 2,
        "capability": "hybrid",
        "tool_calls_so_far": 1,
        "failures_so_far": 0,
        "last_step_failed": False,
        "last_step_had_calls": True,
        "last_thinking_hit_budget": False,
        "thinking_steps": 1,
        "thinking_tokens_used": 100,
        "max_steps": 20,
    }
    base.update(changes)
    return RunState(**base)  # type: ignore[arg-type]


async def test_plan_act_thinks_to_plan_acts_directly_and_recovers_after_a_failure() -> None:
    runtime = ScriptedRuntime(
        [
            think("Look up a, then b.") + call("lookup", key="a"),
            call("lookup", key="missing"),
            think("That was empty; try b.") + call("lookup", key="b"),
            "draft: a and b found.",
            think("a came back, the retry found b.") + "a and b found.",
        ]
    )
    agent = Agent(runtime=runtime, tools=[lookup], policy=PlanAct())
    result = await agent.arun("Find a and b.")

    assert [s.thinking for s in result.steps] == [True, False, True, False, True]
    assert "planning" in result.steps[0].reason
    assert result.steps[1].reason == "executing the plan"
    assert "recovering" in result.steps[2].reason
    # a task with a failure is hard: its direct answer is redone once with thinking
    assert result.steps[3].redone
    assert "synthesising" in result.steps[4].reason
    assert result.answer == "a and b found."
    runtime.assert_complete()
    # the template's switch follows the decision: direct steps get the empty think block.
    # (a thinking step within its budget is one request: 0 is step 0, 1 step 1, 2 step 2)
    empty_think = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert runtime.requests[1].prompt_text.endswith(empty_think)
    assert runtime.requests[2].prompt_text.endswith("<|im_start|>assistant\n")
    # sampling follows the report's presets per mode
    assert runtime.requests[0].request.sampling.temperature == THINKING_SAMPLING.temperature
    assert runtime.requests[1].request.sampling.presence_penalty == 1.5


async def test_plan_act_redoes_a_hard_tasks_direct_answer_once_with_thinking() -> None:
    runtime = ScriptedRuntime(
        [
            think("Three lookups.")
            + call("lookup", key="a")
            + call("lookup", key="b")
            + call("lookup", key="c"),
            "draft answer",
            think("Combine a, b and c carefully.") + "Final: a, b and c.",
        ]
    )
    agent = Agent(runtime=runtime, tools=[lookup], policy=PlanAct())
    result = await agent.arun("Find a, b and c and combine them.")

    assert result.answer == "Final: a, b and c."
    assert result.steps[1].redone and not result.steps[1].thinking
    assert result.steps[2].thinking and "synthesising" in result.steps[2].reason
    # the redo shares the prompt up to the generation prompt; only the empty think block goes
    # (a thinking step within its budget is one request: 0 plans, 1 drafts, 2 redoes)
    draft, redo = runtime.requests[1].prompt_ids, runtime.requests[2].prompt_ids
    assert draft[: len(redo)] == redo
    assert runtime.tokenizer.decode(draft[len(redo) :]) == "<think>\n\n</think>\n\n"
    assert "draft answer" not in runtime.requests[2].prompt_text


async def test_never_think_and_always_think_over_a_run() -> None:
    for policy, expected in ((NeverThink(), False), (AlwaysThink(budget=512), True)):
        completion = think("ok") if expected else ""
        runtime = ScriptedRuntime([completion + call("lookup", key="a"), completion + "value of a"])
        result = await Agent(runtime=runtime, tools=[lookup], policy=policy).arun("a?")
        assert [s.thinking for s in result.steps] == [expected, expected]
        assert all(s.budget == (512 if expected else None) for s in result.steps)


async def test_soft_switch_no_think_wins_over_the_policy() -> None:
    runtime = ScriptedRuntime([call("lookup", key="a"), "value of a"])
    result = await Agent(runtime=runtime, tools=[lookup], policy=PlanAct()).arun("a? /no_think")

    assert [s.thinking for s in result.steps] == [False, False]
    assert "/no_think" in result.steps[0].reason


async def test_instruct_2507_never_gets_thinking_switches() -> None:
    runtime = ScriptedRuntime(["Paris."])
    agent = Agent(runtime=runtime, policy=AlwaysThink(), capability="non_thinking")
    result = await agent.arun("Capital of France?")

    assert result.steps[0].thinking is False
    assert "cannot think" in result.steps[0].reason
    assert runtime.requests[0].prompt_text.endswith("<|im_start|>assistant\n")


async def test_thinking_2507_prompt_opens_think_and_the_policy_keeps_it_short() -> None:
    runtime = ScriptedRuntime(["The user wants a city.\n</think>\n\nParis."])
    agent = Agent(runtime=runtime, policy=NeverThink(), capability="thinking_only")
    result = await agent.arun("Capital of France?")

    assert result.answer == "Paris."
    assert result.reasoning == "The user wants a city."
    assert runtime.requests[0].prompt_text.endswith("<|im_start|>assistant\n<think>\n")
    assert result.steps[0].thinking and result.steps[0].budget == 256


def test_plan_act_budget_scales_with_signals_and_respects_the_pool() -> None:
    policy = PlanAct(pool=10_000, base_budget=1000, min_budget=200, max_budget=8000)
    plain = policy.budget(state(task_tokens=0, num_tools=0))
    assert plain == 1000
    assert policy.budget(state(task_tokens=400, num_tools=0)) == 2000
    assert policy.budget(state(task_tokens=0, num_tools=16)) == 2000
    assert policy.budget(state(task_tokens=0, num_tools=0, failures_so_far=2)) == 2000
    assert policy.budget(state(task_tokens=0, num_tools=0, last_thinking_hit_budget=True)) == 1500
    # the pool caps the step, and an empty pool turns thinking off with the reason
    nearly_spent = policy.decide(
        state(step=0, task_tokens=0, num_tools=0, thinking_tokens_used=9_500)
    )
    assert nearly_spent.thinking and nearly_spent.budget == 500
    spent = policy.decide(state(step=0, thinking_tokens_used=9_900))
    assert not spent.thinking and "pool is spent" in spent.reason
    assert spent.sampling == NON_THINKING_SAMPLING


def test_reconsider_only_for_hard_tasks() -> None:
    policy = PlanAct()
    draft = parse("The answer.")
    assert policy.reconsider(state(tool_calls_so_far=1), draft) is None
    redo = policy.reconsider(state(tool_calls_so_far=3), draft)
    assert redo is not None and redo.thinking
    assert policy.reconsider(state(failures_so_far=1), draft) is not None
    assert policy.reconsider(state(tool_calls_so_far=5, soft_switch=False), draft) is None
