"""One framework running one workload of benchmarks/frameworks_bench.py, in its own process.

    <venv>/bin/python benchmarks/frameworks_clients.py FRAMEWORK WORKLOAD BASE_URL OUT.json

Run with the framework's own venv (q3agent: the project's; peers: benchmarks/peers_setup.sh).
Each framework talks to the OpenAI-compatible server its documented way, with Qwen3's
recommended sampling for the mode (the same numbers q3agent sends) and thinking switched with
``chat_template_kwargs.enable_thinking`` (Qwen's documented vLLM/SGLang switch) where the
framework has no switch of its own. It writes the calls its tools received, its answers, its
process CPU after start-up (imports and set-up) and at the end, and the workload's wall time.
"""

from __future__ import annotations

import time

_T0_WALL = time.perf_counter()
_T0_CPU = time.process_time()

import asyncio  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from frameworks_workloads import (  # noqa: E402
    PANEL_TASKS,
    PARAMS,
    TOOLS,
    WORKLOADS,
    Task,
)

MODEL = "Qwen/Qwen3-8B"
"""The served model name: each framework picks its Qwen3 profile from it."""
MAX_STEPS = 8

CALLS: list[list[tuple[str, dict[str, Any]]]] = []
"""Per task, the calls the tools received (in order)."""
_calls_lock = threading.Lock()
TASK_ENDS: list[tuple[float, float]] = []
"""(time.monotonic(), process CPU) at the end of each task, for CPU per step after task 1."""


def task_done() -> None:
    TASK_ENDS.append((time.monotonic(), time.process_time() - _T0_CPU))


