"""``q3agent run``: run an agent on one task and stream its steps."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


def _load_object(spec: str) -> Any:
    """Import ``module:attribute`` (for ``--tools`` and ``--agent``)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"expected MODULE:ATTRIBUTE, got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_script(path: str | Path) -> list[str]:
    """Completions for a ScriptedRuntime: a JSONL file of strings or ``{"completion": ...}``."""
    completions: list[str] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if isinstance(item, dict):
            item = item.get("completion")
        if not isinstance(item, str):
            raise SystemExit(f'{path}:{number}: expected a JSON string or {{"completion": "..."}}')
        completions.append(item)
    return completions


def run_command(args: argparse.Namespace) -> int:
    from q3agent.agent import Agent
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
    from q3agent.serving.base import Runtime, RuntimeUnavailableError
    from q3agent.serving.testing import ScriptedRuntime

    console = Console(highlight=False)
    runtime: Runtime | None = ScriptedRuntime(load_script(args.script)) if args.script else None
    tools: list[Any] = []
    for spec in args.tools or ():
        loaded = _load_object(spec)
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
        args.model,
        runtime=runtime,
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

    try:
        result = anyio.run(main)
    except RuntimeUnavailableError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    u = result.usage
    console.print(
        f"\n[bold]{result.status}[/] · {len(result.steps)} steps · {u.requests} requests · "
        f"prompt {u.prompt_tokens} (cached {u.cached_tokens}) · completion "
        f"{u.completion_tokens} (reasoning {u.reasoning_tokens})"
        + (f"\n[red]{escape(result.detail)}[/]" if result.detail else "")
    )
    if args.trace:
        result.write_trace(args.trace)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    return 0 if result.ok else 1
