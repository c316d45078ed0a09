"""The tiny Qwen3-MoE on SGLang's CPU engine (its own fused-MoE native path): a forced tool
call is executed and fed back, streaming, with the prefix served from RadixAttention."""

from __future__ import annotations

import pytest

from q3agent import Agent
from tests.engine.conftest import Fixed
from tests.engine.sglang.conftest import SGLangEngine
from tests.engine.sglang.test_remote_agent import ANSWER, CALL, _ok, _run, add

pytestmark = pytest.mark.anyio


async def test_moe_tool_call_round_trip(sglang_moe: SGLangEngine) -> None:
    runtime = sglang_moe.runtime([f"<think>\nAdd them.\n</think>\n\n{CALL}", ANSWER + "<|im_end|>"])
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=True, budget=64))
    try:
        result = await _run(agent, "What is 2 + 3? Use the tool.", stream=True)
    finally:
        await agent.aclose()
    _ok(result)
    first, second = result.steps
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert result.answer == ANSWER
    assert second.usage.cached_tokens >= first.usage.prompt_tokens
