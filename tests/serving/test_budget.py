"""The thinking-budget procedure: one request while the reasoning fits, the report's cut else."""

from __future__ import annotations

import pytest

from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import GenerationRequest
from q3agent.serving.budget import BudgetedGeneration, TextDelta, generate_with_budget
from q3agent.testing.runtimes import ScriptedRuntime
from q3agent.types import SamplingParams

pytestmark = pytest.mark.anyio

REASONING = "<think>\nThe user wants a list; three items will do.\n</think>\n\n"
LONG_ANSWER = "Here are the items: " + ", ".join(f"item {i}" for i in range(60)) + "."


def user_prompt(tok: Qwen3Tokenizer, *, opened: bool = False) -> tuple[int, ...]:
    text = "<|im_start|>user\nList things.<|im_end|>\n<|im_start|>assistant\n"
    return tuple(tok.encode_trusted(text + ("<think>\n" if opened else "")))


async def run(
    runtime: ScriptedRuntime, budget: int, *, stream: bool = False, opened: bool = False
) -> tuple[BudgetedGeneration, str]:
    request = GenerationRequest(
        prompt_ids=user_prompt(runtime.tokenizer, opened=opened),
        sampling=SamplingParams(max_tokens=2_000),
        request_id="step",
    )
    result, shown = None, ""
    async for item in generate_with_budget(
        runtime, request, budget, stream=stream, model_opens_think=not opened
    ):
        if isinstance(item, TextDelta):
            shown += item.text
        else:
            result = item
    assert result is not None
    return result, shown


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_within_budget_takes_one_request_whatever_the_answer_length(
    stream: bool,
) -> None:
    runtime = ScriptedRuntime([REASONING + LONG_ANSWER])
    tok = runtime.tokenizer
    budget = len(tok.encode_trusted(REASONING)) + 2  # the answer alone is far longer
    result, shown = await run(runtime, budget, stream=stream)
    assert result.requests == 1 and len(runtime.requests) == 1
    assert not result.hit_budget
    assert result.text == REASONING + LONG_ANSWER
    if stream:
        assert shown == result.text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("budget", [0, 1, 5, 13])
async def test_a_cut_keeps_exactly_the_budget_and_appends_the_reports_text(
    stream: bool, budget: int
) -> None:
    thinking = "<think>\n" + "Weigh the options once more. " * 12 + "\n</think>\n\n"
    runtime = ScriptedRuntime([thinking + "Option A."])
    result, shown = await run(runtime, budget, stream=stream)
    tok = runtime.tokenizer
    assert result.hit_budget and result.requests == 2
    assert result.usage.reasoning_tokens <= budget
    head = result.token_ids[: budget + 1]  # <think> + the budget
    assert head[0] == tok.think_id and tok.think_end_id not in head
    assert tok.decode(result.token_ids[budget + 1 :]).lstrip("\n").startswith(EARLY_STOP_TEXT)
    assert result.text.endswith("Option A.")
    assert runtime.requests[1].request.request_id != runtime.requests[0].request.request_id
    if stream:
        assert shown == result.text


async def test_a_prompt_that_opened_thinking_counts_from_the_first_token() -> None:
    runtime = ScriptedRuntime(["Thinking " * 30 + "\n</think>\n\nDone."])
    result, _ = await run(runtime, 8, opened=True)
    tok = runtime.tokenizer
    assert result.hit_budget
    assert tok.think_end_id not in result.token_ids[:8]
    assert tok.decode(result.token_ids[8:]).lstrip("\n").startswith(EARLY_STOP_TEXT)
    assert result.text.endswith("Done.")
