"""The whole research pipeline over fixture documents and local web pages, end to end.

A :class:`ResearchFixtureRuntime` stands in for the model; everything else is real: the agent
loop and Qwen3 prompt format, Chroma with MiniLM retrieval, httpx against a 127.0.0.1 server,
the evidence bank, the citation check and the renderers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pypdf
import pytest

from q3agent.research import (
    ReportReady,
    ResearchAgent,
    ResearchBudget,
    ResearcherFinished,
    ResearcherStarted,
    ResearchEvent,
    ResearchFixtureRuntime,
    ResearchOptions,
    SectionWritten,
    StageFinished,
    research_tool,
)
from q3agent.research.evidence import normalize_text
from q3agent.research.report import Report

FIXTURES = Path(__file__).parent / "fixtures"
DOCS = FIXTURES / "docs"
PAGES = FIXTURES / "pages"

pytestmark = pytest.mark.anyio


def make_agent(retriever: Any, pages_url: str, **kwargs: Any) -> ResearchAgent:
    runtime = kwargs.pop("runtime", None) or ResearchFixtureRuntime()
    fields = ResearchOptions.__dataclass_fields__
    options = ResearchOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in fields})
    return ResearchAgent(
        None,
        runtime=runtime,
        retriever=retriever,
        web=True,
        urls=[f"{pages_url}/index.html"],
        options=options,
        **kwargs,
    )


def assert_citations_resolve(report: Report, pages_url: str) -> None:
    """Every [n] names a listed source whose verified quote occurs in its fixture file."""
    assert report.citations, "the report cites nothing"
    numbers = {s.number for s in report.sources}
    assert set(report.citations) == numbers
    assert sorted(numbers) == list(range(1, len(numbers) + 1))  # no gaps
    for source in report.sources:
        if source.location.startswith(pages_url):
            raw = (PAGES / source.location.rsplit("/", 1)[1]).read_text()
            raw = re.sub(r"<[^>]+>", " ", raw)
        else:
            assert Path(source.location).parent == DOCS
            raw = Path(source.location).read_text()
        assert source.quotes
        for quote in source.quotes:
            assert normalize_text(quote) in normalize_text(raw)


async def test_pipeline_writes_a_report_whose_citations_resolve_to_fixture_sources(
    retriever: Any, pages_url: str, question: str, tmp_path: Path
) -> None:
    events: list[ResearchEvent] = []
    agent = make_agent(retriever, pages_url)
    report = await agent.arun(question, on_event=events.append)

    assert report.status == "complete", report.detail
    assert_citations_resolve(report, pages_url)
    assert not report.issues and not report.rejected
    locations = [s.location for s in report.sources]
    assert any(loc.endswith("aurora.md") for loc in locations)
    assert f"{pages_url}/cirrus.html" in locations  # found by following a link
    assert not any(loc.endswith("unrelated.md") for loc in locations)
    titles = [s.title for s in report.sections]
    assert titles[0] == "Summary" and titles[-1] == "Sources"
    assert {"Aurora", "Borealis", "Cirrus", "Comparison at a glance"} <= set(titles)
    comparison = next(s for s in report.sections if s.title == "Comparison at a glance")
    assert "| Cirrus |" in comparison.markdown and "9.5 ms" in comparison.markdown
    assert report.subquestions and len(report.subquestions) == 3
    assert report.usage.requests == len(agent.runtime.requests)  # type: ignore[attr-defined]
    stages = [e.stage for e in events if isinstance(e, StageFinished)]
    assert stages == ["clarify", "brief", "plan", "ingest", "research", "outline", "write",
                      "synthesis"]  # fmt: skip
    assert set(report.timings) >= {*stages, "citations", "total"}
    assert isinstance(events[-1], ReportReady) and events[-1].report is report
    assert sum(isinstance(e, SectionWritten) for e in events) == 4

    html_path = report.write(tmp_path / "report.html")
    pdf_path = report.write(tmp_path / "report.pdf")
    html = html_path.read_text()
    pdf_text = "\n".join(p.extract_text() for p in pypdf.PdfReader(pdf_path).pages)
    for section in report.sections:
        assert f"<h2>{section.title}</h2>" in html
        assert section.title in pdf_text
    assert html.count("<table>") == 1 and "<th>Reported finding</th>" in html
    assert "Reported finding" in pdf_text and "9.5 ms" in pdf_text


async def test_a_fabricated_citation_is_caught(
    retriever: Any, pages_url: str, question: str
) -> None:
    agent = make_agent(retriever, pages_url, runtime=ResearchFixtureRuntime(fabricate=True))
    report = await agent.arun(question)
    assert 42 in [i.number for i in report.issues if i.kind == "unknown_source"]
    assert "[42]" not in report.markdown
    assert "99.999% uptime guarantee across vendors *(unverified)*" in report.markdown
    assert_citations_resolve(report, pages_url)


async def test_researchers_run_in_parallel_within_the_bound(
    retriever: Any, pages_url: str, question: str
) -> None:
    runtime = ResearchFixtureRuntime(latency=0.05)
    agent = make_agent(retriever, pages_url, runtime=runtime, max_researchers=2, max_subquestions=3)
    active = peak = 0

    def track(event: ResearchEvent) -> None:
        nonlocal active, peak
        if isinstance(event, ResearcherStarted):
            active += 1
            peak = max(peak, active)
        elif isinstance(event, ResearcherFinished):
            active -= 1

    report = await agent.arun(question, on_event=track)
    assert report.status == "complete"
    assert peak == 2
    assert runtime.peak["researcher"] == 2  # model calls of two researchers overlapped
    assert runtime.calls["compress"] == 3


async def test_cancelling_returns_the_partial_report(
    retriever: Any, pages_url: str, question: str
) -> None:
    runtime = ResearchFixtureRuntime(latency=0.02)
    agent = make_agent(retriever, pages_url, runtime=runtime, max_researchers=1)
    cancel = anyio.Event()

    def stop_after_first_researcher(event: ResearchEvent) -> None:
        if isinstance(event, ResearcherFinished):
            cancel.set()

    report = await agent.arun(question, cancel=cancel, on_event=stop_after_first_researcher)
    assert report.status == "cancelled"
    assert "Cancelled report" in report.markdown
    assert runtime.calls["section"] == 0  # nothing was written by the model after the cancel
    assert 1 <= len({e.subquestion for e in report.evidence}) < 3
    assert any(s.title.startswith("Findings:") for s in report.sections)
    assert_citations_resolve(report, pages_url)


async def test_a_cancel_during_the_first_model_calls_counts_those_calls(
    retriever: Any, pages_url: str, question: str
) -> None:
    runtime = ResearchFixtureRuntime(latency=600)  # the first call would take ten minutes
    agent = make_agent(retriever, pages_url, runtime=runtime)
    cancel = anyio.Event()

    async def cancel_once_the_model_is_called() -> None:
        while not runtime.requests:  # noqa: ASYNC110 - polling the runtime's public record
            await anyio.sleep(0.01)
        cancel.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_once_the_model_is_called)
            report = await agent.arun(question, cancel=cancel)
    assert report.status == "cancelled"
    ran = runtime.requests  # every call that had started when the cancel came
    assert report.usage.requests == len(ran) >= 1
    assert report.usage.prompt_tokens == sum(len(r.prompt_ids) for r in ran) > 0


async def test_cancelling_the_task_raises_with_the_partial_report(
    retriever: Any, pages_url: str, question: str
) -> None:
    from q3agent.research import ResearchCancelledError

    agent = make_agent(retriever, pages_url, runtime=ResearchFixtureRuntime(latency=0.05))
    partial: list[Report] = []

    async def run() -> None:
        try:
            await agent.arun(question)
        except ResearchCancelledError as exc:
            partial.append(exc.report)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()
    assert [r.status for r in partial] == ["cancelled"]
    assert partial[0].markdown.startswith("# ")


async def test_a_call_budget_forces_a_wrap_up_and_a_partial_report(
    retriever: Any, pages_url: str, question: str
) -> None:
    runtime = ResearchFixtureRuntime()
    agent = make_agent(
        retriever,
        pages_url,
        runtime=runtime,
        max_researchers=1,
        budget=ResearchBudget(max_llm_calls=16, reserve_calls=2),
    )
    report = await agent.arun(question)
    assert report.status == "partial"
    assert "model calls" in report.detail
    assert report.usage.requests <= 16
    assert report.evidence  # what was verified before the wrap-up is reported
    assert_citations_resolve(report, pages_url)


async def test_stream_yields_progress_and_ends_with_the_report(
    retriever: Any, pages_url: str, question: str
) -> None:
    agent = make_agent(retriever, pages_url)
    kinds = [event.kind async for event in agent.stream(question)]
    assert kinds[0] == "stage_started" and kinds[-1] == "report_ready"
    assert kinds.count("researcher_started") == 3 and "source_added" in kinds


async def test_research_tool_reports_mcp_progress(
    retriever: Any, pages_url: str, question: str
) -> None:
    progress: list[tuple[float, float | None, str]] = []

    async def progress_cb(done: float, total: float | None, message: str) -> None:
        progress.append((done, total, message))

    markdown = await research_tool(question, progress_cb, agent=make_agent(retriever, pages_url))
    assert markdown.startswith("# Research report:") and "## Sources" in markdown
    values = [p[0] for p in progress]
    assert values == sorted(values) and values[-1] == progress[-1][1]
    assert any("researcher" in p[2] for p in progress)


async def test_docs_folder_is_ingested_for_the_run() -> None:
    agent = ResearchAgent(None, runtime=ResearchFixtureRuntime(), docs=[DOCS])
    try:
        report = await agent.arun("What do Aurora and Borealis cost per month?")
    finally:
        await agent.aclose()
    assert report.status == "complete"
    assert {Path(s.location).name for s in report.sources} == {"aurora.md", "borealis.md"}


def test_no_sources_is_an_error_that_says_what_to_pass(question: str) -> None:
    agent = ResearchAgent(None, runtime=ResearchFixtureRuntime())
    with pytest.raises(ValueError, match="no sources"):
        agent.run(question)


async def test_stage_lines_count_in_words_and_a_failed_stage_is_not_done() -> None:
    from q3agent.research.progress import describe
    from q3agent.testing.runtimes import ScriptedRuntime

    events: list[ResearchEvent] = []
    agent = ResearchAgent(None, runtime=ResearchFixtureRuntime(), docs=[DOCS])
    try:
        await agent.arun("What does Aurora cost per month?", on_event=events.append)
    finally:
        await agent.aclose()
    plan = next(e for e in events if isinstance(e, StageFinished) and e.stage == "plan")
    assert plan.detail == "1 sub-question" and not plan.failed

    events.clear()
    failing = ResearchAgent(None, runtime=ScriptedRuntime(["A brief."]), docs=[DOCS])
    with pytest.raises(Exception, match="script is used up"):
        await failing.arun("What does Aurora cost per month?", on_event=events.append)
    await failing.aclose()
    finished = [e for e in events if isinstance(e, StageFinished)]
    assert [(e.stage, e.failed) for e in finished] == [
        ("clarify", False), ("brief", False), ("plan", True)
    ]  # fmt: skip
    assert describe(finished[-1]).startswith("plan: stopped after")


def test_an_unknown_model_fails_at_construction_not_mid_run() -> None:
    from q3agent.qwen3.models import UnknownModelError

    with pytest.raises(UnknownModelError, match="capability"):
        ResearchAgent("Qwen3-9B", docs=[DOCS])
    assert ResearchAgent("Qwen3-4B-Instruct-2507", docs=[DOCS]).capability == "non_thinking"


def test_sync_runs_share_one_loop_and_close_releases_it() -> None:
    agent = ResearchAgent(None, runtime=ResearchFixtureRuntime(), docs=[DOCS])
    try:
        first = agent.run("What do Aurora and Borealis cost per month?")
        second = agent.run("What does Aurora cost per month?")
    finally:
        agent.close()
    assert first.status == "complete" and second.status == "complete"
