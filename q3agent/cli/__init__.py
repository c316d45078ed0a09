"""The ``q3agent`` command line: run agents, list models, MCP, RAG, research and BFCL."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from q3agent import __version__
from q3agent.cli.exits import FAILURE, INTERRUPTED, OK, exit_status
from q3agent.cli.interrupts import sigterm_as_interrupt
from q3agent.cli.options import ENVIRONMENT_HELP, add_runtime_options


def _cmd_run(args: argparse.Namespace) -> int:
    from q3agent.cli.run import run_command

    return run_command(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="q3agent",
        description=__doc__,
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"q3agent {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show tracebacks and library warnings"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    _add_run_command(sub)

    models = sub.add_parser("models", help="list Qwen3 models with sizes and GPU needs")
    models.add_argument(
        "--json",
        action="store_true",
        help="print the registry as one JSON object on stdout instead of the table",
    )
    models.set_defaults(func=_cmd_models)

    for module, function in _PLUGINS:
        getattr(importlib.import_module(module), function)(sub)
    for leaf in _leaf_parsers(parser):
        leaf.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks and library warnings",
        )
    return parser


def _add_run_command(sub: Any) -> None:
    """``run``: its task, runtime flags, tools, thinking, limits and outputs."""
    run = sub.add_parser(
        "run",
        help="run an agent on a task",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("task", help="what the agent should do (quote it)")
    add_runtime_options(run)
    run.add_argument(
        "--script",
        metavar="JSONL",
        help="answer from scripted completions instead of a model (demos, tests)",
    )
    run.add_argument(
        "--tools",
        action="append",
        help="MODULE:ATTR of a tool or list of tools (modules in the current directory too)",
    )
    run.add_argument("--mcp-config", metavar="FILE", help='an {"mcpServers": …} JSON file')
    run.add_argument(
        "--thinking",
        choices=("on", "off", "policy"),
        default="policy",
        help="on: think every step; off: never; policy: plan with thinking, act without "
        "(default policy)",
    )
    run.add_argument(
        "--thinking-budget",
        dest="budget",
        type=int,
        default=4096,
        metavar="N",
        help="reasoning tokens per step with --thinking on (default 4096)",
    )
    run.add_argument(  # the old name
        "--budget", dest="budget", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    run.add_argument("--system", metavar="TEXT", help="system prompt (default: none)")
    run.add_argument(
        "--max-steps", type=int, default=20, metavar="N", help="model steps at most (default 20)"
    )
    run.add_argument("--trace", metavar="FILE", help="append a JSONL trace of the run to this file")
    run.add_argument(
        "--json", action="store_true", help="print only the result as JSON on stdout (steps go "
        "to stderr)"
    )  # fmt: skip
    run.set_defaults(func=_cmd_run)


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                has_children = any(
                    isinstance(a, argparse._SubParsersAction) for a in child._actions
                )
                yield from _leaf_parsers(child) if has_children else (child,)


def _cmd_models(args: argparse.Namespace) -> int:
    if args.json:
        import json

        from q3agent.qwen3.models import registry_table

        print(json.dumps({"gpu_memory_gb": 80.0, "models": registry_table(80.0)}, indent=2))
        return OK
    from q3agent.cli.models import print_models_table

    print_models_table()
    return OK


_PLUGINS: list[tuple[str, str]] = [
    ("q3agent.cli.mcp", "add_mcp_commands"),
    ("q3agent.cli.rag", "add_rag_commands"),
    ("q3agent.cli.research", "add_research_commands"),
    ("q3agent.cli.eval", "add_eval_commands"),
]
"""(module, function) pairs that add subcommands: MCP, RAG, research, BFCL evaluation."""


def quiet_libraries() -> None:
    """Keep third-party progress bars, info logs and deprecation warnings off the terminal."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    import logging

    for name in ("transformers", "sentence_transformers", "huggingface_hub", "chromadb", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def describe_error(exc: BaseException) -> str:
    """The message a user sees for ``exc``: its own text, else its type."""
    text = str(exc).strip()
    if isinstance(exc, FileNotFoundError | NotADirectoryError) and exc.filename:
        text = f"no such file or folder: {exc.filename}"
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``q3agent`` command.

    Failures print one ``error:`` line on stderr (``-v`` adds the traceback) and exit
    non-zero as :mod:`q3agent.cli.exits` says: 2 for a mistake in the command or set-up, 1 for
    a failure while running, 130 for Ctrl-C or SIGTERM (handled alike).
    """
    args = build_parser().parse_args(argv)
    sigterm_as_interrupt()
    verbose = bool(getattr(args, "verbose", False))
    if not verbose:
        quiet_libraries()
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            inner = exc.exceptions[0]  # one error from a task group: report it, not the group
            if not isinstance(inner, Exception):
                break
            exc = inner
        status = exit_status(exc)
        hint = "" if verbose or status != FAILURE else " (run with -v for the traceback)"
        print(f"error: {describe_error(exc)}{hint}", file=sys.stderr)
        return status
    return code
