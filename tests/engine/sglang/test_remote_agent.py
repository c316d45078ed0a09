"""The agent against SGLang's own CPU engine, through RemoteSGLangRuntime's ``/generate``.

The tiny random model's replies are forced token by token inside the engine by the scripted
``CustomLogitProcessor`` (:mod:`q3agent.testing.sglang_server`), so SGLang's scheduler,
RadixAttention, detokenizer and stop handling are what q3agent meets; the required-call test
leaves the random model unforced under q3agent's tool-call grammar (xgrammar in SGLang).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Literal

import pytest

from q3agent import Agent, tool
from q3agent.events import ContentDelta, FinalResult, ReasoningDelta
from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import RunResult
from q3agent.serving.base import ContextLengthError, GenerationRequest, ToolCallConstraint
from q3agent.types import SamplingParams
from tests.engine.conftest import Fixed
from tests.engine.sglang.conftest import SGLangEngine

pytestmark = pytest.mark.anyio

CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>'
ANSWER = "The sum is 5."
REASONING = "I need the sum of two and three, so I will call the add tool with a=2 and b=3."
ADD_SCHEMA = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First addend.
        b: Second addend.
    """
    return a + b


async def _run(agent: Agent, task: str, *, stream: bool) -> RunResult:
    """Run ``task``; when streaming, also check the deltas add up to each step's record."""
    if not stream:
        return await agent.arun(task)
    final = None
    reasoning: dict[int, str] = defaultdict(str)
    content: dict[int, str] = defaultdict(str)
    async for event in agent.stream(task):
        if isinstance(event, ReasoningDelta):
            reasoning[event.step] += event.text
        elif isinstance(event, ContentDelta):
            content[event.step] += event.text
        elif isinstance(event, FinalResult):
            final = event.result
    assert final is not None
    for step in final.steps:
        assert reasoning[step.index].strip() == (step.reasoning or "").strip()
        assert content[step.index].strip() == step.content.strip()
    return final


def _ok(result: RunResult) -> None:
    assert result.status == "answer", f"{result.status}: {result.detail}"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_tool_call_is_executed_and_its_result_fed_back(
    sglang_dense: SGLangEngine, stream: bool
) -> None:
    runtime = sglang_dense.runtime([CALL, ANSWER + "<|im_end|>"])
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=False))
    try:
        result = await _run(agent, "What is 2 + 3? Use the tool.", stream=stream)
    finally:
        await agent.aclose()
    _ok(result)
    first, second = result.steps
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert [r.content for r in first.tool_results] == ["5"]
    assert result.answer == ANSWER
    # RadixAttention served the first request's prompt and reply to the second
    assert second.usage.cached_tokens >= first.usage.prompt_tokens


Cut = Literal["none", "reasoning"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("cut", ["none", "reasoning"])
async def test_thinking_step_within_and_over_its_budget(
    sglang_dense: SGLangEngine, stream: bool, cut: Cut
) -> None:
    """Within the budget: one request. Over it: the reasoning is cut, the report's early-stop
    text is appended, and a second request continues; the continuation re-prefills only
    what the cut request's prompt did not hold (SGLang's radix cache has the rest)."""
    tok = Qwen3Tokenizer.offline()
    first_turn = f"<think>\n{REASONING}\n</think>\n\nLet me add them.\n{CALL}"
    reasoning_tokens = len(tok.encode_trusted(f"<think>\n{REASONING}\n</think>"))
    budget = reasoning_tokens + 40 if cut == "none" else reasoning_tokens // 2
    last_turn = f"<think>\nThe tool said 5.\n</think>\n\n{ANSWER}<|im_end|>"
    runtime = sglang_dense.runtime([first_turn, last_turn])
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=True, budget=budget))
    try:
        result = await _run(agent, "What is 2 + 3? Think, then use the tool.", stream=stream)
    finally:
        await agent.aclose()
    _ok(result)
    first = result.steps[0]
    assert first.hit_budget is (cut == "reasoning")
    assert first.reasoning is not None
    if cut == "reasoning":
        early_stop = EARLY_STOP_TEXT.split("\n")[0]
        assert first.reasoning.rstrip().endswith(early_stop)
        kept = first.reasoning.rstrip().removesuffix(early_stop).strip()
        assert kept and REASONING.startswith(kept)
        assert first.usage.requests == 2
        # re-prefilled: the continuation's prompt minus what the engine had cached
        reprefilled = first.usage.prompt_tokens - first.usage.cached_tokens
        print(f"\nbudget hit: 2 requests, {reprefilled} tokens prefilled in all")
    else:
        assert first.reasoning.strip() == REASONING
        assert first.usage.requests == 1
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert [r.content for r in first.tool_results] == ["5"]
    assert result.answer == ANSWER


