"""Prompt, cached and prefilled tokens on a real CPU engine (vLLM or SGLang): q3agent ids vs a
chat client.

Two workloads on a tiny random Qwen3 whose replies are scripted inside the engine (vLLM: the
scripted-token logits processor of :mod:`q3agent.testing.vllm_server`; SGLang: the
``CustomLogitProcessor`` of :mod:`q3agent.testing.sglang_server`), so both clients get the
same replies and only how they build prompts differs:

* a 4-step tool task with thinking off (3 tool calls, each returning ~300 tokens, then the
  answer);
* a 3-task session with thinking on (a budget the model stays within).

Clients: q3agent (token-id prompts, append-only) and a plain chat-API client that resends the
whole history to ``/v1/chat/completions`` each step (the server renders its chat template,
which re-renders earlier turns). Per step it prints prompt / cached / prefilled tokens and
requests, then the totals and the prefilled ratio. It also measures requests per thinking step
within the budget (goal: 1) and, for a step that hits its budget, both ways of ending its
reasoning: abort-and-continue (the continuation re-prefills the early-stop text plus whatever
the engine did not keep of the cut request) and the budget inside the engine
(``engine_budget=True``: one request, nothing re-prefilled). Last, q3agent's own CPU and wall
time per step on a warm tool task: the client side of each path. Each run gets its own system
prompt, so no run reuses another's cache.

Engines (``--engine``):

* ``vllm`` (default): vLLM from the engine venv (``.ci/engines.sh``) on 18021; q3agent runs
  ``OpenAICompatibleRuntime`` (``/v1/completions`` with token ids).
* ``sglang``: SGLang's CPU server from the SGLang venv (``.ci/sglang.sh``; started as the
  SGLang tier does, :class:`~q3agent.testing.sglang_server.SGLangServer`) on 18061; q3agent
  runs ``RemoteSGLangRuntime`` (``/generate`` with ``input_ids``), the chat client SGLang's
  OpenAI server.
* ``sglang-embedded``: ``SGLangRuntime`` on an ``sglang.Engine`` inside the benchmark's
  process (the script re-runs itself under the SGLang venv's Python; engine port 18065). No
  HTTP server, so no chat client; its tokenizer manager runs in this process (counted in the
  client CPU: a few milliseconds a step), its scheduler in child processes.

    python benchmarks/engine_bench.py                       # starts vLLM (engine venv) on 18021
    python benchmarks/engine_bench.py --engine sglang       # starts SGLang (SGLang venv) on 18061
    python benchmarks/engine_bench.py --engine sglang-embedded
    python benchmarks/engine_bench.py --moe --out results.json
    python benchmarks/engine_bench.py --base-url http://127.0.0.1:18001   # a running vLLM
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from q3agent import Agent, tool
from q3agent.policy.base import RunState, StepMode
from q3agent.qwen3.models import NON_THINKING_SAMPLING, THINKING_SAMPLING
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    Runtime,
    RuntimeWrapper,
)
from q3agent.serving.openai_runtime import OpenAICompatibleRuntime
from q3agent.serving.sglang_runtime import RemoteSGLangRuntime, SGLangRequestOptions, SGLangRuntime
from q3agent.testing.models import QWEN3_CONTEXT, VLLM_CPU_HEAD_DIM, make_tiny_qwen3
from q3agent.testing.sglang_server import (
    ENGINE_KWARGS,
    SGLangServer,
    engine_env,
    kernel_calls,
    script_params,
    scripted_processor_str,
    sglang_python,
)
from q3agent.testing.vllm_server import VLLMServer, script_body
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


Script = list[list[int]]
"""One token-id list per assistant turn (what the scripted processors force)."""


@dataclass
class Target:
    """The engine under test: how q3agent reaches it and how a chat client does (if it can)."""

    engine: str
    version: str
    runtime: Callable[[Script, bool], Runtime]
    """q3agent's runtime following a script, with or without the in-engine budget."""
    chat_url: str | None = None
    chat_body: Callable[[Script], dict[str, Any]] | None = None
    """What a chat request adds so the server follows a script."""
    shared_engine: bool = False
    """The runtimes borrow one engine: closing an agent leaves it running."""


