"""The thinking budget inside SGLang: q3agent's CustomLogitProcessor forces the report's
early-stop text at the budget (chained after the tier's scripted processor), so a step whose
reasoning hits it is one request with nothing re-prefilled; without it, abort-and-continue
takes two requests and re-prefills the early-stop text."""

from __future__ import annotations

import pytest

from q3agent import Agent
from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import RunResult
from tests.engine.conftest import Fixed
from tests.engine.sglang.conftest import SGLangEngine

pytestmark = pytest.mark.anyio

REASONING = "I need the sum of two and three, so I will answer five after checking it twice."
ANSWER = "The sum is 5."


async def _budget_hit(engine: SGLangEngine, *, in_engine: bool) -> RunResult:
    tok = Qwen3Tokenizer.offline()
    turn = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>"
    budget = len(tok.encode_trusted(f"<think>\n{REASONING}")) // 2
    engine.flush_cache()  # the other test's request put the same prompt and text in the cache
    runtime = engine.runtime([turn], engine_budget=in_engine)
    assert runtime.capabilities.engine_budget is in_engine
    agent = Agent(None, runtime=runtime, policy=Fixed(thinking=True, budget=budget))
    try:
        result = await agent.arun("What is 2 + 3? Think first.")
    finally:
        await agent.aclose()
    assert result.status == "answer", result.detail
    step = result.steps[0]
    assert step.hit_budget
    assert step.reasoning is not None
    early_stop = EARLY_STOP_TEXT.split("\n")[0]
    assert step.reasoning.rstrip().endswith(early_stop)
    kept = step.reasoning.rstrip().removesuffix(early_stop).strip()
    assert kept and REASONING.startswith(kept)
    assert result.answer == ANSWER
    usage = step.usage
    print(  # the numbers behind docs/serving.md (visible with -s)
        f"\nSGLang budget hit, {'in the engine' if in_engine else 'abort-and-continue'}: "
        f"{usage.requests} requests, prompt {usage.prompt_tokens}, cached {usage.cached_tokens}, "
        f"prefilled {usage.prefilled_tokens}"
    )
    return result


async def test_a_budget_hit_is_one_request_inside_sglang(sglang_dense: SGLangEngine) -> None:
    result = await _budget_hit(sglang_dense, in_engine=True)
    assert result.steps[0].usage.requests == 1


async def test_without_the_processor_the_step_is_cut_and_continued(
    sglang_dense: SGLangEngine,
) -> None:
    result = await _budget_hit(sglang_dense, in_engine=False)
    step = result.steps[0]
    assert step.usage.requests == 2
    # the continuation's prompt is the first one's plus the cut reasoning and the early stop
    assert step.usage.prompt_tokens - step.usage.cached_tokens > 0
