"""Prefix KV reuse in TransformersRuntime: prefilled tokens and wall time over an agent run.

Simulates an append-only agent conversation of ``--steps`` steps (a user task, then per step:
the model's completion and a tool response of about ``--response-tokens`` tokens) and runs it
through two runtimes on the same model, one keeping the KV cache of the previous request and
one prefilling every prompt in full. Greedy decoding, so both produce the same tokens (checked).

    python benchmarks/prefix_reuse_bench.py                   # tiny random Qwen3, CPU
    python benchmarks/prefix_reuse_bench.py --moe
    python benchmarks/prefix_reuse_bench.py --model Qwen3-0.6B --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import GenerationRequest
from q3agent.serving.transformers_runtime import TransformersRuntime
from q3agent.testing.models import make_tiny_qwen3
from q3agent.types import SamplingParams

FILLER = (
    "The river delta report lists sediment loads, flood stages and gauge readings for each "
    "station along the lower course, with notes on dredging and seasonal variation. "
)


def tool_turn(tok: Qwen3Tokenizer, step: int, tokens: int) -> list[int]:
    body = tok.encode(f"[result {step}] " + FILLER * 50)[:tokens]
    return [
        *tok.encode_trusted("<|im_end|>\n<|im_start|>user\n<tool_response>\n"),
        *body,
        *tok.encode_trusted("\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
    ]


async def run(
    runtime: TransformersRuntime, steps: int, tokens: int, max_tokens: int
) -> dict[str, Any]:
    tok = runtime.tokenizer
    await runtime.load()
    await runtime.clear_cache()
    ids = [
        *tok.encode_trusted("<|im_start|>user\n"),
        *tok.encode("Investigate the river delta report and summarise the risks."),
        *tok.encode_trusted("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ]
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    rows = []
    start = time.perf_counter()
    for step in range(steps):
        t0 = time.perf_counter()
        first_chunk = None
        result = None
        async for chunk in runtime.stream(
            GenerationRequest(prompt_ids=tuple(ids), sampling=sampling)
        ):
            first_chunk = first_chunk or time.perf_counter()
            result = chunk.generation
        assert result is not None and first_chunk is not None
        rows.append(
            {
                "prompt": result.usage.prompt_tokens,
                "prefilled": result.usage.prefilled_tokens,
                "ttft": first_chunk - t0,
                "seconds": time.perf_counter() - t0,
                "completion": result.token_ids,
            }
        )
        ids = [*ids, *result.token_ids, *tool_turn(tok, step, tokens)]
    return {"rows": rows, "seconds": time.perf_counter() - start}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model name, HF id or directory (default: tiny random)")
    parser.add_argument("--moe", action="store_true", help="tiny random Qwen3-MoE instead")
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--response-tokens", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        model: str | Path = args.model or make_tiny_qwen3(Path(scratch) / "tiny", moe=args.moe)
        reuse = TransformersRuntime(model, device=args.device)
        full = TransformersRuntime(model, device=args.device, prefix_cache=False)
        # warm-up (lazy imports, allocator) so the first timed step is not penalised
        for runtime in (reuse, full):
            await run(runtime, 1, 16, 2)
        with_reuse = await run(reuse, args.steps, args.response_tokens, args.max_tokens)
        without = await run(full, args.steps, args.response_tokens, args.max_tokens)
        await reuse.aclose()
        await full.aclose()

    name = args.model or ("tiny random Qwen3-MoE" if args.moe else "tiny random Qwen3")
    print(f"Prefix KV reuse, {name}, {args.steps} append-only steps, greedy")
    print(f"{'step':>4} {'prompt':>7} {'prefill reuse':>14} {'prefill full':>13} "
          f"{'TTFT reuse':>11} {'TTFT full':>10} {'s reuse':>8} {'s full':>8}")  # fmt: skip
    same = True
    for i, (a, b) in enumerate(zip(with_reuse["rows"], without["rows"], strict=True)):
        same &= a["completion"] == b["completion"]
        print(
            f"{i + 1:>4} {a['prompt']:>7} {a['prefilled']:>14} {b['prefilled']:>13} "
            f"{a['ttft']:>11.3f} {b['ttft']:>10.3f} {a['seconds']:>8.3f} {b['seconds']:>8.3f}"
        )
    pre_a = sum(r["prefilled"] for r in with_reuse["rows"])
    pre_b = sum(r["prefilled"] for r in without["rows"])
    print(f"prefilled tokens: {pre_a} with reuse vs {pre_b} without ({pre_b / pre_a:.1f}x fewer)")
    ttft_a = sum(r["ttft"] for r in with_reuse["rows"])
    ttft_b = sum(r["ttft"] for r in without["rows"])
    print(
        f"time to first token, summed: {ttft_a:.2f}s with reuse vs {ttft_b:.2f}s without "
        f"({ttft_b / ttft_a:.2f}x faster)"
    )
    ratio = without["seconds"] / with_reuse["seconds"]
    print(
        f"wall time: {with_reuse['seconds']:.2f}s with reuse vs {without['seconds']:.2f}s "
        f"without ({ratio:.2f}x faster)"
    )
    print(f"identical completions: {same}")


if __name__ == "__main__":
    anyio.run(main)
