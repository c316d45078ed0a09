"""The thinking budget inside the engine: the forcing rule, its SGLang payload, and the agent on
TransformersRuntime (whose decode loop applies it) against abort-and-continue.

The vLLM and SGLang processors run in real engines in tests/engine.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from q3agent import Agent
from q3agent.events import FinalResult, ReasoningDelta
from q3agent.policy.base import RunState, StepMode
from q3agent.qwen3.models import THINKING_SAMPLING
from q3agent.qwen3.thinking import EARLY_STOP_TEXT, budget_continuation
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import RunResult
from q3agent.serving.base import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    RuntimeCapabilities,
    RuntimeWrapper,
    closing_stream,
)
from q3agent.serving.budget import BudgetedGeneration, TextDelta, generate_with_budget
from q3agent.serving.engine_budget import (
    EngineBudget,
    applies_budget_in_engine,
    budget_params,
    forced_budget_token,
    sglang_processor_source,
    sglang_processor_str,
)
from q3agent.serving.transformers_runtime import TransformersRuntime
from q3agent.types import Usage

TOK = Qwen3Tokenizer.offline()


def _newlines(ids: Sequence[int]) -> int:
    text = TOK.decode(list(ids))
    return len(text) - len(text.rstrip("\n"))


def _force_all(completion: str, budget: int, *, opens: bool = True) -> list[int]:
    """The completion's ids with the budget applied token by token (the model's own ids
    wherever the budget forces nothing)."""
    model = TOK.encode_trusted(completion)
    params = budget_params(EngineBudget(budget, opens), TOK)
    out: list[int] = []
    while len(out) < len(model) + 40:
        forced = forced_budget_token(out, params, _newlines)
        if forced is not None:
            out.append(forced)
        elif len(out) < len(model):
            out.append(model[len(out)])
        else:
            break
    return out


@pytest.mark.parametrize("reasoning", ["Let me think about it", "First step.\n", "Plan:\n\n"])
def test_the_forced_ids_are_the_reports_text_after_the_budget(reasoning: str) -> None:
    head = TOK.encode_trusted("<think>\n" + reasoning)
    budget = len(head) - 1  # the model writes <think> itself: one token more than the budget
    out = _force_all("<think>\n" + reasoning + " and more words" * 5, budget)
    assert out[: len(head)] == head
    expected = TOK.encode_trusted(budget_continuation(TOK.decode(head)))
    assert out[len(head) : len(head) + len(expected)] == expected
    assert TOK.decode(out).count(EARLY_STOP_TEXT) == 1


def test_reasoning_that_closes_in_time_or_never_opens_is_left_alone() -> None:
    closed = "<think>\nShort.\n</think>\n\nThe answer is a very long text " * 3
    assert _force_all(closed, 20) == TOK.encode_trusted(closed)
    plain = "No thinking here, only a long answer " * 5
    assert _force_all(plain, 4) == TOK.encode_trusted(plain)


def test_a_prompt_that_opened_the_reasoning_counts_from_the_first_token() -> None:
    out = _force_all("Thinking " * 20, 5, opens=False)
    assert TOK.decode(out[5:]).startswith("\n\n" + EARLY_STOP_TEXT)
    # an empty head (budget 0) gets the sentence at once, without a break
    assert TOK.decode(_force_all("Thinking " * 20, 0, opens=False)).startswith(EARLY_STOP_TEXT)


def test_a_processor_that_finds_foreign_ids_past_the_budget_stands_down() -> None:
    params = budget_params(EngineBudget(3), TOK)
    head = TOK.encode_trusted("<think>\nA B C")[:4]
    assert forced_budget_token(head, params) is not None
    # the ids after the limit are not the early-stop ids (it joined late, or lagged a token)
    assert forced_budget_token([*head, TOK.encode("zzz")[0]], params) is None


def test_without_a_tokenizer_the_break_is_a_blank_line() -> None:
    params = budget_params(EngineBudget(3), TOK)
    head = TOK.encode_trusted("<think>\nA.\n")[:4]
    assert TOK.decode([forced_budget_token(head, params) or 0]) == "\n\n"


def test_the_sglang_payload_carries_the_processor_source() -> None:
    payload = json.loads(sglang_processor_str())
    pickled = bytes.fromhex(payload["callable"])
    assert b"eval" in pickled and b"Q3AgentThinkingBudget" in pickled
    # the source compiles on its own (the server runs it with only SGLang importable)
    compile(sglang_processor_source(), "q3agent_engine_budget", "exec")


# ---------------------------------------------------------------------------- on a real model


class Recording(RuntimeWrapper):
    """Counts requests and keeps each request's usage."""

    def __init__(self, inner: TransformersRuntime, *, in_engine: bool = True) -> None:
        super().__init__(inner)
        self.in_engine = in_engine
        self.requests: list[GenerationRequest] = []
        self.usages: list[Usage | None] = []

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """The inner runtime's, with the in-engine budget off to force abort-and-continue."""
        inner = self.inner.capabilities
        return replace(inner, engine_budget=self.in_engine and applies_budget_in_engine(self.inner))

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        generation = await self.inner.generate(request)
        self.usages.append(generation.usage)
        return generation

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        self.usages.append(None)
        slot = len(self.usages) - 1
        async with closing_stream(self.inner.stream(request)) as chunks:
            async for chunk in chunks:
                if chunk.generation is not None:
                    self.usages[slot] = chunk.generation.usage
                yield chunk


