"""Agent-loop overhead: per-step cost with the runtime's time excluded, and concurrency.

Prints, from one run:
- loop overhead per step (policy, prompt building, parsing, tool execution, records) at a
  2K- and a 32K-token history: step wall time minus the time spent inside the runtime;
- wall time of 64 concurrent agents against a FunctionRuntime that takes 20 ms per request,
  versus one agent, as a ratio (1.0 = perfect overlap).

    python benchmarks/loop_bench.py
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator

import anyio

from q3agent import Agent, NeverThink, tool
from q3agent.events import FinalResult, StepStart
from q3agent.memory.context_window import ContextWindow
from q3agent.qwen3.messages import AssistantMessage, UserMessage
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import Generation, GenerationChunk, GenerationRequest, RuntimeWrapper
from q3agent.serving.testing import FunctionRuntime

STEPS = 10


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: The key.
    """
    return f"value of {key}: " + "lorem ipsum " * 20


def _completion(step: int) -> str:
    if step >= STEPS - 1:
        return "All keys looked up."
    body = json.dumps({"name": "lookup", "arguments": {"key": f"k{step}"}})
    return f"<tool_call>\n{body}\n</tool_call>"


class TimedRuntime(RuntimeWrapper):
    """Adds up the seconds spent inside the wrapped runtime (generate and stream)."""

    def __init__(self, inner: FunctionRuntime) -> None:
        super().__init__(inner)
        self.seconds = 0.0

    async def generate(self, request: GenerationRequest) -> Generation:
        start = time.perf_counter()
        try:
            return await self.inner.generate(request)
        finally:
            self.seconds += time.perf_counter() - start

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        chunks = self.inner.stream(request)
        while True:
            start = time.perf_counter()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            finally:
                self.seconds += time.perf_counter() - start
            yield chunk


def _history(tok: Qwen3Tokenizer, tokens: int) -> list[UserMessage | AssistantMessage]:
    """A prior exchange of about ``tokens`` tokens (a long document and a reply)."""
    paragraph = "The quarterly report lists revenue, costs and forecasts by region. "
    per = tok.count(paragraph)
    document = paragraph * max(1, tokens // per)
    return [
        UserMessage(content=f"Here is a document:\n{document}"),
        AssistantMessage(content="I have read the document."),
    ]


async def overhead_per_step(history_tokens: int) -> tuple[float, float, int]:
    """Loop overhead for a task over a long history, runtime time excluded.

    Returns (ms for the first step, median ms per later step, final prompt tokens). The first
    step renders and tokenizes the whole history once; later steps only append.
    """
    tok = Qwen3Tokenizer.offline()
    firsts: list[float] = []
    laters: list[float] = []
    prompt_len = 0
    for _ in range(3):
        state = {"step": 0}

        def answer(request: GenerationRequest, state: dict[str, int] = state) -> str:
            text = _completion(state["step"])
            state["step"] += 1
            return text

        runtime = TimedRuntime(FunctionRuntime(answer, tokenizer=tok))
        agent = Agent(
            runtime=runtime,
            tools=[lookup],
            policy=NeverThink(),
            max_steps=STEPS + 1,
            # a 32K-token history needs the YaRN window (131,072): measure the loop, not
            # the summarisation that the default 32,768-token window would trigger
            context_window=ContextWindow(tok, max_tokens=131_072),
        )
        session = agent.session(_history(tok, history_tokens))
        marks: list[tuple[float, float]] = []  # (wall clock, runtime seconds) at each step start
        start = time.perf_counter()
        async for event in session.stream("Look up ten keys, one at a time."):
            if isinstance(event, StepStart | FinalResult):
                marks.append((time.perf_counter(), runtime.seconds))
            if isinstance(event, FinalResult):
                assert event.result.status == "answer", event.result.detail
                prompt_len = len(event.result.prompt_ids)
        steps = [(b[0] - a[0]) - (b[1] - a[1]) for a, b in itertools.pairwise(marks)]
        first_mark = marks[0][0] - start
        firsts.append((first_mark + steps[0]) * 1000)
        laters.extend(x * 1000 for x in steps[1:])
    return statistics.median(firsts), statistics.median(laters), prompt_len


async def run_agents(count: int, tok: Qwen3Tokenizer) -> float:
    """Wall seconds for ``count`` agents (each its own 20 ms runtime) running at once."""

    async def one() -> None:
        state = {"step": 0}

        def answer(request: GenerationRequest) -> str:
            text = _completion(state["step"] % 5 if state["step"] < 4 else STEPS)
            state["step"] += 1
            return text

        runtime = FunctionRuntime(answer, tokenizer=tok, latency=0.020)
        result = await Agent(runtime=runtime, tools=[lookup], policy=NeverThink()).arun(
            "Look up four keys."
        )
        assert result.status == "answer", result.detail

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return time.perf_counter() - start


async def main() -> None:
    tok = Qwen3Tokenizer.offline()
    print("loop overhead (runtime time excluded), 10-step tasks, medians of 3 runs")
    for tokens in (2_000, 32_000):
        first, later, prompt_len = await overhead_per_step(tokens)
        print(
            f"  history ~{tokens:>6,} tokens (final prompt {prompt_len:,}): first step "
            f"{first:7.2f} ms (renders the history once), later steps {later:6.2f} ms/step"
        )
    await run_agents(1, tok)  # warm-up
    single = statistics.median([await run_agents(1, tok) for _ in range(3)])
    many = statistics.median([await run_agents(64, tok) for _ in range(3)])
    print("concurrency: agents of 5 steps against a 20 ms-per-request FunctionRuntime")
    print(f"  1 agent:   {single * 1000:7.1f} ms")
    print(f"  64 agents: {many * 1000:7.1f} ms  (ratio {many / single:.2f}x one agent's wall time)")


if __name__ == "__main__":
    anyio.run(main)
