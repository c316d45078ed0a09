"""The agent on TransformersRuntime with tiny random Qwen3 models: real generation end to end.

A random model writes nonsense, so these tests use what does not depend on its words: a
constrained first step must yield a schema-valid call that the agent executes; later steps
reuse the KV cache of everything before them; a thinking budget cuts reasoning and appends
the report's early-stop text.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from q3agent import Agent, RunOptions, tool
from q3agent.policy.base import RunState, StepMode
from q3agent.qwen3.models import NON_THINKING_SAMPLING, THINKING_SAMPLING
from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.serving.base import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    RuntimeCapabilities,
    RuntimeWrapper,
)
from q3agent.serving.transformers_runtime import TransformersRuntime

pytestmark = pytest.mark.anyio


class Recording(RuntimeWrapper):
    """Keeps every request and its generation."""

    def __init__(self, inner: TransformersRuntime) -> None:
        super().__init__(inner)
        self.calls: list[tuple[GenerationRequest, Generation | None]] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        generation = await self.inner.generate(request)
        self.calls.append((request, generation))
        return generation

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The inner stream; a stream its consumer closed early records no generation."""
        self.calls.append((request, None))
        inner = self.inner.stream(request)
        assert isinstance(inner, AsyncGenerator)
        async with contextlib.aclosing(inner):  # a close must reach the runtime (its lock)
            async for chunk in inner:
                if chunk.generation is not None:
                    self.calls[-1] = (request, chunk.generation)
                yield chunk


class AbortAndContinue(Recording):
    """Hides the runtime's in-engine budget, so the budget procedure cuts and continues."""

    @property
    def capabilities(self) -> RuntimeCapabilities:
        return replace(self.inner.capabilities, engine_budget=False)


class Short:
    """A fixed mode with a small output cap (a random model never stops on its own)."""

    def __init__(self, thinking: bool, budget: int | None = None, max_tokens: int = 40) -> None:
        preset = THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING
        self.mode = StepMode(thinking, budget, preset.with_(max_tokens=max_tokens, seed=7), "test")

    def decide(self, state: RunState) -> StepMode:
        return self.mode


@tool
def convert(unit: Literal["km", "mi"]) -> str:
    """Say which unit to convert to.

    Args:
        unit: Target unit.
    """
    return f"converted to {unit}"


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
async def test_constrained_random_model_calls_a_tool_that_the_agent_executes(
    moe: bool, tiny_model_dir: Path, tiny_moe_model_dir: Path
) -> None:
    runtime = Recording(TransformersRuntime(tiny_moe_model_dir if moe else tiny_model_dir))
    agent = Agent(
        runtime=runtime,
        tools=[convert],
        policy=Short(False, max_tokens=48),
        options=RunOptions(tool_choice="convert", max_steps=2),
    )
    result = await agent.arun("Convert 5 km.")

    first = result.steps[0]
    assert first.tool_results, "the constrained step produced no call"
    executed = first.tool_results[0]
    assert not executed.is_error, executed.content
    assert executed.content in ("converted to km", "converted to mi")
    # step 1's prompt extends step 0's prompt + completion (a final <|endoftext|> is closed as
    # <|im_end|>, as the template does): only the new tokens are prefilled
    (req0, gen0), (req1, gen1) = runtime.calls[0], runtime.calls[1]
    kept = gen0.token_ids
    if kept and kept[-1] == runtime.tokenizer.eos_id:
        kept = kept[:-1]
    before = req0.prompt_ids + kept
    assert req1.prompt_ids[: len(before)] == before
    assert gen1.usage.cached_tokens >= len(before) - 1
    assert gen1.usage.prefilled_tokens <= len(req1.prompt_ids) - len(before) + 1
    await runtime.aclose()


async def test_thinking_budget_on_a_real_model_cuts_reasoning_and_continues(
    tiny_model_dir: Path,
) -> None:
    runtime = AbortAndContinue(TransformersRuntime(tiny_model_dir))  # see test_engine_budget
    agent = Agent(
        runtime=runtime,
        policy=Short(True, budget=6, max_tokens=30),
        capability="thinking_only",
        max_steps=1,
    )
    result = await agent.arun("Think briefly.")

    step = result.steps[0]
    assert step.hit_budget
    assert step.usage.reasoning_tokens <= 6
    assert step.usage.requests == 2
    (phase1, _), (phase2, gen2) = runtime.calls  # phase 1 was streamed and cut at the budget
    assert gen2 is not None
    tok = runtime.tokenizer
    assert phase2.prompt_ids[: len(phase1.prompt_ids)] == phase1.prompt_ids
    added = phase2.prompt_ids[len(phase1.prompt_ids) :]
    kept = 6  # the prompt opened <think>: exactly the budget's tokens are kept
    assert tok.think_end_id not in added[:kept]
    assert tok.decode(list(added[kept:])).endswith(EARLY_STOP_TEXT)
    # the continuation re-prefills only the early-stop text (plus phase 1's last token)
    early = len(added) - kept
    assert gen2.usage.prefilled_tokens <= early + 1
    await runtime.aclose()
