"""The ``q3agent eval`` command group: ``q3agent eval bfcl`` runs BFCL v3 on a Qwen3 runtime."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from q3agent.cli.options import ModelChoice, add_runtime_options, resolve_model_choice

if TYPE_CHECKING:
    from q3agent.serving.base import Runtime

__all__ = ["add_eval_commands", "make_runtime", "run_bfcl_command"]


def _budgets(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--thinking-budget takes token counts like 1024 or 256,1024,4096; got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"--thinking-budget needs counts >= 0; got {text!r}")
    return values


def add_eval_commands(subparsers: Any) -> None:
    """Register ``eval`` (with its ``bfcl`` subcommand) on the CLI's subparsers.

    The ``bfcl`` parser sets ``func`` to :func:`run_bfcl_command`, which returns an exit code.
    """
    evaluate = subparsers.add_parser("eval", help="Run benchmarks (BFCL v3 function calling).")
    benches = evaluate.add_subparsers(dest="benchmark", required=True)
    bfcl = benches.add_parser(
        "bfcl",
        help="Berkeley Function Calling Leaderboard v3, scored with BFCL's own checkers.",
        description=(
            "Run BFCL v3 (single-turn AST, relevance and multi-turn categories) and print "
            "per-category accuracy and the overall figure weighted as BFCL v3 does. Needs the "
            "bfcl-eval package (pip install --no-deps bfcl-eval; see docs/eval.md)."
        ),
    )
    bfcl.add_argument(
        "--categories",
        nargs="+",
        default=["all"],
        help="Categories or groups: all, single_turn, multi_turn, live, non_live, python, "
        "simple, java, javascript, multiple, parallel, parallel_multiple, irrelevance, "
        "live_simple, …, multi_turn_base, multi_turn_miss_func, multi_turn_miss_param, "
        "multi_turn_long_context (default: all).",
    )
    add_runtime_options(
        bfcl,
        extra_runtimes=("oracle", "noisy-oracle"),
        max_tokens_help="completion token limit per request",
    )
    bfcl.add_argument(
        "--mode",
        choices=("fc", "prompt"),
        default="fc",
        help="fc: functions in Qwen3's tools block; prompt: BFCL's Python-call system prompt "
        "(single-turn categories; multi-turn always uses native tool calls).",
    )
    bfcl.add_argument(
        "--thinking",
        choices=("on", "off", "policy"),
        default="off",
        help="off: non-thinking; on: think every step; policy: q3agent's PlanAct policy.",
    )
    bfcl.add_argument(
        "--thinking-budget",
        type=_budgets,
        default=None,
        metavar="N[,N…]",
        help="Reasoning-token budget; several values run a sweep (thinking on) and print "
        "accuracy against budget.",
    )
    bfcl.add_argument("--limit", type=int, default=None, help="First N entries per category.")
    bfcl.add_argument(
        "--out", default="bfcl-results", help="Output directory (scores.json + JSONL per category)."
    )
    bfcl.add_argument("--concurrency", type=int, default=64, help="Entries in flight at once.")
    bfcl.add_argument("--temperature", type=float, default=None, help="Override temperature.")
    bfcl.set_defaults(func=run_bfcl_command)


def make_runtime(choice: ModelChoice) -> Runtime:
    """The runtime ``--runtime`` names (oracles check the harness; the rest as everywhere)."""
    if choice.runtime_flag == "oracle":
        from q3agent.eval.oracle import OracleRuntime

        return OracleRuntime()
    if choice.runtime_flag == "noisy-oracle":
        from q3agent.eval.oracle import NoisyOracleRuntime

        return NoisyOracleRuntime()
    return choice.build_runtime()


def run_bfcl_command(args: argparse.Namespace) -> int:
    """Run ``q3agent eval bfcl`` with parsed arguments; returns the process exit code."""
    import anyio

    from q3agent.eval.bfcl_data import BfclUnavailableError, resolve_categories
    from q3agent.eval.bfcl_runner import (
        EntryResult,
        EvalConfig,
        run_bfcl,
        run_budget_sweep,
        sweep_table,
    )
    from q3agent.serving.base import RuntimeUnavailableError

    try:
        categories = tuple(resolve_categories(args.categories))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    choice = resolve_model_choice(args)
    budgets: list[int] | None = args.thinking_budget
    thinking: Literal["on", "off", "policy"] = (
        "on" if budgets and len(budgets) > 1 else args.thinking
    )
    config = EvalConfig(
        categories=categories,
        model=choice.model,
        mode=args.mode,
        thinking=thinking,
        thinking_budget=budgets[0] if budgets and len(budgets) == 1 else None,
        limit=args.limit,
        concurrency=args.concurrency,
        max_tokens=choice.settings.max_tokens,
        temperature=args.temperature,
    )
    out = Path(args.out)
    done = 0
    started = time.perf_counter()

    def progress(result: EntryResult) -> None:
        nonlocal done
        done += 1
        if done % 100 == 0:
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"  {done} entries scored ({rate:.1f}/s)", file=sys.stderr)

    async def main() -> int:
        runtime = make_runtime(choice)
        try:
            if budgets and len(budgets) > 1:
                sweep = await run_budget_sweep(runtime, config, budgets)
                for budget, report in sweep:
                    report.write(out / f"budget-{budget}")
                print(sweep_table(sweep))
            else:
                report = await run_bfcl(runtime, config, on_result=progress)
                report.write(out)
                print(report.table())
            print(f"results written to {out}")
        finally:
            await runtime.aclose()
        return 0

    try:
        return anyio.run(main)
    except (BfclUnavailableError, RuntimeUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m q3agent.cli.eval eval bfcl …``) for use before wiring."""
    parser = argparse.ArgumentParser(prog="q3agent")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