def vllm_target(base_url: str) -> Target:
    """vLLM's OpenAI server (``VLLMServer``): completions with token ids; chat beside it."""

    def runtime(script: Script, engine_budget: bool) -> Runtime:
        return OpenAICompatibleRuntime(
            base_url, SERVED, extra_body=script_body(script), engine_budget=engine_budget
        )

    return Target("vllm", _version(f"{base_url}/version"), runtime, base_url, script_body)


def _sglang_script(script: Script) -> dict[str, Any]:
    return {
        "custom_logit_processor": scripted_processor_str(),
        "custom_params": script_params(script),
    }


def sglang_target(base_url: str) -> Target:
    """SGLang's server: native ``/generate`` with ``input_ids``; its OpenAI chat beside it."""

    def runtime(script: Script, engine_budget: bool) -> Runtime:
        return RemoteSGLangRuntime(
            base_url,
            model_name=SERVED,
            engine_budget=engine_budget,
            request_options=SGLangRequestOptions(**_sglang_script(script)),
        )

    version = _version(f"{base_url}/get_server_info")
    return Target("sglang", version, runtime, base_url, _sglang_script)


def embedded_target(owner: SGLangRuntime, model: str) -> Target:
    """``SGLangRuntime``s that share ``owner``'s running in-process engine."""
    import sglang

    engine = owner.engine

    def runtime(script: Script, engine_budget: bool) -> Runtime:
        return SGLangRuntime(
            model,
            tp_size=1,
            engine_factory=lambda **_: engine,
            engine_budget=engine_budget,
            request_options=SGLangRequestOptions(**_sglang_script(script)),
        )

    return Target("sglang-embedded", str(sglang.__version__), runtime, shared_engine=True)


def _version(url: str) -> str:
    try:
        return str(httpx.get(url, timeout=30).json().get("version", "?"))
    except (httpx.HTTPError, ValueError):
        return "?"


class Recording(RuntimeWrapper):
    """Keeps each request's prompt length and usage (``None`` for a stream closed before its
    end, e.g. the first request of a thinking step cut at its budget). With ``keep_open`` its
    ``aclose`` leaves the inner runtime (a shared embedded engine) running."""

    def __init__(self, inner: Runtime, *, keep_open: bool = False) -> None:
        super().__init__(inner)
        self.keep_open = keep_open
        self.prompts: list[int] = []
        self.usages: list[Usage | None] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        self.prompts.append(len(request.prompt_ids))
        generation = await self.inner.generate(request)
        self.usages.append(generation.usage)
        return generation

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.prompts.append(len(request.prompt_ids))
        self.usages.append(None)
        slot = len(self.usages) - 1
        async for chunk in self.inner.stream(request):
            if chunk.generation is not None:
                self.usages[slot] = chunk.generation.usage
            yield chunk

    async def aclose(self) -> None:
        if not self.keep_open:
            await self.inner.aclose()


@dataclass
class Row:
    step: int
    prompt: int
    cached: int
    requests: int

    @property
    def prefilled(self) -> int:
        return self.prompt - self.cached


def _encode(turns: Sequence[str]) -> Script:
    tok = Qwen3Tokenizer.offline()
    return [tok.encode_trusted(t) for t in turns]


def _runtime(target: Target, turns: list[str], *, engine_budget: bool = False) -> Recording:
    inner = target.runtime(_encode(turns), engine_budget)
    return Recording(inner, keep_open=target.shared_engine)


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


TOOL_TASK = "Read stations 1, 2 and 3, then tell me if any floods."


async def q3agent_tool_task(target: Target) -> list[Row]:
    agent = _agent(_runtime(target, TOOL_TURNS), thinking=False)
    result = await agent.arun(TOOL_TASK)
    await agent.aclose()
    assert result.answer == TOOL_TURNS[-1].removesuffix("<|im_end|>"), result.detail
    return [_row(i, s.usage) for i, s in enumerate(result.steps, 1)]


async def q3agent_session(target: Target, budget: int) -> list[Row]:
    agent = _agent(_runtime(target, SESSION_TURNS), thinking=True, budget=budget)
    session = agent.session()
    rows = []
    for k in (1, 2, 3):
        result = await session.arun(f"Task {k}: how is station {k}?")
        assert result.answer == f"Station {k} is fine.", result.detail
        rows += [_row(k, s.usage) for s in result.steps]
    await agent.aclose()
    return rows