class Fixed:
    def __init__(self, budget: int) -> None:
        sampling = THINKING_SAMPLING.with_(max_tokens=60, seed=3)
        self.mode = StepMode(True, budget, sampling, "test")

    def decide(self, state: RunState) -> StepMode:
        return self.mode


pytestmark = pytest.mark.anyio


async def _step(
    tiny_model_dir: Path, *, in_engine: bool, stream: bool = False
) -> tuple[RunResult, Recording]:
    """One thinking step over a budget of 8 (a random model never closes its reasoning)."""
    runtime = Recording(TransformersRuntime(tiny_model_dir), in_engine=in_engine)
    agent = Agent(runtime=runtime, policy=Fixed(8), capability="thinking_only", max_steps=1)
    result: RunResult | None = None
    reasoning = ""
    try:
        if stream:
            async for event in agent.stream("Think briefly."):
                if isinstance(event, ReasoningDelta):
                    reasoning += event.text
                elif isinstance(event, FinalResult):
                    result = event.result
            assert result is not None
            assert reasoning.strip() == (result.steps[0].reasoning or "").strip()
        else:
            result = await agent.arun("Think briefly.")
    finally:
        await agent.aclose()
    return result, runtime


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_budget_hit_is_one_request_when_the_engine_applies_it(
    tiny_model_dir: Path, stream: bool
) -> None:
    result, runtime = await _step(tiny_model_dir, in_engine=True, stream=stream)
    step = result.steps[0]
    assert step.hit_budget
    assert step.usage.requests == 1 and len(runtime.requests) == 1
    assert step.usage.reasoning_tokens <= 8
    assert step.reasoning is not None
    assert step.reasoning.rstrip().endswith(EARLY_STOP_TEXT.split("\n")[0])


async def test_abort_and_continue_stays_the_fallback(tiny_model_dir: Path) -> None:
    result, runtime = await _step(tiny_model_dir, in_engine=False)
    step = result.steps[0]
    assert step.hit_budget
    assert step.usage.requests == 2 and len(runtime.requests) == 2
    assert runtime.requests[1].engine_budget is None
    continuation = runtime.usages[1]
    assert continuation is not None and continuation.prefilled_tokens > 0  # the early-stop text


async def test_generate_with_budget_sends_the_budget_only_to_engines_that_apply_it(
    tiny_model_dir: Path,
) -> None:
    runtime = Recording(TransformersRuntime(tiny_model_dir))
    request = GenerationRequest(
        prompt_ids=tuple(
            TOK.encode_trusted("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n")
        ),
        sampling=THINKING_SAMPLING.with_(max_tokens=50, seed=1),
    )
    items = [
        i
        async for i in generate_with_budget(
            runtime, request, 5, model_opens_think=False, stream=True
        )
    ]
    result = items[-1]
    assert isinstance(result, BudgetedGeneration)
    assert result.hit_budget and result.requests == 1
    assert runtime.requests[0].engine_budget == EngineBudget(5, False)
    assert "".join(i.text for i in items if isinstance(i, TextDelta)) == result.text
    assert TOK.decode(list(result.token_ids[5:])).lstrip("\n").startswith(EARLY_STOP_TEXT)
    await runtime.aclose()
