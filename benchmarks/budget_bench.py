"""What a budget-limited thinking step costs on a prefix-caching runtime.

Runs one agent step on a tiny random Qwen3 (TransformersRuntime, KV reuse on) whose thinking
hits the budget, and prints the requests it took and the prompt tokens each request had to
prefill. The continuation should re-prefill only the early-stop text (plus phase 1's last
token, which the model produced but never read).

    python benchmarks/budget_bench.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from q3agent import Agent
from q3agent.policy.base import RunState, StepMode
from q3agent.qwen3.models import THINKING_SAMPLING
from q3agent.qwen3.thinking import budget_continuation
from q3agent.serving.base import Generation, GenerationRequest, RuntimeWrapper
from q3agent.serving.transformers_runtime import TransformersRuntime
from q3agent.testing.models import make_tiny_qwen3

BUDGET = 64


class Recording(RuntimeWrapper):
    def __init__(self, inner: TransformersRuntime) -> None:
        super().__init__(inner)
        self.generations: list[Generation] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        generation = await self.inner.generate(request)
        self.generations.append(generation)
        return generation


class Budgeted:
    def decide(self, state: RunState) -> StepMode:
        sampling = THINKING_SAMPLING.with_(max_tokens=BUDGET + 48, seed=1)
        return StepMode(True, BUDGET, sampling, f"budget {BUDGET}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        model = make_tiny_qwen3(Path(scratch) / "tiny")
        runtime = Recording(TransformersRuntime(model))
        agent = Agent(runtime=runtime, policy=Budgeted(), capability="thinking_only", max_steps=1)
        # a long task so the history dominates: the continuation must not re-prefill it
        result = await agent.arun("Summarise the following notes. " + "Notes about a plan. " * 200)
        step = result.steps[0]
        early = len(runtime.tokenizer.encode_trusted(budget_continuation("x")))
        print(
            f"budget {BUDGET} tokens, thinking hit it: {step.hit_budget}; "
            f"reasoning tokens {step.usage.reasoning_tokens}"
        )
        print(f"requests for the step: {step.usage.requests}")
        for i, g in enumerate(runtime.generations, 1):
            print(
                f"  request {i}: prompt {g.usage.prompt_tokens:5d} tokens, cached "
                f"{g.usage.cached_tokens:5d}, prefilled {g.usage.prefilled_tokens:4d}, "
                f"generated {g.usage.completion_tokens}"
            )
        print(
            f"early-stop text: {early} tokens; re-prefilled by the continuation: "
            f"{runtime.generations[-1].usage.prefilled_tokens}"
        )
        await runtime.aclose()


if __name__ == "__main__":
    anyio.run(main)