@dataclass
class BudgetHit:
    """One thinking step over its budget, as each of its requests saw it."""

    step: Usage
    prompts: list[int]
    usages: list[Usage | None]
    early_stop: int
    """Tokens of the report's early-stop text."""

    @property
    def re_prefilled(self) -> int:
        """Prompt tokens computed again after the first request (0 for one request)."""
        return sum(u.prefilled_tokens for u in self.usages[1:] if u is not None)


async def q3agent_budget_hit(target: Target, budget: int, *, engine_budget: bool) -> BudgetHit:
    """One thinking step over its budget. ``engine_budget``: the engine's processor forces the
    early-stop text (one request); otherwise the step is cut and continued (two requests)."""
    from q3agent.qwen3.thinking import EARLY_STOP_TEXT

    runtime = _runtime(target, HIT_TURNS, engine_budget=engine_budget)
    agent = _agent(runtime, thinking=True, budget=budget)
    result = await agent.arun("How are the stations?")
    await agent.aclose()
    assert result.steps[0].hit_budget, result.detail
    early_stop = len(Qwen3Tokenizer.offline().encode_trusted(EARLY_STOP_TEXT))
    return BudgetHit(result.steps[0].usage, runtime.prompts, runtime.usages, early_stop)


async def client_overhead(target: Target) -> tuple[float, float]:
    """q3agent's process CPU and wall milliseconds per step on the tool task, after one warm-up
    run (tokenizer, template and connections ready); the engine's own work runs elsewhere
    except, embedded, its in-process tokenizer manager."""
    measured = (0.0, 0.0)
    for _ in range(2):
        agent = _agent(_runtime(target, TOOL_TURNS), thinking=False)
        cpu, wall = time.process_time(), time.perf_counter()
        result = await agent.arun(TOOL_TASK)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await agent.aclose()
        assert result.status == "answer", result.detail
        steps = len(result.steps)
        measured = (1000 * cpu / steps, 1000 * wall / steps)
    return measured


def _row(step: int, usage: Usage) -> Row:
    return Row(step, usage.prompt_tokens, usage.cached_tokens, usage.requests)


class ChatClient:
    """A plain OpenAI chat client: resends the whole history each step, runs tool calls."""

    def __init__(self, target: Target, turns: list[str], *, thinking: bool) -> None:
        assert target.chat_url is not None and target.chat_body is not None
        self.url = f"{target.chat_url.rstrip('/')}/v1/chat/completions"
        self.extra = target.chat_body(_encode(turns))
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


async def chat_tool_task(target: Target) -> list[Row]:
    chat = ChatClient(target, TOOL_TURNS, thinking=False)
    async with httpx.AsyncClient() as client:
        answer = await chat.task(client, TOOL_TASK, 0)
    assert answer.strip() == TOOL_TURNS[-1].removesuffix("<|im_end|>"), answer
    return chat.rows


async def chat_session(target: Target) -> list[Row]:
    chat = ChatClient(target, SESSION_TURNS, thinking=True)
    async with httpx.AsyncClient() as client:
        for k in (1, 2, 3):
            answer = await chat.task(client, f"Task {k}: how is station {k}?", k)
            assert answer.strip() == f"Station {k} is fine.", answer
    return chat.rows


def _total(rows: list[Row]) -> Row:
    return Row(
        0, sum(r.prompt for r in rows), sum(r.cached for r in rows), sum(r.requests for r in rows)
    )


