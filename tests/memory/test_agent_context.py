"""The agent keeps long tasks inside the context window by summarising older turns."""

from __future__ import annotations

import json
from typing import Any

import pytest

from q3agent import Agent, NeverThink, tool
from q3agent.memory.context_window import (
    SUMMARY_INSTRUCTIONS,
    SUMMARY_PREFIX,
    ContextWindow,
    FitResult,
)
from q3agent.serving.base import GenerationRequest
from q3agent.testing.runtimes import FunctionRuntime

pytestmark = pytest.mark.anyio


@tool
def read_page(page: int) -> str:
    """Read one page of a long report.

    Args:
        page: Page number.
    """
    return f"Page {page}: " + "revenue grew in every region; " * 40


async def test_prompt_is_summarised_when_it_reaches_the_threshold() -> None:
    state = {"page": 0}
    summaries: list[str] = []

    def model(request: GenerationRequest) -> str:
        prompt = runtime.tokenizer.decode(list(request.prompt_ids))
        if SUMMARY_INSTRUCTIONS in prompt:
            summaries.append(prompt)
            return "The user wants the report read; pages so far say revenue grew everywhere."
        state["page"] += 1
        if state["page"] <= 8:
            body = json.dumps({"name": "read_page", "arguments": {"page": state["page"]}})
            return f"<tool_call>\n{body}\n</tool_call>"
        return "Revenue grew in every region."

    runtime = FunctionRuntime(model)
    window = ContextWindow(runtime.tokenizer, max_tokens=2_000, summarize_at=0.75)
    agent = Agent(
        runtime=runtime, tools=[read_page], policy=NeverThink(), context_window=window, max_steps=12
    )
    result = await agent.arun("Read the report page by page and tell me what it says.")

    assert result.status == "answer"
    assert result.answer == "Revenue grew in every region."
    assert summaries, "no summarisation call was made"
    assert summaries[0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # non-thinking
    # every prompt the model saw stayed inside the window
    sizes = [len(r.prompt_ids) for r in runtime.requests]
    assert max(sizes) <= window.max_tokens
    assert any(SUMMARY_PREFIX.strip() in r.prompt_text for r in runtime.requests[-3:])
    # the re-render is reported where the prefix changed
    assert any(s.prompt_diverged_at is not None for s in result.steps[1:])


async def test_a_task_that_cannot_shrink_is_not_compacted_every_step() -> None:
    class CountingWindow(ContextWindow):
        fits = 0

        async def fit(self, *args: Any, **kwargs: Any) -> FitResult:
            CountingWindow.fits += 1
            return await super().fit(*args, **kwargs)

    step = {"n": 0}

    def model(request: GenerationRequest) -> str:
        step["n"] += 1
        if step["n"] <= 5:
            body = json.dumps({"name": "ping", "arguments": {}})
            return f"<tool_call>\n{body}\n</tool_call>"
        return "Done."

    @tool
    def ping() -> str:
        """Answers ok."""
        return "ok"

    runtime = FunctionRuntime(model)
    window = CountingWindow(runtime.tokenizer, max_tokens=2_000, summarize_at=0.75)
    document = "The quarterly report lists revenue by region. " * 180  # 1,441 tokens
    agent = Agent(runtime=runtime, tools=[ping], policy=NeverThink(), context_window=window)
    result = await agent.arun(f"Read this, then ping five times:\n{document}")

    assert result.status == "answer"
    assert len(runtime.requests) == 6  # no summary call: nothing older than the task to shrink
    # the kept task alone is over the threshold: one attempt, not one per step
    assert CountingWindow.fits == 1
