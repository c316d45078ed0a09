"""The ``q3agent`` command line: run agents, list models, MCP, RAG, research and BFCL."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
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


def _cmd_run(args: argparse.Namespace) -> int:
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
        from q3agent.tools.mcp import load_mcp_config

        servers = list(load_mcp_config(args.mcp_config))
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="q3agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an agent on a task")
    run.add_argument("task")
    run.add_argument("--model", default="Qwen3-30B-A3B")
    run.add_argument("--script", help="JSONL of raw completions for a ScriptedRuntime (demo)")
    run.add_argument("--tools", action="append", help="MODULE:ATTR of a tool or list of tools")
    run.add_argument("--mcp-config", help='an {"mcpServers": …} JSON file')
    run.add_argument("--thinking", choices=("on", "off", "policy"), default="policy")
    run.add_argument("--budget", type=int, default=4096, help="thinking budget with --thinking on")
    run.add_argument("--system", help="system prompt")
    run.add_argument("--max-steps", type=int, default=20)
    run.add_argument("--trace", help="append a JSONL trace of the run to this file")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.set_defaults(func=_cmd_run)

    models = sub.add_parser("models", help="list Qwen3 models with sizes and GPU needs")
    models.set_defaults(func=_cmd_models)

    for module, function in _PLUGINS:
        getattr(importlib.import_module(module), function)(sub)
    return parser


def _cmd_models(args: argparse.Namespace) -> int:
    from q3agent.cli_models import print_models_table

    print_models_table(Console())
    return 0


_PLUGINS: list[tuple[str, str]] = [
    ("q3agent.cli_mcp", "add_mcp_commands"),
    ("q3agent.cli_rag", "add_rag_commands"),
    ("q3agent.cli_research", "add_research_commands"),
    ("q3agent.cli_eval", "add_eval_commands"),
]
"""(module, function) pairs that add subcommands: MCP, RAG, research, BFCL evaluation."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``q3agent`` command."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