def _table(title: str, runs: dict[str, list[Row]], summary: dict[str, Any], key: str) -> None:
    print(f"\n{title}")
    print(f"{'client':<16}{'step':>5}{'prompt':>8}{'cached':>8}{'prefilled':>10}{'requests':>9}")
    for name, rows in runs.items():
        for row in rows:
            print(
                f"{name:<16}{row.step:>5}{row.prompt:>8}{row.cached:>8}{row.prefilled:>10}"
                f"{row.requests:>9}"
            )
        total = _total(rows)
        print(
            f"{name + ' total':<16}{'':>5}{total.prompt:>8}{total.cached:>8}"
            f"{total.prefilled:>10}{total.requests:>9}"
        )
        client = "q3agent" if name == "q3agent ids" else "chat"
        summary[f"{key}_{client}_prompt"] = total.prompt
        summary[f"{key}_{client}_prefilled"] = total.prefilled
        summary[f"{key}_{client}_cached_share"] = round(total.cached / max(1, total.prompt), 3)
    if "chat client" not in runs:
        print("(no chat client: an embedded engine has no OpenAI server)")
        return
    ours, theirs = _total(runs["q3agent ids"]), _total(runs["chat client"])
    ratio = ours.prefilled / max(1, theirs.prefilled)
    summary[f"{key}_ratio"] = round(ratio, 2)
    print(
        f"prefilled tokens, q3agent / chat client: {ours.prefilled}/{theirs.prefilled} = "
        f"{ratio:.2f}"
    )


async def bench(target: Target, budget: int) -> dict[str, Any]:
    """Every workload on ``target``; prints the tables and returns the summary numbers."""
    summary: dict[str, Any] = {"engine": target.engine, "version": target.version}
    print(f"engine: {target.engine} {target.version}")
    runs = {"q3agent ids": await q3agent_tool_task(target)}
    if target.chat_url is not None:
        runs["chat client"] = await chat_tool_task(target)
    _table("4-step tool task, thinking off", runs, summary, "tool")
    session = await q3agent_session(target, budget)
    runs = {"q3agent ids": session}
    if target.chat_url is not None:
        runs["chat client"] = await chat_session(target)
    _table("3-task session, thinking on", runs, summary, "session")
    per_step = sum(r.requests for r in session) / len(session)
    summary["requests_per_thinking_step"] = round(per_step, 2)
    print(f"\nrequests per thinking step within the budget: {per_step:.2f} (goal 1)")
    for in_engine in (False, True):
        hit = await q3agent_budget_hit(target, 96, engine_budget=in_engine)
        how = "engine" if in_engine else "abort"
        summary[f"budget_hit_{how}_requests"] = hit.step.requests
        summary[f"budget_hit_{how}_re_prefilled"] = hit.re_prefilled
        _budget_report(hit, in_engine)
    cpu, wall = await client_overhead(target)
    summary["client_cpu_ms_per_step"] = round(cpu, 1)
    summary["wall_ms_per_step"] = round(wall, 1)
    print(
        f"\nq3agent per step on a warm 4-step tool task: {cpu:.1f} ms process CPU, "
        f"{wall:.1f} ms wall"
    )
    return summary


def _budget_report(hit: BudgetHit, in_engine: bool) -> None:
    how = "in the engine" if in_engine else "abort-and-continue"
    print(
        f"thinking step over a budget of 96, {how}: {hit.step.requests} requests, "
        f"{hit.re_prefilled} tokens re-prefilled after the cut"
    )
    for index, usage in enumerate(hit.usages, 1):
        if usage is None:
            print(f"  request {index}: streamed, closed at the budget (no usage reported)")
            continue
        print(
            f"  request {index}: prompt {usage.prompt_tokens}, cached {usage.cached_tokens}, "
            f"prefilled {usage.prefilled_tokens}, completion {usage.completion_tokens}"
        )
    last = hit.usages[-1]
    if len(hit.usages) > 1 and last is not None:
        cut = hit.prompts[-1] - hit.prompts[0] - hit.early_stop
        kept = cut - (last.prefilled_tokens - hit.early_stop)
        print(
            f"continuation prefill share: {last.prefilled_tokens}/{last.prompt_tokens} = "
            f"{last.prefilled_tokens / last.prompt_tokens:.3f} of its prompt: the "
            f"{hit.early_stop}-token early-stop text and {cut - kept} of the {cut} tokens of "
            f"cut reasoning (the engine's prefix cache kept {kept} of them)"
        )


SGLANG_SERVER_FLAGS = (
    "--served-model-name",
    SERVED,
    "--enable-cache-report",
    "--reasoning-parser",
    "qwen3",
    "--tool-call-parser",
    "qwen25",
)
"""Beside the tier's CPU flags: cached tokens in the OpenAI usage, Qwen3's parsers for chat."""


