"""The agent on an in-process ``sglang.Engine`` (SGLangRuntime): run by ``test_embedded.py``
under the SGLang venv's Python (``python embedded_agent.py MODEL_DIR PORT``), not collected itself.

One engine serves every scenario: a forced tool call executed and fed back (whole and
streamed), thinking over its budget, and two sync ``run()`` calls after the async ones (the
engine's requests must keep working from another event loop). The tiny random model follows
one script (:class:`~q3agent.serving.testing_sglang.ScriptedTokens`) whose turns fit both
modes: with thinking off the prompt's empty think block skips the scripted reasoning. Each
scenario asserts its own outcome; the last line printed is ``EMBEDDED-OK`` and a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict

from q3agent import Agent, tool
from q3agent.events import ContentDelta, FinalResult, ReasoningDelta
from q3agent.policy.base import StepMode
from q3agent.qwen3.models import NON_THINKING_SAMPLING, THINKING_SAMPLING
from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import RunResult
from q3agent.serving.sglang_runtime import SGLangRequestOptions, SGLangRuntime
from q3agent.serving.testing_sglang import ENGINE_KWARGS, script_params, scripted_processor_str

REASONING = "I need the sum of two and three, so I will call the add tool with a=2 and b=3."
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>'
ANSWER = "The sum is 5."
TURNS = [
    f"<think>\n{REASONING}\n</think>\n\nLet me add them.\n{CALL}",
    f"<think>\nThe tool said 5.\n</think>\n\n{ANSWER}<|im_end|>",
]


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First addend.
        b: Second addend.
    """
    return a + b


class Fixed:
    """One step mode for every step (the scripted model ends its turns itself)."""

    def __init__(self, thinking: bool, budget: int | None = None) -> None:
        preset = THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING
        self.mode = StepMode(thinking, budget, preset.with_(max_tokens=400), "test")

    def decide(self, state: object) -> StepMode:
        """The fixed mode."""
        return self.mode


def check_tool_round(result: RunResult) -> None:
    """The call was executed, its result fed back, and the answer written after it."""
    assert result.status == "answer", f"{result.status}: {result.detail}"
    first = result.steps[0]
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert [r.content for r in first.tool_results] == ["5"]
    assert result.answer == ANSWER, result.answer


async def streamed(agent: Agent, task: str) -> RunResult:
    """Run ``task`` streaming; the deltas must add up to each step's record."""
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


async def async_scenarios(runtime: SGLangRuntime, summary: dict[str, object]) -> None:
    """Tool round whole and streamed (no thinking), then thinking cut by its budget."""
    plain = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=False))
    whole = await plain.arun("What is 2 + 3? Use the tool.")
    check_tool_round(whole)
    second = whole.steps[1]
    assert second.usage.cached_tokens >= whole.steps[0].usage.prompt_tokens  # RadixAttention
    summary["tool_round_cached_tokens"] = second.usage.cached_tokens
    stream = await streamed(plain, "What is 2 + 3? Use the tool, please.")
    check_tool_round(stream)
    tok = Qwen3Tokenizer.offline()
    budget = len(tok.encode_trusted(f"<think>\n{REASONING}\n</think>")) // 2
    thinking = Agent(None, runtime=runtime, tools=[add], policy=Fixed(True, budget))
    for label, result in (
        ("budget_whole", await thinking.arun("What is 2 + 3? Think, then use the tool.")),
        ("budget_stream", await streamed(thinking, "What is 2 + 3? Think first.")),
    ):
        check_tool_round(result)
        first = result.steps[0]
        assert first.hit_budget and first.usage.requests == 2, (first.hit_budget, first.usage)
        early_stop = EARLY_STOP_TEXT.split("\n")[0]
        assert first.reasoning is not None and first.reasoning.rstrip().endswith(early_stop)
        kept = first.reasoning.rstrip().removesuffix(early_stop).strip()
        assert kept and REASONING.startswith(kept), kept
        summary[f"{label}_reprefilled"] = first.usage.prompt_tokens - first.usage.cached_tokens


def main(model_dir: str, port: int) -> None:
    runtime = SGLangRuntime(
        model_dir,
        tp_size=1,
        request_options=SGLangRequestOptions(
            custom_logit_processor=scripted_processor_str(),
            custom_params=script_params(
                [Qwen3Tokenizer.offline().encode_trusted(t) for t in TURNS]
            ),
        ),
        port=port,  # the engine's own (unused) HTTP port, away from the server tiers'
        **ENGINE_KWARGS,
    )
    runtime.start()  # from the main thread: SGLang installs signal handlers while starting
    summary: dict[str, object] = {}
    asyncio.run(async_scenarios(runtime, summary))
    # sync runs on another loop (the agent's portal) after the asyncio.run loop is gone
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=False))
    try:
        for task in ("What is 2 + 3?", "And once more: what is 2 + 3?"):
            check_tool_round(agent.run(task))
    finally:
        agent.close()
    assert runtime.engine is None
    summary["scenarios"] = 6
    print("EMBEDDED-OK " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
