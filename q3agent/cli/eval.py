"""The ``q3agent eval`` command group: ``q3agent eval bfcl`` runs BFCL v3 on a Qwen3 runtime."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

from q3agent.cli.exits import FAILURE, INTERRUPTED, OK, USAGE
from q3agent.cli.options import ModelChoice, add_runtime_options, resolve_model_choice
from q3agent.cli.outputs import check_output_dir

if TYPE_CHECKING:
    from q3agent.eval.bfcl_runner import EntryResult, EvalConfig, EvalReport, ResultsLog
    from q3agent.serving.base import Runtime

__all__ = [
    "add_eval_commands",
    "engine_phases",
    "make_runtime",
    "report_failures",
    "resolve_config",
    "run_bfcl_command",
]

PRESET_HELP = {
    "report": "the Qwen3 report's setting (FC, thinking, report sampling, 40,960-token "
    "context, YaRN 64K for multi-turn, held-out functions in the tools block);",
    "bfcl": "bfcl-eval's Qwen3-FC handler (FC, thinking, temperature 0.001, 4,096 new "
    "tokens, 40,960-token context, held-out functions in the user message).",
}


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
    _add_setting_options(bfcl)
    bfcl.add_argument("--limit", type=int, default=None, help="First N entries per category.")
    bfcl.add_argument(
        "--out",
        default="bfcl-results",
        metavar="DIR",
        help="Output folder: each entry is written to <category>.jsonl as it finishes, "
        "scores.json at the end; run the same command again to resume an interrupted run "
        "(default bfcl-results).",
    )
    bfcl.add_argument(
        "--concurrency", type=int, default=64, help="Entries in flight at once (default 64)."
    )
    bfcl.add_argument("--temperature", type=float, default=None, help="Override temperature.")
    bfcl.set_defaults(func=run_bfcl_command)


def _add_setting_options(bfcl: argparse.ArgumentParser) -> None:
    """The evaluation setting: ``--preset``, ``--mode``, ``--thinking``, ``--sampling``,
    ``--holdout``, ``--multi-turn-context-length`` and ``--thinking-budget``."""
    bfcl.add_argument(
        "--preset",
        choices=tuple(PRESET_HELP),
        default=None,
        help="A named setting; options given explicitly win. "
        + " ".join(f"{name}: {text}" for name, text in PRESET_HELP.items()),
    )
    bfcl.add_argument(
        "--mode",
        choices=("fc", "prompt"),
        default=None,
        help="fc (default): functions in Qwen3's tools block; prompt: BFCL's Python-call system "
        "prompt (single-turn categories; multi-turn always uses native tool calls).",
    )
    bfcl.add_argument(
        "--thinking",
        choices=("on", "off", "policy"),
        default=None,
        help="off (default): non-thinking; on: think every step; policy: q3agent's PlanAct.",
    )
    bfcl.add_argument(
        "--sampling",
        choices=("report", "bfcl"),
        default=None,
        help="report (default): the Qwen3 report's presets, up to 32,768 new tokens; bfcl: "
        "BFCL's handler, temperature 0.001 and up to 4,096 new tokens.",
    )
    bfcl.add_argument(
        "--holdout",
        choices=("tools", "message"),
        default=None,
        help="Where multi_turn_miss_func's held-out functions go at their turn: tools "
        "(default; the tools block, BFCL's FC path) or message (a Python list in the user "
        "message, tools block unchanged: bfcl-eval's local Qwen3 handler).",
    )
    bfcl.add_argument(
        "--multi-turn-context-length",
        type=int,
        default=None,
        metavar="N",
        help="Context window for multi-turn categories (default: --context-length). Above "
        "40,960 the model needs YaRN: embedded SGLang sets it (factor 2 up to 65,536, else 4); "
        "a server must be started with it.",
    )
    bfcl.add_argument(
        "--thinking-budget",
        type=_budgets,
        default=None,
        metavar="N[,N…]",
        help="Reasoning-token budget; several values run a sweep (thinking on) and print "
        "accuracy against budget.",
    )


def make_runtime(choice: ModelChoice, context_length: int | None = None) -> Runtime:
    """The runtime ``--runtime`` names (oracles check the harness; the rest as everywhere).

    An embedded SGLang engine is started with ``context_length`` when it needs YaRN (above the
    40,960 tokens Qwen3 serves natively); below that the engine keeps its default window.
    """
    if choice.runtime_flag == "oracle":
        from q3agent.eval.oracle import OracleRuntime

        return OracleRuntime()
    if choice.runtime_flag == "noisy-oracle":
        from q3agent.eval.oracle import NoisyOracleRuntime

        return NoisyOracleRuntime()
    from q3agent.eval.bfcl_settings import yarn_factor
    from q3agent.serving.base import RuntimeWrapper
    from q3agent.serving.sglang_runtime import SGLangRuntime

    runtime = choice.build_runtime()
    # under a --max-tokens/--context-length limit the engine is the wrapped runtime
    engine = runtime.inner if isinstance(runtime, RuntimeWrapper) else runtime
    if isinstance(engine, SGLangRuntime) and yarn_factor(context_length) is not None:
        from q3agent.serving.select import select_runtime

        # not started yet: rebuilt with the YaRN window this phase needs
        return select_runtime(choice.model, replace(choice.settings, context_length=context_length))
    return runtime


def resolve_config(
    args: argparse.Namespace, categories: tuple[str, ...], choice: ModelChoice | None = None
) -> EvalConfig:
    """The run's settings: explicit options, then the ``--preset``'s, then the defaults."""
    choice = choice or resolve_model_choice(args)
    from q3agent.eval.bfcl_runner import EvalConfig
    from q3agent.eval.bfcl_settings import PRESETS

    preset = PRESETS.get(args.preset) if args.preset else None

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name)
        if value is not None:
            return value
        return getattr(preset, name) if preset is not None else default

    budgets: list[int] | None = args.thinking_budget
    thinking: Literal["on", "off", "policy"] = (
        "on" if budgets and len(budgets) > 1 else pick("thinking", "off")
    )
    return EvalConfig(
        categories=categories,
        model=choice.model,
        capability=choice.capability,
        mode=pick("mode", "fc"),
        thinking=thinking,
        thinking_budget=budgets[0] if budgets and len(budgets) == 1 else None,
        limit=args.limit,
        concurrency=args.concurrency,
        max_tokens=choice.settings.max_tokens,
        temperature=args.temperature,
        sampling=pick("sampling", "report"),
        holdout=pick("holdout", "tools"),
        context_length=choice.settings.context_length
        or (getattr(preset, "context_length", None) if preset is not None else None),
        multi_turn_context_length=pick("multi_turn_context_length", None),
        preset=args.preset,
    )


def _server_yarn_note(config: EvalConfig, runtime: Runtime) -> str | None:
    """What a server must be started with for the multi-turn context, when it needs YaRN."""
    from q3agent.eval.bfcl_data import MULTI_TURN_CATEGORIES
    from q3agent.eval.bfcl_settings import QWEN3_NATIVE_CONTEXT, yarn_factor
    from q3agent.serving.openai_runtime import OpenAICompatibleRuntime
    from q3agent.serving.sglang_runtime import RemoteSGLangRuntime

    context = config.multi_turn_context_length or config.context_length
    factor = yarn_factor(context)
    if factor is None or not isinstance(runtime, OpenAICompatibleRuntime | RemoteSGLangRuntime):
        return None  # embedded engines get YaRN from the harness; oracles need none
    if not any(c in MULTI_TURN_CATEGORIES for c in config.categories):
        return None
    scaling = json.dumps(
        {
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": factor,
                "original_max_position_embeddings": QWEN3_NATIVE_CONTEXT,
            },
            # with YaRN set, SGLang 0.5 and vLLM 0.32 take the window from this (they apply
            # no factor to it) and refuse a longer --context-length/--max-model-len at start
            "max_position_embeddings": context,
        }
    )
    return (
        f"note: multi-turn requests are sized to {context:,} tokens; the server must serve that "
        f"window with YaRN (SGLang: --context-length {context} --json-model-override-args "
        f"'{scaling}'; vLLM: --max-model-len {context} --hf-overrides '{scaling}')"
    )


def engine_phases(config: EvalConfig) -> list[tuple[tuple[str, ...], int | None]]:
    """Categories grouped by the engine context they need (single-turn, then multi-turn)."""
    from q3agent.eval.bfcl_data import MULTI_TURN_CATEGORIES
    from q3agent.eval.bfcl_settings import yarn_factor

    single = tuple(c for c in config.categories if c not in MULTI_TURN_CATEGORIES)
    multi = tuple(c for c in config.categories if c in MULTI_TURN_CATEGORIES)
    multi_context = config.multi_turn_context_length or config.context_length
    single_engine = config.context_length if yarn_factor(config.context_length) else None
    multi_engine = multi_context if yarn_factor(multi_context) else None
    if single and multi and single_engine != multi_engine:
        return [(single, single_engine), (multi, multi_engine)]
    return [(config.categories, multi_engine if multi else single_engine)]


def report_failures(report: EvalReport) -> int:
    """Print inference errors (count and reasons) on stderr; the exit code the run earns."""
    failures = report.failures
    if not failures:
        return OK
    total = len(report.results)
    what = "every entry" if len(failures) == total else f"{len(failures)} of {total} entries"
    print(
        f"error: {what} failed with an inference error and scored as wrong; the scores above "
        "are not a measurement of the model. Reasons:",
        file=sys.stderr,
    )
    print(report.failure_summary(), file=sys.stderr)
    print(
        "Fix the runtime (see the reasons; every entry's error is in the JSONL files) and run "
        "the same command again: only the failed entries run again.",
        file=sys.stderr,
    )
    return FAILURE


class EvalProgress:
    """Progress lines on stderr while entries run: how many are scored of how many, and the
    rate; at least one line every ``every`` seconds while the model is busy, one per tenth of
    the entries otherwise."""

    def __init__(self, every: float = 15.0) -> None:
        self.every = every
        self.planned = 0
        self.resumed = 0
        self.done = 0
        self.started = time.monotonic()
        self.last_line = self.started
        self.next_mark = 0

    def start(self, planned: int, resumed: int) -> None:
        """A new batch of entries (a phase or a budget) was loaded."""
        self.planned, self.resumed, self.done = planned, resumed, resumed
        self.started = self.last_line = time.monotonic()
        self.next_mark = resumed + max(1, planned // 10)
        if resumed:
            self._line(f"resuming: {resumed} of {planned} entries finished earlier")
        else:
            self._line(f"running {planned} entries")

    def entry(self, result: EntryResult) -> None:
        """One entry finished."""
        self.done += 1
        if self.done >= self.next_mark or self.done == self.planned:
            self.next_mark = self.done + max(1, self.planned // 10)
            self._line(self._status())

    async def heartbeat(self) -> None:
        """A line every ``every`` seconds without one (a slow model is not a hung run)."""
        while True:
            await anyio.sleep(self.every)
            if time.monotonic() - self.last_line >= self.every and self.done < self.planned:
                self._line(self._status() + ", waiting for the model")

    def _status(self) -> str:
        ran = self.done - self.resumed
        elapsed = time.monotonic() - self.started
        rate = ran / elapsed if elapsed > 0 else 0.0
        return f"{self.done}/{self.planned} entries scored ({rate:.1f}/s, {elapsed:.0f} s)"

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        print(f"  {text}", file=sys.stderr, flush=True)


def run_bfcl_command(args: argparse.Namespace) -> int:
    """Run ``q3agent eval bfcl`` with parsed arguments; returns the process exit code.

    0: every entry was scored; 1: some entries failed with inference errors (reported on
    stderr; a rerun with the same ``--out`` runs them again); 2: a bad option or bfcl-eval
    missing; 130: interrupted (Ctrl-C or SIGTERM): partial scores are printed and the finished
    entries stay in ``--out``, where the same command resumes.
    """
    from q3agent.eval.bfcl_data import resolve_categories
    from q3agent.eval.bfcl_runner import ResultsLog

    try:
        categories = tuple(resolve_categories(args.categories))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    choice = resolve_model_choice(args)
    budgets: list[int] | None = args.thinking_budget
    config = resolve_config(args, categories, choice)
    out = check_output_dir(args.out, "--out")
    # a folder of other settings is refused before any work; the sweep checks per budget
    log = None if budgets and len(budgets) > 1 else ResultsLog.open(out, config)
    run = _BfclRun(choice, config, out, budgets, log)
    return anyio.run(run.main)


@dataclass
class _BfclRun:
    """One ``eval bfcl`` run: a budget sweep or a single run (in engine phases), with progress
    lines and Ctrl-C/SIGTERM scoring what finished."""

    choice: ModelChoice
    config: EvalConfig
    out: Path
    budgets: list[int] | None
    log: ResultsLog | None
    progress: EvalProgress = field(default_factory=EvalProgress)
    cancel: anyio.Event = field(default_factory=anyio.Event)

    async def main(self) -> int:
        """Print the setting, run, and return the exit code; a failure is raised as itself."""
        print(self.config.describe())
        failure: Exception | None = None
        code = OK
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watch_signals)
            tg.start_soon(self.progress.heartbeat)
            try:
                budgets = self.budgets
                code = await (self.sweep() if budgets and len(budgets) > 1 else self.single())
            except Exception as exc:  # raised as itself below, not inside an exception group
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return code

    async def watch_signals(self) -> None:
        """On Ctrl-C (or SIGTERM), stop starting entries and score those that finished."""
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:  # SIGTERM arrives here too (cli.interrupts)
                print(
                    "interrupted: scoring the entries that finished…", file=sys.stderr, flush=True
                )
                self.cancel.set()
                return

    async def sweep(self) -> int:
        """Run every ``--thinking-budget`` in turn and print accuracy against budget."""
        from q3agent.eval.bfcl_runner import run_budget_sweep, sweep_table

        assert self.budgets is not None
        runtime = make_runtime(self.choice)
        try:
            reports = await run_budget_sweep(
                runtime,
                self.config,
                self.budgets,
                out_dir=self.out,
                cancel=self.cancel,
                on_result=self.progress.entry,
                on_start=self.progress.start,
            )
        finally:
            await runtime.aclose()
        for budget, report in reports:
            report.write(self.out / f"budget-{budget}")
        print(sweep_table(reports))
        print(f"results written to {self.out}")
        if reports and reports[-1][1].interrupted:
            _interrupted_note(reports[-1][1], self.out / f"budget-{reports[-1][0]}")
            return INTERRUPTED
        return max(report_failures(report) for _, report in reports)

    async def single(self) -> int:
        """Run the categories, one engine phase per context size; print the scores."""
        from q3agent.eval.bfcl_runner import EvalReport

        parts: list[EvalReport] = []
        for phase_categories, engine_context in engine_phases(self.config):
            parts.append(await self.phase(phase_categories, engine_context))
            if parts[-1].interrupted:
                break
        report = EvalReport.merge(self.config, parts)
        report.write(self.out)
        print(report.table())
        print(f"results written to {self.out}")
        if report.interrupted:
            _interrupted_note(report, self.out)
            return INTERRUPTED
        return report_failures(report)

    async def phase(self, categories: tuple[str, ...], engine_context: int | None) -> EvalReport:
        """Run ``categories`` on a runtime started for ``engine_context`` (then closed)."""
        from q3agent.eval.bfcl_runner import run_bfcl

        assert self.log is not None
        runtime = make_runtime(self.choice, engine_context)
        phase_config = replace(self.config, categories=categories)
        note = _server_yarn_note(phase_config, runtime)
        if note:
            print(note, file=sys.stderr)
        try:
            return await run_bfcl(
                runtime,
                phase_config,
                on_result=self.progress.entry,
                on_start=self.progress.start,
                log=self.log,
                cancel=self.cancel,
            )
        finally:
            await runtime.aclose()


def _interrupted_note(report: EvalReport, where: Path) -> None:
    print(
        f"interrupted: {len(report.results)} of {report.planned} entries finished and are "
        f"kept in {where}; run the same command again to resume",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m q3agent.cli.eval eval bfcl …``) for use before wiring."""
    parser = argparse.ArgumentParser(prog="q3agent")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