def _model(scratch: str, moe: bool) -> Path:
    return make_tiny_qwen3(
        Path(scratch) / "model",
        moe=moe,
        head_dim=VLLM_CPU_HEAD_DIM,
        max_position_embeddings=QWEN3_CONTEXT,
        chat_template=TEMPLATE,
    )


def _finish(summary: dict[str, Any], out: str | None) -> None:
    print("\nsummary: " + json.dumps(summary))
    if out:
        Path(out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def run_embedded(model: str, port: int, budget: int, out: str | None) -> None:
    """Inside the SGLang venv: one in-process engine, every workload on it."""
    owner = SGLangRuntime(model, tp_size=1, port=port, **ENGINE_KWARGS)
    started = time.perf_counter()
    owner.start()  # from the main thread: SGLang installs signal handlers while starting
    print(f"embedded sglang.Engine ready after {time.perf_counter() - started:.0f} s")
    try:
        summary = anyio.run(bench, embedded_target(owner, model), budget)
    finally:
        anyio.run(owner.aclose)
    _finish(summary, out)


def embedded(args: argparse.Namespace, model: Path, scratch: str) -> None:
    """Re-run this script under the SGLang venv's Python with the engine's environment."""
    calls = Path(scratch) / "sgl_kernel_calls.txt"
    command = [str(sglang_python()), __file__, "--inside-sglang", str(model)]
    command += ["--port", str(args.port), "--budget", str(args.budget)]
    if args.out:
        command += ["--out", os.path.abspath(args.out)]
    env = engine_env(Path(scratch) / "work", calls)
    done = subprocess.run(command, env=env, cwd=scratch, check=False)
    if kernel_calls(calls):
        sys.exit(f"SGLang called shimmed sgl_kernel functions: {sorted(set(kernel_calls(calls)))}")
    if done.returncode:
        sys.exit(done.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("vllm", "sglang", "sglang-embedded"), default="vllm")
    parser.add_argument(
        "--base-url",
        help="a running server (vLLM by q3agent.testing.vllm_server, SGLang by "
        "q3agent.testing.sglang_server with the flags of SGLANG_SERVER_FLAGS)",
    )
    parser.add_argument("--moe", action="store_true", help="the tiny Qwen3-MoE")
    parser.add_argument(
        "--port",
        type=int,
        help="server port (18021 vLLM, 18061 SGLang, 18065 the embedded engine's own)",
    )
    parser.add_argument("--budget", type=int, default=64, help="thinking budget of the session")
    parser.add_argument("--out", help="also write the summary numbers to this JSON file")
    parser.add_argument("--inside-sglang", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside_sglang:
        run_embedded(args.inside_sglang, args.port, args.budget, args.out)
        return
    make_target = sglang_target if args.engine == "sglang" else vllm_target
    if args.base_url:
        _finish(anyio.run(bench, make_target(args.base_url.rstrip("/")), args.budget), args.out)
        return
    args.port = args.port or {"vllm": 18021, "sglang": 18061}.get(args.engine, 18065)
    with tempfile.TemporaryDirectory() as scratch:
        model = _model(scratch, args.moe)
        kind = "MoE" if args.moe else "dense"
        if args.engine == "sglang-embedded":
            embedded(args, model, scratch)
            return
        print(f"starting {args.engine} on port {args.port} ({kind}) ...", flush=True)
        server: VLLMServer | SGLangServer
        if args.engine == "sglang":
            server = SGLangServer(model, port=args.port, extra_args=SGLANG_SERVER_FLAGS)
        else:
            server = VLLMServer(model, port=args.port, served_model_name=SERVED)
        started = time.perf_counter()
        server.start()
        try:
            server.wait_ready(timeout=900)
            print(f"ready after {time.perf_counter() - started:.0f} s", flush=True)
            summary = anyio.run(bench, make_target(server.base_url), args.budget)
        finally:
            server.stop()
        if isinstance(server, SGLangServer):
            calls = server.kernel_calls()
            server.cleanup()  # its work folder, the kernel-call record read
            if calls:
                sys.exit(f"SGLang called shimmed sgl_kernel functions: {sorted(set(calls))}")
        _finish(summary, args.out)


if __name__ == "__main__":
    main()
