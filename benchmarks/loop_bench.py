"""Agent-loop overhead: per-step CPU with the runtime excluded, and concurrency.

Prints, from one run:
- loop CPU per step (policy, prompt building, parsing, tool execution, records) at a 2K-,
  32K- and 128K-token history: the process CPU time of a step minus the CPU time spent inside
  the runtime, and the ratio of the 128K figure to the 2K one (1.0 = independent of history);
- 64 concurrent agents with a sync tool against a FunctionRuntime that takes 20 ms per
  request: steps per CPU-second (loop only, and everything including the test runtime), and
  their wall time against one agent's (1.0 = perfect overlap).

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
from q3agent.testing.runtimes import FunctionRuntime

STEPS = 10
RUNS = 5
"""Repetitions each figure is the median of (the machine these run on is shared and noisy)."""


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
    """Adds up the CPU seconds spent inside the wrapped runtime (generate and stream).

    Without latency the wrapped FunctionRuntime never yields to the event loop inside a call,
    so the process CPU time around the call is the runtime's own.
    """

    def __init__(self, inner: FunctionRuntime) -> None:
        super().__init__(inner)
        self.seconds = 0.0

    async def generate(self, request: GenerationRequest) -> Generation:
        start = time.process_time()
        try:
            return await self.inner.generate(request)
        finally:
            self.seconds += time.process_time() - start

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        chunks = self.inner.stream(request)
        while True:
            start = time.process_time()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            finally:
                self.seconds += time.process_time() - start
            yield chunk


_RUNTIME_CPU = [0.0]


class _CpuCountingRuntime(FunctionRuntime):
    """A FunctionRuntime that adds the CPU its own calls take to ``_RUNTIME_CPU``."""

    async def _complete(self, request: GenerationRequest) -> str | Generation:
        start = time.process_time()
        try:
            return await super()._complete(request)
        finally:
            _RUNTIME_CPU[0] += time.process_time() - start

    def _finish(self, request: GenerationRequest, ids: list[int]) -> Generation:
        start = time.process_time()
        try:
            return super()._finish(request, ids)
        finally:
            _RUNTIME_CPU[0] += time.process_time() - start


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
    """Loop CPU for a task over a long history, runtime CPU excluded.

    Returns (ms for the first step, median ms per later step, final prompt tokens). The first
    step renders and tokenizes the whole history once; later steps only append.
    """
    tok = Qwen3Tokenizer.offline()
    firsts: list[float] = []
    laters: list[float] = []
    prompt_len = 0
    for _ in range(RUNS):
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
            # long histories need a long window: measure the loop, not the summarisation
            # that the default 32,768-token window would trigger
            context_window=ContextWindow(tok, max_tokens=262_144),
        )
        session = agent.session(_history(tok, history_tokens))
        marks: list[tuple[float, float]] = []  # (process CPU, runtime CPU) at each step start
        start = time.process_time()
        async for event in session.stream("Look up ten keys, one at a time."):
            if isinstance(event, StepStart | FinalResult):
                marks.append((time.process_time(), runtime.seconds))
            if isinstance(event, FinalResult):
                assert event.result.status == "answer", event.result.detail
                prompt_len = len(event.result.prompt_ids)
        steps = [(b[0] - a[0]) - (b[1] - a[1]) for a, b in itertools.pairwise(marks)]
        first_mark = marks[0][0] - start
        firsts.append((first_mark + steps[0]) * 1000)
        laters.extend(x * 1000 for x in steps[1:])
    return statistics.median(firsts), statistics.median(laters), prompt_len


async def run_agents(count: int, tok: Qwen3Tokenizer) -> tuple[float, float, float, int]:
    """``count`` agents (each its own 20 ms runtime) at once: (wall s, CPU s, runtime CPU s,
    steps)."""

    async def one() -> None:
        state = {"step": 0}

        def answer(request: GenerationRequest) -> str:
            text = _completion(state["step"] % 5 if state["step"] < 4 else STEPS)
            state["step"] += 1
            return text

        runtime = _CpuCountingRuntime(answer, tokenizer=tok, latency=0.020)
        result = await Agent(runtime=runtime, tools=[lookup], policy=NeverThink()).arun(
            "Look up four keys."
        )
        assert result.status == "answer", result.detail
        steps[0] += len(result.steps)

    steps = [0]
    _RUNTIME_CPU[0] = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return time.perf_counter() - start, time.process_time() - cpu, _RUNTIME_CPU[0], steps[0]


async def main() -> None:
    tok = Qwen3Tokenizer.offline()
    print(f"loop CPU per step (runtime CPU excluded), 10-step tasks, medians of {RUNS} runs")
    await overhead_per_step(2_000)  # warm-up: the first size measured must not pay for it
    later_by_size: dict[int, float] = {}
    for tokens in (2_000, 32_000, 128_000):
        first, later, prompt_len = await overhead_per_step(tokens)
        later_by_size[tokens] = later
        print(
            f"  history ~{tokens:>7,} tokens (final prompt {prompt_len:,}): first step "
            f"{first:8.2f} ms (renders the history once), later steps {later:6.3f} ms/step"
        )
    ratio = later_by_size[128_000] / later_by_size[2_000]
    print(f"  later-step CPU at 128K / at 2K: {ratio:.2f}x (1.00 = independent of history)")
    await run_agents(1, tok)  # warm-up
    single = statistics.median([(await run_agents(1, tok))[0] for _ in range(RUNS)])
    runs = [await run_agents(64, tok) for _ in range(RUNS)]
    wall, cpu, runtime_cpu, steps = sorted(runs)[RUNS // 2]
    print("concurrency: 64 agents of 5 steps, sync tool, 20 ms-per-request FunctionRuntime")
    loop_rate, all_rate = steps / (cpu - runtime_cpu), steps / cpu
    print(f"  steps per CPU-second: {loop_rate:7.0f} loop only, {all_rate:7.0f} with the test "
          f"runtime's CPU ({steps} steps, median of {RUNS})")  # fmt: skip
    print(f"  1 agent:   {single * 1000:7.1f} ms")
    print(f"  64 agents: {wall * 1000:7.1f} ms  (ratio {wall / single:.2f}x one agent's wall time)")


if __name__ == "__main__":
    anyio.run(main)
