"""The ``q3agent research`` command: a cited report from documents and the web, with progress."""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from q3agent.cli.exits import FAILURE, INTERRUPTED, OK
from q3agent.cli.options import add_runtime_options
from q3agent.cli.outputs import check_output_file, write_with_fallback
from q3agent.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from q3agent.cli.options import ModelChoice
    from q3agent.rag.store import RagStore
    from q3agent.research.pipeline import ResearchAgent
    from q3agent.research.progress import ResearchEvent
    from q3agent.research.report import Report
    from q3agent.serving.base import Runtime


def add_research_commands(subparsers: Any) -> None:
    """Add ``research`` to the ``q3agent`` sub-command parsers."""
    p = subparsers.add_parser(
        "research",
        help="write a cited research report from documents and web pages",
        description=(
            "Plan sub-questions, research them in parallel with rag_search and fetch_url, and "
            "write a report whose every [n] cites a quote that was actually retrieved."
        ),
    )
    p.add_argument("question", help="the research question")
    p.add_argument(
        "--docs",
        action="append",
        default=[],
        metavar="PATH",
        help="file or folder of documents to research (repeatable)",
    )
    p.add_argument("--store", metavar="DIR", help="research an existing RAG store directory")
    p.add_argument("--web", action="store_true", help="let researchers fetch web pages")
    p.add_argument("--url", action="append", default=[], metavar="URL",
                   help="a start page for web research (repeatable; implies --web)")  # fmt: skip
    p.add_argument(
        "--mcp-fetch",
        action="store_true",
        help="fetch pages through the mcp-server-fetch MCP server instead of httpx",
    )
    p.add_argument("--out", metavar="FILE", help="write the report here (default: print it)")
    p.add_argument("--format", choices=["md", "html", "pdf"],
                   help="output format (default: from --out's suffix, else md)")  # fmt: skip
    p.add_argument(
        "--no-clarify",
        action="store_true",
        help="do not ask a clarifying question first (never asked when not a TTY)",
    )
    add_runtime_options(
        p,
        extra_runtimes=("oracle",),
        extra_runtimes_help="; oracle: the built-in stand-in research model (demos, no weights)",
    )
    p.add_argument(
        "--script",
        metavar="JSONL",
        help="answer from scripted completions instead of a model (demos, tests)",
    )
    # The old name of --runtime oracle, kept working but no longer shown.
    p.add_argument("--fixture-runtime", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--max-researchers", type=int, default=5, help="parallel researchers (5)")
    p.add_argument("--max-subquestions", type=int, default=5, help="planned sub-questions (5)")
    p.add_argument("--max-calls", type=int, default=200, help="model-call budget (200)")
    p.add_argument("--max-total-tokens", type=int, metavar="N",
                   help="token budget over all calls")  # fmt: skip
    p.add_argument("--max-seconds", type=float, help="wall-time budget")
    p.add_argument(
        "--remove-unsupported",
        action="store_true",
        help="remove sentences the evidence does not support instead of flagging",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON summary (status, sources, timings) on stdout; with --out the "
        "report goes to the file only",
    )
    p.set_defaults(func=run_research_command)


def _clarifier(console: Console) -> Any:
    def ask(question: str) -> str:
        return console.input(f"[bold]Clarifying question:[/] {question}\n> ")

    return ask


class ResearchUsageError(UsageError, ValueError):
    """A ``q3agent research`` command that cannot start; the message says what to add."""


def _check_sources(args: argparse.Namespace) -> None:
    missing = [d for d in args.docs if not Path(d).exists()]
    if missing:
        raise ResearchUsageError(f"no such file or folder: {', '.join(missing)} (check --docs)")
    if args.store and not Path(args.store).expanduser().is_dir():
        raise ResearchUsageError(
            f"no RAG store at {args.store}: check --store, or make one with "
            f"`q3agent rag ingest PATH --store {args.store}`"
        )
    if not (args.docs or args.store or args.web or args.url or args.mcp_fetch):
        raise ResearchUsageError(
            "research needs sources: add --docs PATH (files or folders), --store DIR (a RAG "
            "store), or --web with --url URL"
        )


def _report_paths(args: argparse.Namespace) -> tuple[Path | None, Path | None, str]:
    """(Markdown path, rendered path or None, format) for ``--out``/``--format``."""
    if not args.out:
        return None, None, args.format or "md"
    out = Path(args.out)
    fmt: str = args.format or {".html": "html", ".htm": "html", ".pdf": "pdf"}.get(
        out.suffix.lower(), "md"
    )
    if fmt == "md":
        return out, None, fmt
    markdown = (
        out.with_suffix(".md") if out.suffix.lower() != ".md" else out.with_suffix(".report.md")
    )
    return markdown, out, fmt


def run_research_command(args: argparse.Namespace) -> int:
    """Run ``q3agent research``; returns the exit status (0 complete, 1 partial or failed).

    The Markdown report is written before any HTML or PDF rendering, so a rendering failure
    never loses a finished run.
    """
    import anyio
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    markdown_path, rendered_path, fmt = _check_command(args)
    agent, store = _build_research_agent(args, console)
    interrupted = False

    def on_interrupt() -> None:
        nonlocal interrupted
        interrupted = True

    try:
        report = anyio.run(_run_research, agent, args, console, on_interrupt)
    finally:
        if store is not None:
            store.close()
    rendered = _write_report_files(report, args, console, markdown_path, rendered_path, fmt)
    console.print(report.summary())
    if args.json:
        print(json.dumps(_summary_json(report), indent=2))
    if interrupted:
        return INTERRUPTED
    if not rendered:
        return FAILURE
    return OK if report.complete else FAILURE


def _check_command(args: argparse.Namespace) -> tuple[Path | None, Path | None, str]:
    """Refuse a command that cannot finish before any work (empty question, an output that
    cannot be written, PDF without fpdf2, no sources, two model choices); the report paths
    and format (see :func:`_report_paths`)."""
    if not args.question.strip():
        raise ResearchUsageError(
            'the research question is empty: q3agent research "QUESTION" --docs PATH'
        )
    if args.format in ("html", "pdf") and not args.out:
        raise ResearchUsageError(f"--format {args.format} needs --out FILE")
    markdown_path, rendered_path, fmt = _report_paths(args)
    for path in (rendered_path, markdown_path):  # before any work: a finished run is never lost
        if path is not None:
            check_output_file(path, "--out")
    if fmt == "pdf" and importlib.util.find_spec("fpdf") is None:
        raise ResearchUsageError(
            f"--out {args.out}: PDF output needs the fpdf2 package: run `pip install fpdf2`, "
            "or write HTML (--out report.html) and print it to PDF from a browser"
        )
    _check_sources(args)
    if args.fixture_runtime:
        args.runtime = "oracle"
    if args.script and args.runtime not in (None, "auto"):
        raise ResearchUsageError(
            f"--script and --runtime {args.runtime} both choose the model: give one of them"
        )
    return markdown_path, rendered_path, fmt


def _research_runtime(args: argparse.Namespace, choice: ModelChoice) -> Runtime:
    """The model the flags choose: the fixture runtime (``oracle``), ``--script``, or a real
    one."""
    if args.runtime == "oracle":
        from q3agent.research.fixture_runtime import ResearchFixtureRuntime

        return ResearchFixtureRuntime()
    if args.script:
        from q3agent.cli.run import load_script
        from q3agent.testing.runtimes import ScriptedRuntime

        return ScriptedRuntime(load_script(args.script))
    return choice.build_runtime()


def _build_research_agent(
    args: argparse.Namespace, console: Console
) -> tuple[ResearchAgent, RagStore | None]:
    """The research agent the flags describe, and the RAG store it opened (or ``None``)."""
    from q3agent.cli.options import resolve_model_choice
    from q3agent.research.pipeline import ResearchAgent, ResearchBudget, ResearchOptions

    choice = resolve_model_choice(args)
    runtime = _research_runtime(args, choice)
    store = None
    if args.store:
        from q3agent.rag.store import RagStore

        console.print("loading the embedding model…", style="dim")
        store = RagStore.persistent(args.store)
    fetch_server = None
    if args.mcp_fetch:
        from q3agent.tools.mcp import MCPServerStdio

        fetch_server = MCPServerStdio("mcp-server-fetch", ["--ignore-robots-txt"])
    interactive = sys.stdin.isatty() and not args.no_clarify and args.runtime != "oracle"
    interactive = interactive and not args.script
    agent = ResearchAgent(
        choice.model,
        runtime=runtime,
        capability=choice.capability,
        docs=args.docs,
        store=store,
        web=args.web or bool(args.url),
        urls=args.url,
        fetcher=fetch_server,
        options=ResearchOptions(
            max_researchers=args.max_researchers,
            max_subquestions=args.max_subquestions,
            budget=ResearchBudget(
                max_llm_calls=args.max_calls,
                max_tokens=args.max_total_tokens,
                max_seconds=args.max_seconds,
            ),
            clarify=_clarifier(console) if interactive else None,
            unsupported="remove" if args.remove_unsupported else "flag",
        ),
    )
    return agent, store


async def _run_research(
    agent: ResearchAgent,
    args: argparse.Namespace,
    console: Console,
    on_interrupt: Callable[[], None],
) -> Report:
    """Run the research with the progress display; Ctrl-C (or SIGTERM) calls
    ``on_interrupt`` and stops the run, which still returns its partial report."""
    import anyio

    cancel = anyio.Event()
    display = _ProgressDisplay(console)
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:  # SIGTERM arrives here too (cli.interrupts)
                    console.print("[yellow]interrupted: writing the partial report…[/]")
                    on_interrupt()
                    cancel.set()
                    return

        tg.start_soon(watch_signals)
        if not args.json:
            tg.start_soon(display.heartbeat)
        try:
            with display:
                report = await agent.arun(args.question, cancel=cancel, on_event=display)
        finally:
            tg.cancel_scope.cancel()
            await agent.aclose()
    return report


def _write_report_files(
    report: Report,
    args: argparse.Namespace,
    console: Console,
    markdown_path: Path | None,
    rendered_path: Path | None,
    fmt: str,
) -> bool:
    """Print the report, or write the Markdown and then the HTML/PDF rendering; whether every
    file was written where asked (a late write failure keeps the report elsewhere)."""
    from q3agent.research.render import RenderError, write_report

    rendered = True
    if markdown_path is None:
        if not args.json:
            print(report.markdown)
    else:
        try:
            write_report(report.markdown, markdown_path, "md")
            console.print(f"report written to {markdown_path}")
        except OSError:  # checked before the run, yet failed now: keep the report elsewhere
            markdown_path = write_with_fallback(report.markdown, markdown_path)
            rendered = False
    if rendered_path is not None:
        try:
            write_report(report.markdown, rendered_path, fmt)  # type: ignore[arg-type]
            console.print(f"report written to {rendered_path}")
        except (RenderError, OSError) as exc:
            rendered = False
            console.print(
                f"[red]error:[/] could not write {rendered_path} ({exc}); the Markdown report "
                f"is in {markdown_path}"
            )
    return rendered


def _summary_json(report: Report) -> dict[str, Any]:
    return {
        "status": report.status,
        "markdown": report.markdown,
        "detail": report.detail,
        "title": report.title,
        "sources": [
            {"number": s.number, "location": s.location, "title": s.title, "quotes": s.quotes}
            for s in report.sources
        ],
        "issues": [
            {"kind": i.kind, "number": i.number, "text": i.text, "detail": i.detail}
            for i in report.issues
        ],
        "timings": report.timings,
        "usage": {
            "requests": report.usage.requests,
            "prompt_tokens": report.usage.prompt_tokens,
            "completion_tokens": report.usage.completion_tokens,
            "cached_tokens": report.usage.cached_tokens,
        },
    }


class _ProgressDisplay:
    """A rich progress display: one bar over the stages, one over the researchers."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        from q3agent.research.progress import STAGES

        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
        )
        self.stages = self.progress.add_task("", total=len(STAGES), label="stages")
        self.researchers = self.progress.add_task("", total=None, label="researchers",
                                                  visible=False)  # fmt: skip
        self.started = 0
        self.finished = 0
        self.stage = "starting"
        self.began = time.monotonic()
        self.last_line = self.began

    async def heartbeat(self, every: float = 15.0) -> None:
        """A plain line on stderr after ``every`` quiet seconds (a long model call is not a
        hang): the stage waited on, researchers done, time so far."""
        import anyio

        while True:
            await anyio.sleep(every)
            now = time.monotonic()
            if now - self.last_line >= every:
                researchers = (
                    f", {self.finished}/{self.started} researchers done" if self.started else ""
                )
                self.console.print(
                    f"  waiting for the model: {self.stage}{researchers}, "
                    f"{now - self.began:.0f} s so far",
                    style="dim",
                )
                self.last_line = now

    def __enter__(self) -> _ProgressDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, event: ResearchEvent) -> None:
        from rich.markup import escape

        from q3agent.research.progress import (
            ResearcherFinished,
            ResearcherStarted,
            SourceAdded,
            StageFinished,
            StageStarted,
            WrapUp,
            describe,
        )

        self.last_line = time.monotonic()
        if isinstance(event, StageStarted):
            self.stage = event.stage
            self.progress.update(self.stages, description=event.stage)
        elif isinstance(event, StageFinished):
            self.progress.advance(self.stages)
            mark = "[red]✗[/]" if event.failed else "[green]✓[/]"
            self.console.print(f"{mark} {escape(describe(event))}")
        elif isinstance(event, ResearcherStarted):
            self.started += 1
            self.progress.update(
                self.researchers, total=self.started, visible=True,
                description=escape(event.question[:60]),
            )  # fmt: skip
        elif isinstance(event, ResearcherFinished):
            self.finished += 1
            self.progress.advance(self.researchers)
            self.console.print(f"  {escape(describe(event))}")
        elif isinstance(event, SourceAdded):
            self.console.print(f"  [dim]{escape(describe(event))}[/]")
        elif isinstance(event, WrapUp):
            self.console.print(f"[yellow]{escape(describe(event))}[/]")