def sampling(thinking: bool) -> dict[str, Any]:
    """Qwen3's recommended sampling for the mode (as in q3agent.qwen3.models)."""
    if thinking:
        return {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
    return {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0, "presence_penalty": 1.5}


def recorded(name: str) -> Callable[..., str]:
    """The workload's tool ``name``, recording each call into the current task's list."""
    fn = TOOLS[name]

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> str:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        with _calls_lock:
            CALLS[-1].append((name, dict(bound.arguments)))
        return str(fn(*args, **kwargs))

    return wrapped


# ---------------------------------------------------------------------------- frameworks


class Q3Agent:
    """q3agent: its OpenAI-compatible runtime (completions with token ids)."""

    def __init__(self, base_url: str) -> None:
        from q3agent import Agent, tool
        from q3agent.policy.builtin import AlwaysThink, NeverThink
        from q3agent.serving.openai_runtime import OpenAICompatibleRuntime

        self.Agent, self.AlwaysThink, self.NeverThink = Agent, AlwaysThink, NeverThink
        self.runtime = OpenAICompatibleRuntime(base_url.removesuffix("/v1"), MODEL)
        self.tools = [tool(recorded(n)) for n in TOOLS]
        self.sessions: dict[Any, Any] = {}

    def agent(self, thinking: bool, budget: int | None) -> Any:
        policy = self.AlwaysThink(budget=budget) if thinking else self.NeverThink()
        return self.Agent(
            "Qwen3-8B", runtime=self.runtime, tools=self.tools, policy=policy, max_steps=MAX_STEPS
        )

    async def session(self, tasks: list[Task], budget: int | None) -> list[str]:
        agent = self.agent(tasks[0].thinking, budget)
        session = agent.session()
        answers = []
        for task in tasks:
            CALLS.append([])
            answers.append((await session.arun(task.text)).answer or "")
            task_done()
        return answers


class PydanticAI:
    """pydantic-ai: OpenAIChatModel with its vLLM provider."""

    def __init__(self, base_url: str) -> None:
        from pydantic_ai import Agent
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.vllm import VLLMProvider

        self.model = OpenAIChatModel(MODEL, provider=VLLMProvider(base_url=base_url, api_key="x"))
        self.agent = Agent(self.model, tools=[recorded(n) for n in TOOLS])

    async def session(self, tasks: list[Task], budget: int | None) -> list[str]:
        history = None
        answers = []
        for task in tasks:
            CALLS.append([])
            s = sampling(task.thinking)
            settings: dict[str, Any] = {
                "temperature": s.pop("temperature"),
                "top_p": s.pop("top_p"),
                "extra_body": {**s, "chat_template_kwargs": {"enable_thinking": task.thinking}},
            }
            if "presence_penalty" in s:
                settings["presence_penalty"] = settings["extra_body"].pop("presence_penalty")
            result = await self.agent.run(
                task.text,
                message_history=history,
                model_settings=settings,  # type: ignore[arg-type]
            )
            history = result.all_messages()
            answers.append(str(result.output))
            task_done()
        return answers


class OpenAIAgents:
    """openai-agents: OpenAIChatCompletionsModel on an AsyncOpenAI client for the server."""

    def __init__(self, base_url: str) -> None:
        from agents import (
            Agent,
            ModelSettings,
            OpenAIChatCompletionsModel,
            Runner,
            function_tool,
            set_tracing_disabled,
        )
        from openai import AsyncOpenAI

        set_tracing_disabled(True)
        self.Agent, self.ModelSettings, self.Runner = Agent, ModelSettings, Runner
        client = AsyncOpenAI(base_url=base_url, api_key="x")
        self.model = OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
        self.tools = [function_tool(recorded(n)) for n in TOOLS]

    async def session(self, tasks: list[Task], budget: int | None) -> list[str]:
        items: list[Any] = []
        answers = []
        for task in tasks:
            CALLS.append([])
            s = sampling(task.thinking)
            settings = self.ModelSettings(
                temperature=s.pop("temperature"),
                top_p=s.pop("top_p"),
                presence_penalty=s.pop("presence_penalty", None),
                extra_body={**s, "chat_template_kwargs": {"enable_thinking": task.thinking}},
            )
            agent = self.Agent(
                name="bench", model=self.model, tools=self.tools, model_settings=settings
            )
            items = [*items, {"role": "user", "content": task.text}]
            result = await self.Runner.run(agent, items, max_turns=MAX_STEPS)
            items = result.to_input_list()
            answers.append(str(result.final_output))
            task_done()
        return answers


class QwenAgent:
    """Qwen-Agent: Assistant with its OpenAI-compatible model config (nous tool prompt)."""

    def __init__(self, base_url: str) -> None:
        from qwen_agent.agents import Assistant
        from qwen_agent.tools.base import BaseTool

        self.Assistant, self.base_url = Assistant, base_url
        self.tools = []
        for name in TOOLS:
            fn = recorded(name)
            cls = type(
                f"Tool_{name}",
                (BaseTool,),
                {
                    "name": name,
                    "description": (TOOLS[name].__doc__ or "").strip().splitlines()[0],
                    "parameters": PARAMS[name],
                    "call": (
                        lambda f: (
                            lambda self, params, **kw: f(
                                **(json.loads(params) if isinstance(params, str) else params)
                            )
                        )
                    )(fn),
                },
            )
            self.tools.append(cls())

    def _run(self, tasks: list[Task], budget: int | None) -> list[str]:
        messages: list[dict[str, Any]] = []
        answers = []
        for task in tasks:
            CALLS.append([])
            s = sampling(task.thinking)
            cfg = {
                "model": MODEL,
                "model_server": self.base_url,
                "api_key": "x",
                "generate_cfg": {
                    "temperature": s.pop("temperature"),
                    "top_p": s.pop("top_p"),
                    **(
                        {"presence_penalty": s.pop("presence_penalty")}
                        if "presence_penalty" in s
                        else {}
                    ),
                    "extra_body": {**s, "chat_template_kwargs": {"enable_thinking": task.thinking}},
                },
            }
            bot = self.Assistant(llm=cfg, function_list=self.tools)
            messages.append({"role": "user", "content": task.text})
            responses: list[dict[str, Any]] = []
            for responses in bot.run(messages=messages):  # noqa: B007 (the last is the result)
                pass
            messages.extend(responses)
            answers.append(str(responses[-1].get("content", "")) if responses else "")
            task_done()
        return answers

    async def session(self, tasks: list[Task], budget: int | None) -> list[str]:
        return await asyncio.to_thread(self._run, tasks, budget)


class Smolagents:
    """smolagents: ToolCallingAgent with OpenAIServerModel."""

    def __init__(self, base_url: str) -> None:
        from smolagents import OpenAIServerModel, ToolCallingAgent, tool

        self.Model, self.Agent, self.base_url = OpenAIServerModel, ToolCallingAgent, base_url
        self.tools = [tool(recorded(n)) for n in TOOLS]

    def _run(self, tasks: list[Task], budget: int | None) -> list[str]:
        agent = None
        answers = []
        for task in tasks:
            CALLS.append([])
            s = sampling(task.thinking)
            model = self.Model(
                model_id=MODEL,
                api_base=self.base_url,
                api_key="x",
                temperature=s.pop("temperature"),
                top_p=s.pop("top_p"),
                **(
                    {"presence_penalty": s.pop("presence_penalty")}
                    if "presence_penalty" in s
                    else {}
                ),
                extra_body={**s, "chat_template_kwargs": {"enable_thinking": task.thinking}},
            )
            if agent is None:
                agent = self.Agent(
                    tools=self.tools, model=model, max_steps=MAX_STEPS, verbosity_level=0
                )
            else:
                agent.model = model
            answers.append(str(agent.run(task.text, reset=len(answers) == 0)))
            task_done()
        return answers

    async def session(self, tasks: list[Task], budget: int | None) -> list[str]:
        return await asyncio.to_thread(self._run, tasks, budget)


FRAMEWORKS: dict[str, Any] = {
    "q3agent": Q3Agent,
    "pydantic-ai": PydanticAI,
    "openai-agents": OpenAIAgents,
    "qwen-agent": QwenAgent,
    "smolagents": Smolagents,
}


def _versions(framework: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = {
        "q3agent": ["q3agent"],
        "pydantic-ai": ["pydantic-ai-slim", "openai"],
        "openai-agents": ["openai-agents", "openai"],
        "qwen-agent": ["qwen-agent", "openai"],
        "smolagents": ["smolagents", "openai"],
    }[framework]
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "?"
    return out


async def _main(framework: str, workload: str, base_url: str) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    # sync frameworks run their sessions in threads: room for all of (d)'s agents at once
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32))
    client = FRAMEWORKS[framework](base_url)
    ready_cpu, ready_wall = time.process_time() - _T0_CPU, time.perf_counter() - _T0_WALL
    out: dict[str, Any] = {"startup_cpu": ready_cpu, "startup_wall": ready_wall}
    start = time.perf_counter()
    if workload == "e":
        results = []
        for task in PANEL_TASKS:
            try:
                answers = await client.session([task], None)
                results.append({"answers": answers, "error": ""})
            except Exception as exc:  # a peer's failure is data: keep its reason
                results.append({"answers": [], "error": f"{type(exc).__name__}: {exc}"[:300]})
                task_done()
                if len(CALLS) < len(results):
                    CALLS.append([])
        out["panel"] = results
    else:
        w = WORKLOADS[workload]
        tasks = list(w.tasks)
        if w.concurrent > 1:
            runs = await asyncio.gather(
                *(client.session(tasks, w.budget) for _ in range(w.concurrent)),
                return_exceptions=True,
            )
            out["answers"] = [r if isinstance(r, list) else [] for r in runs]
            errors = [f"{type(r).__name__}: {r}" for r in runs if isinstance(r, BaseException)]
            out["error"] = errors[0][:300] if errors else ""
        else:
            out["answers"] = await client.session(tasks, w.budget)
            out["error"] = ""
    out["wall"] = time.perf_counter() - start
    out["calls"] = CALLS
    out["task_ends"] = TASK_ENDS
    out["cpu"] = time.process_time() - _T0_CPU
    out["versions"] = _versions(framework)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--warm-up"]:
        # untimed: import the framework and build its client (no request), so that no
        # framework's first measured run pays for a cold file cache
        FRAMEWORKS[argv[1]]("http://127.0.0.1:9/v1")
        return 0
    framework, workload, base_url, path = argv
    try:
        out = asyncio.run(_main(framework, workload, base_url))
    except Exception as exc:
        out = {
            "error": f"{type(exc).__name__}: {exc}"[:400],
            "traceback": traceback.format_exc()[-2000:],
            "calls": CALLS,
            "cpu": time.process_time() - _T0_CPU,
        }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(out, fh, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
