"""The thinking budget inside vLLM: q3agent's logits processor forces the report's early-stop
text at the budget, so a step whose reasoning hits it is one request with nothing re-prefilled.

The reasoning is scripted past the budget (see :mod:`q3agent.testing.vllm_server`); the
runtime is created with ``engine_budget=True``. test_vllm_agent runs the same step without it
(abort-and-continue: two requests).
"""

from __future__ import annotations

from typing import Literal

import pytest

from q3agent import Agent
from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from tests.engine.conftest import Engine, Fixed
from tests.engine.test_vllm_agent import ANSWER, CALL, REASONING, _ok, _run, add

pytestmark = pytest.mark.anyio

Mode = Literal["completions", "chat"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("mode", ["completions", "chat"])
async def test_a_budget_hit_is_one_request_with_the_early_stop_text(
    dense: Engine, mode: Mode, stream: bool
) -> None:
    tok = Qwen3Tokenizer.offline()
    first_turn = f"<think>\n{REASONING}\n</think>\n\nLet me add them.\n{CALL}"
    budget = len(tok.encode_trusted(f"<think>\n{REASONING}")) // 2
    last_turn = f"<think>\nThe tool said 5.\n</think>\n\n{ANSWER}<|im_end|>"
    runtime = dense.runtime([first_turn, last_turn], chat=mode == "chat", engine_budget=True)
    assert runtime.capabilities.engine_budget
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=True, budget=budget))
    try:
        result = await _run(agent, "What is 2 + 3? Think, then use the tool.", stream=stream)
    finally:
        await agent.aclose()
    _ok(result)
    first = result.steps[0]
    assert first.hit_budget
    assert first.usage.requests == 1  # abort-and-continue takes 2
    assert first.reasoning is not None
    early_stop = EARLY_STOP_TEXT.split("\n")[0]
    assert first.reasoning.rstrip().endswith(early_stop)
    kept = first.reasoning.rstrip().removesuffix(early_stop).strip()
    assert kept and REASONING.startswith(kept)
    assert first.usage.reasoning_tokens <= budget + 1
    assert "Let me add them." in first.content
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert result.answer == ANSWER
    # the second step's thinking closed within the budget: the processor left it alone
    assert not result.steps[1].hit_budget and result.steps[1].usage.requests == 1
