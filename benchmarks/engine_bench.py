"""Prompt, cached and prefilled tokens on a real vLLM CPU server: q3agent ids vs a chat client.

Two workloads on a tiny random Qwen3 whose replies are scripted inside the engine (the
scripted-token logits processor of :mod:`q3agent.serving.testing_vllm`), so both clients get
the same replies and only how they build prompts differs:

* a 4-step tool task with thinking off (3 tool calls, each returning ~300 tokens, then the
  answer);
* a 3-task session with thinking on (a budget the model stays within).

Clients: q3agent (``OpenAICompatibleRuntime``, completions with token-id prompts, append-only)
and a plain chat-API client that resends the whole history to ``/v1/chat/completions`` each
step (the server renders its chat template, which re-renders earlier turns). Per step it prints
prompt / cached / prefilled tokens and requests, then the totals and the prefilled ratio.
It also measures requests per thinking step within the budget (goal: 1) and, for a step that
hits its budget, both ways of ending its reasoning: abort-and-continue (the prefill share of
the continuation request: only the early-stop text should need prefilling) and the budget
inside the engine (``engine_budget=True``: one request, nothing re-prefilled). Each run gets
its own system prompt, so no run reuses another's cache.

    python benchmarks/engine_bench.py                       # starts vLLM (engine venv) on 18021
    python benchmarks/engine_bench.py --moe
    python benchmarks/engine_bench.py --base-url http://127.0.0.1:18001   # a running one
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from q3agent import Agent, tool
from q3agent.policy.base import RunState, StepMode
from q3agent.qwen3.models import NON_THINKING_SAMPLING, THINKING_SAMPLING
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import Generation, GenerationChunk, GenerationRequest, RuntimeWrapper
from q3agent.serving.openai_runtime import OpenAICompatibleRuntime
from q3agent.serving.testing_models import QWEN3_CONTEXT, VLLM_CPU_HEAD_DIM, make_tiny_qwen3
from q3agent.serving.testing_vllm import VLLMServer, script_body
from q3agent.types import Usage

SERVED = "tiny-qwen3"
TEMPLATE = Path(__file__).parents[1].parent / "shared" / "reference" / "qwen3_chat_template.jinja"
REPORT = (
    "Station {n} report: the river gauge read {n}.2 metres at dawn, sediment load was moderate, "
    "dredging continues on the northern channel and the flood stage is not expected this week. "
)


@tool
def read_station(n: int) -> str:
    """Read one gauge station's report.

    Args:
        n: Station number.
    """
    return REPORT.format(n=n) * 8  # ~300 tokens


def _call(n: int) -> str:
    return (
        f'<tool_call>\n{{"name": "read_station", "arguments": {{"n": {n}}}}}\n</tool_call>'
        "<|im_end|>"
    )


TOOL_TURNS = [_call(1), _call(2), _call(3), "All three stations are below flood stage.<|im_end|>"]
SESSION_TURNS = [
    f"<think>\nTask {k}: the user wants a short answer about station {k}.\n</think>\n\n"
    f"Station {k} is fine.<|im_end|>"
    for k in (1, 2, 3)
]
LONG_THINKING = "<think>\n" + "I should check the station reports one by one. " * 16
HIT_TURNS = [LONG_THINKING + "\n</think>\n\nAll stations are fine.<|im_end|>"]


class Fixed:
    """One mode for every step."""

    def __init__(self, thinking: bool, budget: int | None = None) -> None:
        preset = THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING
        self.mode = StepMode(thinking, budget, preset.with_(max_tokens=512), "bench")

    def decide(self, state: RunState) -> StepMode:
        """The fixed mode."""
        return self.mode


class Recording(RuntimeWrapper):
    """Keeps each request's usage (``None`` for a stream closed before its end, e.g. the
    first request of a thinking step cut at its budget)."""

    def __init__(self, inner: OpenAICompatibleRuntime) -> None:
        super().__init__(inner)
        self.usages: list[Usage | None] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        generation = await self.inner.generate(request)
        self.usages.append(generation.usage)
        return generation

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.usages.append(None)
        slot = len(self.usages) - 1
        async for chunk in self.inner.stream(request):
            if chunk.generation is not None:
                self.usages[slot] = chunk.generation.usage
            yield chunk


@dataclass
class Row:
    step: int
    prompt: int
    cached: int
    requests: int

    @property
    def prefilled(self) -> int:
        return self.prompt - self.cached


def _runtime(base_url: str, turns: list[str], *, engine_budget: bool = False) -> Recording:
    tok = Qwen3Tokenizer.offline()
    body = script_body([tok.encode_trusted(t) for t in turns])
    inner = OpenAICompatibleRuntime(base_url, SERVED, extra_body=body, engine_budget=engine_budget)
    return Recording(inner)


def _system() -> str:
    return f"You are a field assistant. Session {uuid.uuid4().hex[:12]}."


def _agent(runtime: Recording, *, thinking: bool, budget: int | None = None) -> Agent:
    """An agent with the station tool and its own system prompt (so its own cache prefix)."""
    return Agent(
        None,
        runtime=runtime,
        tools=[read_station],
        policy=Fixed(thinking, budget),
        system_prompt=_system(),
    )


async def q3agent_tool_task(base_url: str) -> list[Row]:
    agent = _agent(_runtime(base_url, TOOL_TURNS), thinking=False)
    result = await agent.arun("Read stations 1, 2 and 3, then tell me if any floods.")
    await agent.aclose()
    assert result.answer == TOOL_TURNS[-1].removesuffix("<|im_end|>"), result.detail
    return [_row(i, s.usage) for i, s in enumerate(result.steps, 1)]


async def q3agent_session(base_url: str, budget: int) -> list[Row]:
    agent = _agent(_runtime(base_url, SESSION_TURNS), thinking=True, budget=budget)
    session = agent.session()
    rows = []
    for k in (1, 2, 3):
        result = await session.arun(f"Task {k}: how is station {k}?")
        assert result.answer == f"Station {k} is fine.", result.detail
        rows += [_row(k, s.usage) for s in result.steps]
    await agent.aclose()
    return rows


async def q3agent_budget_hit(
    base_url: str, budget: int, *, engine_budget: bool = False
) -> tuple[Usage, list[Usage | None], int]:
    """One thinking step over its budget: its usage, per-request usage, the early-stop size.

    ``engine_budget``: the server's logits processor forces the early-stop text (one request);
    otherwise the step is cut and continued (two requests)."""
    from q3agent.qwen3.thinking import EARLY_STOP_TEXT

    runtime = _runtime(base_url, HIT_TURNS, engine_budget=engine_budget)
    agent = _agent(runtime, thinking=True, budget=budget)
    result = await agent.arun("How are the stations?")
    await agent.aclose()
    assert result.steps[0].hit_budget, result.detail
    early_stop = len(Qwen3Tokenizer.offline().encode_trusted(EARLY_STOP_TEXT))
    return result.steps[0].usage, runtime.usages, early_stop


def _row(step: int, usage: Usage) -> Row:
    return Row(step, usage.prompt_tokens, usage.cached_tokens, usage.requests)


class ChatClient:
    """A plain OpenAI chat client: resends the whole history each step, runs tool calls."""

    def __init__(self, base_url: str, turns: list[str], *, thinking: bool) -> None:
        tok = Qwen3Tokenizer.offline()
        self.url = f"{base_url.rstrip('/')}/v1/chat/completions"
        self.extra = script_body([tok.encode_trusted(t) for t in turns])
        self.thinking = thinking
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": _system()}]
        self.tools = [read_station.schema()]
        self.rows: list[Row] = []

    async def task(self, client: httpx.AsyncClient, text: str, label: int) -> str:
        self.messages.append({"role": "user", "content": text})
        while True:
            body = {
                "model": SERVED,
                "messages": self.messages,
                "tools": self.tools,
                "max_tokens": 512,
                "chat_template_kwargs": {"enable_thinking": self.thinking},
                **self.extra,
            }
            reply = (await client.post(self.url, json=body, timeout=300)).json()
            usage = reply["usage"]
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            step = label if label else len(self.rows) + 1
            self.rows.append(Row(step, usage["prompt_tokens"], cached, 1))
            message = reply["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            self.messages.append(
                {"role": "assistant", "content": message.get("content") or "", "tool_calls": calls}
                if calls
                else {"role": "assistant", "content": message.get("content") or ""}
            )
            if not calls:
                return str(message.get("content") or "")
            for call in calls:
                args = json.loads(call["function"]["arguments"])
                self.messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": read_station(**args)}
                )


async def chat_tool_task(base_url: str) -> list[Row]:
    chat = ChatClient(base_url, TOOL_TURNS, thinking=False)
    async with httpx.AsyncClient() as client:
        answer = await chat.task(client, "Read stations 1, 2 and 3, then tell me if any floods.", 0)
    assert answer == TOOL_TURNS[-1].removesuffix("<|im_end|>"), answer
    return chat.rows


async def chat_session(base_url: str) -> list[Row]:
    chat = ChatClient(base_url, SESSION_TURNS, thinking=True)
    async with httpx.AsyncClient() as client:
        for k in (1, 2, 3):
            answer = await chat.task(client, f"Task {k}: how is station {k}?", k)
            assert answer.strip() == f"Station {k} is fine.", answer
    return chat.rows


def _table(title: str, runs: dict[str, list[Row]]) -> None:
    print(f"\n{title}")
    print(f"{'client':<16}{'step':>5}{'prompt':>8}{'cached':>8}{'prefilled':>10}{'requests':>9}")
    totals = {}
    for name, rows in runs.items():
        for row in rows:
            print(
                f"{name:<16}{row.step:>5}{row.prompt:>8}{row.cached:>8}{row.prefilled:>10}"
                f"{row.requests:>9}"
            )
        total = Row(0, sum(r.prompt for r in rows), sum(r.cached for r in rows), 0)
        total.requests = sum(r.requests for r in rows)
        totals[name] = total
        print(
            f"{name + ' total':<16}{'':>5}{total.prompt:>8}{total.cached:>8}"
            f"{total.prefilled:>10}{total.requests:>9}"
        )
    ours, theirs = totals["q3agent ids"], totals["chat client"]
    print(
        f"prefilled tokens, q3agent / chat client: {ours.prefilled}/{theirs.prefilled} = "
        f"{ours.prefilled / max(1, theirs.prefilled):.2f}"
    )


async def bench(base_url: str, budget: int) -> None:
    _table(
        "4-step tool task, thinking off",
        {
            "q3agent ids": await q3agent_tool_task(base_url),
            "chat client": await chat_tool_task(base_url),
        },
    )
    session = await q3agent_session(base_url, budget)
    _table(
        "3-task session, thinking on",
        {"q3agent ids": session, "chat client": await chat_session(base_url)},
    )
    per_step = sum(r.requests for r in session) / len(session)
    print(f"\nrequests per thinking step within the budget: {per_step:.2f} (goal 1)")
    for in_engine in (False, True):
        await _budget_report(base_url, in_engine)


async def _budget_report(base_url: str, in_engine: bool) -> None:
    step, usages, early_stop = await q3agent_budget_hit(base_url, 96, engine_budget=in_engine)
    how = "in the engine" if in_engine else "abort-and-continue"
    re_prefilled = sum(u.prefilled_tokens for u in usages[1:] if u is not None)
    print(
        f"thinking step over a budget of 96, {how}: {step.requests} requests, "
        f"{re_prefilled} tokens re-prefilled after the cut"
    )
    for index, usage in enumerate(usages, 1):
        if usage is None:
            print(f"  request {index}: streamed, closed at the budget (no usage reported)")
            continue
        print(
            f"  request {index}: prompt {usage.prompt_tokens}, cached {usage.cached_tokens}, "
            f"prefilled {usage.prefilled_tokens}, completion {usage.completion_tokens}"
        )
    last = usages[-1]
    if len(usages) > 1 and last is not None:
        print(
            f"continuation prefill share: {last.prefilled_tokens}/{last.prompt_tokens} = "
            f"{last.prefilled_tokens / last.prompt_tokens:.3f} of its prompt; the early-stop "
            f"text is {early_stop} tokens, the rest is the first request's last partial "
            "32-token block (vLLM caches whole blocks)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running server started by testing_vllm")
    parser.add_argument("--moe", action="store_true", help="the tiny Qwen3-MoE")
    parser.add_argument("--port", type=int, default=18021)
    parser.add_argument("--budget", type=int, default=64, help="thinking budget of the session")
    args = parser.parse_args()
    if args.base_url:
        anyio.run(bench, args.base_url, args.budget)
        return
    with tempfile.TemporaryDirectory() as scratch:
        model = make_tiny_qwen3(
            Path(scratch) / "model",
            moe=args.moe,
            head_dim=VLLM_CPU_HEAD_DIM,
            max_position_embeddings=QWEN3_CONTEXT,
            chat_template=TEMPLATE,
        )
        print(f"starting vLLM on port {args.port} ({'MoE' if args.moe else 'dense'}) ...")
        with VLLMServer(model, port=args.port, served_model_name=SERVED) as server:
            anyio.run(bench, server.base_url, args.budget)


if __name__ == "__main__":
    main()
