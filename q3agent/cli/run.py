"""``q3agent run``: run an agent on one task and stream its steps."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from q3agent.cli.exits import FAILURE, INTERRUPTED, OK
from q3agent.cli.outputs import check_output_file
from q3agent.errors import UsageError
from q3agent.serving.settings import MAX_TOKENS_ENV

if TYPE_CHECKING:
    from q3agent.agent import Agent
    from q3agent.policy.base import Policy
    from q3agent.result import RunResult


class LoadError(UsageError, ValueError):
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


def check_tools(spec: str, loaded: Any) -> list[Any]:
    """The tools ``--tools spec`` names (one, or a list of them), checked before any work."""
    from q3agent.tools.base import Tool

    items = list(loaded) if isinstance(loaded, list | tuple) else [loaded]
    for item in items:
        if not (isinstance(item, Tool) or callable(item) or hasattr(item, "list_tools")):
            what = "a module" if isinstance(item, type(sys)) else f"a {type(item).__name__}"
            raise LoadError(
                f"--tools {spec} is {what}, not a tool: name a function, a Tool or a list of "
                "them, e.g. --tools mytools:multiply"
            )
    return items


def load_script(path: str | Path) -> list[str]:
    """Completions for ``--script`` (see :func:`q3agent.testing.runtimes.load_completions`)."""
    from q3agent.testing.runtimes import ScriptFileError, load_completions

    try:
        return load_completions(path)
    except ScriptFileError as exc:
        raise LoadError(str(exc)) from None


def run_command(args: argparse.Namespace) -> int:
    """``q3agent run``: 0 when the agent answered, 1 when the run ended otherwise, 130 when
    interrupted (the ``--trace`` is written first)."""
    import anyio

    # With --json, stdout carries the JSON result alone; the steps go to stderr.
    console = Console(highlight=False, stderr=bool(args.json))
    if not args.task.strip():
        raise UsageError('the task is empty: q3agent run "TASK", e.g. q3agent run "What is 2+2?"')
    if args.trace:
        check_output_file(args.trace, "--trace")
    agent = _build_agent(args)

    async def main() -> RunResult:
        final = await _stream_steps(agent, args.task, console)
        await agent.aclose()
        return final

    result = anyio.run(main)
    return _report_result(args, result, console)


def _build_agent(args: argparse.Namespace) -> Agent:
    """The agent the flags describe; tools, MCP config and script are checked before the
    model loads."""
    from q3agent.agent import Agent
    from q3agent.cli.options import resolve_model_choice
    from q3agent.serving.base import Runtime
    from q3agent.testing.runtimes import ScriptedRuntime
    from q3agent.tools.base import ToolDefinitionError

    choice = resolve_model_choice(args)
    tools: list[Any] = []
    for spec in args.tools or ():
        loaded = load_object(spec)
        tools.extend(check_tools(spec, loaded))
    servers = _mcp_servers(args.mcp_config) if args.mcp_config else []
    # the model last: everything above is checked before a model loads
    runtime: Runtime = (
        choice.limit(ScriptedRuntime(load_script(args.script)))
        if args.script
        else choice.build_runtime()
    )
    try:
        return Agent(
            choice.model,
            runtime=runtime,
            capability=choice.capability,
            tools=tools,
            mcp_servers=servers,
            policy=_thinking_policy(args.thinking, args.budget),
            system_prompt=args.system,
            max_steps=args.max_steps,
        )
    except ToolDefinitionError as exc:
        raise LoadError(f"--tools: {exc}") from None


def _mcp_servers(config: str) -> list[Any]:
    """The servers of ``--mcp-config``, asking on the terminal when a server wants input."""
    from q3agent.tools.mcp import MCPServerError, ask_on_terminal, load_mcp_config

    try:
        servers = list(load_mcp_config(config))
    except MCPServerError as exc:  # reading the file: nothing has started yet
        raise LoadError(f"--mcp-config: {exc}") from None
    for server in servers:  # servers may ask the user for input on the terminal
        if server.elicitation is None and sys.stdin.isatty():
            server.elicitation = ask_on_terminal
    return servers


def _thinking_policy(thinking: str, budget: int) -> Policy:
    """``--thinking on|off|policy`` (with ``--thinking-budget``) as a thinking policy."""
    from q3agent.policy.builtin import AlwaysThink, NeverThink, PlanAct

    if thinking == "on":
        return AlwaysThink(budget)
    if thinking == "off":
        return NeverThink()
    return PlanAct()


async def _stream_steps(agent: Agent, task: str, console: Console) -> RunResult:
    """Run ``task``, printing each step, the reasoning, the answer and the tool calls as they
    stream; the run's result."""
    from q3agent.events import (
        ContentDelta,
        FinalResult,
        ReasoningDelta,
        StepStart,
        ToolCallEvent,
        ToolResultEvent,
    )

    final: RunResult | None = None
    async for event in agent.stream(task):
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
    return final


def _report_result(args: argparse.Namespace, result: RunResult, console: Console) -> int:
    """Print the run's summary (and ``--json``), write ``--trace``; the exit status."""
    u = result.usage
    console.print(
        f"\n[bold]{result.status}[/] · {len(result.steps)} steps · {u.requests} requests · "
        f"prompt {u.prompt_tokens} (cached {u.cached_tokens}) · completion "
        f"{u.completion_tokens} (reasoning {u.reasoning_tokens})"
        + (f"\n[yellow]{escape(result.detail)}[/]" if result.detail and result.ok else "")
    )
    interrupted = result.status == "cancelled"  # only Ctrl-C or SIGTERM cancels the CLI's run
    if args.trace:
        result.write_trace(args.trace)
    if interrupted:
        kept = f"; the steps so far are in {args.trace}" if args.trace else ""
        print(f"interrupted ({len(result.steps)} steps finished){kept}", file=sys.stderr)
    elif truncated_answer(result):
        print(
            f"warning: the answer was cut off at the completion-token limit "
            f"({result.usage.completion_tokens} tokens in this run); raise --max-tokens "
            f"(${MAX_TOKENS_ENV}) for the whole answer",
            file=sys.stderr,
        )
    if not result.ok and not interrupted and not result.truncated:  # why it ended: one line
        print(f"error: the run ended with status {result.status}: {result.detail}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    if interrupted:
        return INTERRUPTED
    return OK if result.ok else FAILURE


def truncated_answer(result: RunResult) -> bool:
    """Whether the run's answer was cut at the completion-token limit (finish ``length``)."""
    return result.truncated