def test_two_sync_runs_in_a_row(sglang_dense: SGLangEngine) -> None:
    agent = Agent(
        None,
        runtime=sglang_dense.runtime([ANSWER + "<|im_end|>"]),
        tools=[add],
        policy=Fixed(thinking=False),
    )
    first = agent.run("What is 2 + 3?")
    second = agent.run("And once more: what is 2 + 3?")
    _ok(first)
    _ok(second)
    assert first.answer == second.answer == ANSWER


async def test_three_task_session_reuses_the_prefix(sglang_dense: SGLangEngine) -> None:
    turns = [f"<think>\nTask {k} is easy.\n</think>\n\nAnswer {k}.<|im_end|>" for k in (1, 2, 3)]
    agent = Agent(
        None,
        runtime=sglang_dense.runtime(turns),
        tools=[add],
        policy=Fixed(thinking=True, budget=64),
    )
    session = agent.session()
    try:
        results = [await session.arun(f"Task {k}: say 'Answer {k}.'") for k in (1, 2, 3)]
    finally:
        await agent.aclose()
    for k, result in enumerate(results, start=1):
        _ok(result)
        assert result.answer == f"Answer {k}."
        assert [s.usage.requests for s in result.steps] == [1]
    # tasks 2 and 3 find the whole earlier conversation in RadixAttention's cache
    for before, after in itertools.pairwise(results):
        assert after.steps[0].usage.cached_tokens >= before.steps[0].usage.prompt_tokens


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_required_tool_choice_makes_an_unforced_random_model_call_at_once(
    sglang_dense: SGLangEngine, seed: int
) -> None:
    """SGLang's xgrammar under q3agent's grammar: a complete, schema-valid call within a few
    dozen tokens (unbounded JSON whitespace let the same model pad 96 tokens and never close)."""
    tok = Qwen3Tokenizer.offline()
    runtime = sglang_dense.runtime()
    prompt = tok.encode_trusted(
        "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    sampling = SamplingParams(temperature=1.0, top_p=1.0, top_k=-1, max_tokens=64, seed=seed)
    constraint = ToolCallConstraint(tools=(ADD_SCHEMA,), required=True)
    try:
        generation = await runtime.generate(
            GenerationRequest(prompt_ids=tuple(prompt), sampling=sampling, constraint=constraint)
        )
    finally:
        await runtime.aclose()
    text = generation.text
    head = '<tool_call>\n{"name": "add", "arguments": '
    assert text.startswith(head), text
    first = text[len(head) : text.index("}\n</tool_call>")]
    arguments = json.loads(first)
    assert set(arguments) == {"a", "b"} and all(isinstance(v, int) for v in arguments.values())
    assert len(tok.encode_trusted(text[: text.index("</tool_call>")])) <= 48


async def test_a_prompt_over_the_context_is_a_clear_error(sglang_dense: SGLangEngine) -> None:
    """The context comes from the server (``/v1/models``: ``/get_model_info`` has none)."""
    tok = Qwen3Tokenizer.offline()
    runtime = sglang_dense.runtime()
    prompt = tok.encode_trusted("<|im_start|>user\n" + "word " * 41_000 + "<|im_end|>\n")
    try:
        with pytest.raises(ContextLengthError) as info:
            await runtime.generate(GenerationRequest(prompt_ids=tuple(prompt)))
        assert runtime.context_length == 40_960
    finally:
        await runtime.aclose()
    assert info.value.context_length == 40_960
    assert "context_length" in str(info.value)
