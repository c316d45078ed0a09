"""The ``q3agent`` command line: run agents, list models, MCP, RAG, research and BFCL."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from rich.console import Console


def _cmd_run(args: argparse.Namespace) -> int:
    from q3agent.cli.run import run_command

    return run_command(args)


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
    from q3agent.cli.models import print_models_table

    print_models_table(Console())
    return 0


_PLUGINS: list[tuple[str, str]] = [
    ("q3agent.cli.mcp", "add_mcp_commands"),
    ("q3agent.cli.rag", "add_rag_commands"),
    ("q3agent.cli.research", "add_research_commands"),
    ("q3agent.cli.eval", "add_eval_commands"),
]
"""(module, function) pairs that add subcommands: MCP, RAG, research, BFCL evaluation."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``q3agent`` command."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
