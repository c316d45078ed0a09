"""The agent against a real vLLM CPU server with a tiny random Qwen3-MoE.

Runs after the dense tests (one vLLM server at a time): a budgeted thinking step that calls a
tool, in completions mode streaming and in chat mode, and the prefix cache across steps.
"""

from __future__ import annotations

import pytest

from q3agent import Agent
from q3agent.events import FinalResult
from q3agent.result import RunResult
from tests.engine.conftest import Engine, Fixed
from tests.engine.test_vllm_agent import ANSWER, CALL, REASONING, add

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("chat", [False, True], ids=["completions-stream", "chat"])
async def test_moe_thinks_under_a_budget_and_calls_a_tool(moe: Engine, chat: bool) -> None:
    turns = [
        f"<think>\n{REASONING}\n</think>\n\n{CALL}",
        f"<think>\nDone.\n</think>\n\n{ANSWER}<|im_end|>",
    ]
    agent = Agent(
        None,
        runtime=moe.runtime(turns, chat=chat),
        tools=[add],
        policy=Fixed(thinking=True, budget=12),
    )
    try:
        if chat:
            result: RunResult | None = await agent.arun("What is 2 + 3?")
        else:
            result = None
            async for event in agent.stream("What is 2 + 3?"):
                if isinstance(event, FinalResult):
                    result = event.result
    finally:
        await agent.aclose()
    assert result is not None
    assert result.status == "answer", result.detail
    first, second = result.steps
    assert first.hit_budget and first.reasoning
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert [r.content for r in first.tool_results] == ["5"]
    assert result.answer == ANSWER
    assert second.usage.cached_tokens > 0
