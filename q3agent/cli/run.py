"""``q3agent run``: run an agent on one task and stream its steps."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


class LoadError(ValueError):
    """A ``MODULE:ATTRIBUTE`` that cannot be imported; the message says which part failed."""


def load_object(spec: str, *, flag: str = "--tools") -> Any:
    """Import ``module:attribute``, looking in the current directory too (as ``python -m`` does).

    The ``q3agent`` console script does not put the current directory on ``sys.path``, so a
    user's ``mytools.py`` next to them would not import without this.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise LoadError(f"{flag} takes MODULE:ATTRIBUTE (e.g. mytools:multiply), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0] and exc.name != module_name:
            raise
        raise LoadError(
            f"{flag} {spec}: no module {module_name!r} in {cwd} or on the Python path; "
            f"run from the folder holding {module_name.replace('.', '/')}.py"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LoadError(f"{flag} {spec}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_script(path: str | Path) -> list[str]:
    """Completions for ``--script`` (see :func:`q3agent.serving.testing.load_completions`)."""
    from q3agent.serving.testing import ScriptFileError, load_completions

    try:
        return load_completions(path)
    except ScriptFileError as exc:
        raise LoadError(str(exc)) from None


def run_command(args: argparse.Namespace) -> int:
    """``q3agent run``: 0 when the agent answered, 1 when the run ended otherwise."""
    from q3agent.agent import Agent
    from q3agent.cli.options import resolve_model_choice
    from q3agent.events import (
        ContentDelta,
        FinalResult,
        ReasoningDelta,
        StepStart,
        ToolCallEvent,
        ToolResultEvent,
    )
    from q3agent.policy.base import Policy
    from q3agent.policy.builtin import AlwaysThink, NeverThink, PlanAct
    from q3agent.result import RunResult
    from q3agent.serving.base import Runtime
    from q3agent.serving.testing import ScriptedRuntime

    # With --json, stdout carries the JSON result alone; the steps go to stderr.
    console = Console(highlight=False, stderr=bool(args.json))
    choice = resolve_model_choice(args)
    runtime: Runtime = (
        ScriptedRuntime(load_script(args.script)) if args.script else choice.build_runtime()
    )
    tools: list[Any] = []
    for spec in args.tools or ():
        loaded = load_object(spec)
        tools.extend(loaded if isinstance(loaded, list | tuple) else [loaded])
    servers: list[Any] = []
    if args.mcp_config:
        from q3agent.tools.mcp import ask_on_terminal, load_mcp_config

        servers = list(load_mcp_config(args.mcp_config))
        for server in servers:  # servers may ask the user for input on the terminal
            if server.elicitation is None and sys.stdin.isatty():
                server.elicitation = ask_on_terminal
    policy: Policy = (
        AlwaysThink(args.budget)
        if args.thinking == "on"
        else NeverThink()
        if args.thinking == "off"
        else PlanAct()
    )
    agent = Agent(
        choice.model,
        runtime=runtime,
        capability=choice.capability,
        tools=tools,
        mcp_servers=servers,
        policy=policy,
        system_prompt=args.system,
        max_steps=args.max_steps,
    )

    async def main() -> RunResult:
        final: RunResult | None = None
        async for event in agent.stream(args.task):
            if isinstance(event, StepStart):
                mode = "thinking" if event.mode.thinking else "direct"
                console.print(
                    f"[bold blue]step {event.step}[/] [dim]({mode}: {escape(event.mode.reason)})[/]"
                )
            elif isinstance(event, ReasoningDelta):
                console.print(escape(event.text), style="dim italic", end="")
            elif isinstance(event, ContentDelta):
                console.print(escape(event.text), end="")
            elif isinstance(event, ToolCallEvent):
                call = event.call
                shown = getattr(call, "arguments", None) or getattr(call, "raw", "")
                console.print(f"\n[yellow]→ {escape(str(call.name))}[/] {escape(str(shown))}")
            elif isinstance(event, ToolResultEvent):
                style = "red" if event.result.is_error else "green"
                console.print(f"[{style}]← {escape(event.result.content[:500])}[/]")
            elif isinstance(event, FinalResult):
                final = event.result
        assert final is not None
        await agent.aclose()
        return final

    import anyio

    result = anyio.run(main)
    u = result.usage
    console.print(
        f"\n[bold]{result.status}[/] · {len(result.steps)} steps · {u.requests} requests · "
        f"prompt {u.prompt_tokens} (cached {u.cached_tokens}) · completion "
        f"{u.completion_tokens} (reasoning {u.reasoning_tokens})"
        + (f"\n[yellow]{escape(result.detail)}[/]" if result.detail and result.ok else "")
    )
    if not result.ok:  # why the run ended without an answer: one line on stderr
        print(f"error: the run ended with status {result.status}: {result.detail}", file=sys.stderr)
    if args.trace:
        result.write_trace(args.trace)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    return 0 if result.ok else 1
