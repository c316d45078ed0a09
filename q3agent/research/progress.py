"""Progress events of a deep-research run, from the first stage to the finished report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from q3agent.research.report import Report

Stage = Literal[
    "clarify",
    "brief",
    "plan",
    "ingest",
    "research",
    "outline",
    "write",
    "synthesis",
    "citations",
]
"""The pipeline's stages in order; ``ingest`` builds the document index (when ``docs`` are
given), ``research`` covers the researchers and their notes."""

STAGES: tuple[Stage, ...] = (
    "clarify",
    "brief",
    "plan",
    "ingest",
    "research",
    "outline",
    "write",
    "synthesis",
    "citations",
)


@dataclass(frozen=True, slots=True)
class StageStarted:
    """A stage begins."""

    stage: Stage
    kind: Literal["stage_started"] = "stage_started"


@dataclass(frozen=True, slots=True)
class StageFinished:
    """A stage ended (or was skipped); ``detail`` says what it produced."""

    stage: Stage
    seconds: float
    detail: str = ""
    failed: bool = False
    """The stage did not finish: an error, a budget or a cancellation stopped it."""
    kind: Literal["stage_finished"] = "stage_finished"


@dataclass(frozen=True, slots=True)
class ResearcherStarted:
    """A researcher took a slot and began on its sub-question."""

    index: int
    question: str
    kind: Literal["researcher_started"] = "researcher_started"


@dataclass(frozen=True, slots=True)
class ResearcherFinished:
    """A researcher's findings were compressed into notes in the evidence bank."""

    index: int
    question: str
    notes: int
    rejected: int
    status: str
    seconds: float
    kind: Literal["researcher_finished"] = "researcher_finished"


@dataclass(frozen=True, slots=True)
class SourceAdded:
    """A new source (document or web page) entered the evidence bank."""

    number: int
    location: str
    title: str
    kind: Literal["source_added"] = "source_added"


@dataclass(frozen=True, slots=True)
class SectionWritten:
    """A section of the report was written."""

    index: int
    title: str
    kind: Literal["section_written"] = "section_written"


@dataclass(frozen=True, slots=True)
class WrapUp:
    """A budget or the context limit forced the run to stop researching and write up."""

    reason: str
    kind: Literal["wrap_up"] = "wrap_up"


@dataclass(frozen=True, slots=True)
class ReportReady:
    """The run ended; ``report.status`` says whether it is complete or partial."""

    report: Report
    kind: Literal["report_ready"] = "report_ready"


ResearchEvent = (
    StageStarted
    | StageFinished
    | ResearcherStarted
    | ResearcherFinished
    | SourceAdded
    | SectionWritten
    | WrapUp
    | ReportReady
)
"""Any event of :meth:`q3agent.research.ResearchAgent.stream`; switch on ``event.kind``."""

EventCallback = Callable[[ResearchEvent], Awaitable[None] | None]
"""Receives each event as it happens (sync or async)."""


def describe(event: ResearchEvent) -> str:
    """One human-readable line for an event (progress displays, MCP progress messages)."""
    if isinstance(event, StageStarted):
        return f"{event.stage}: started"
    if isinstance(event, StageFinished):
        extra = f" ({event.detail})" if event.detail else ""
        verb = "stopped after" if event.failed else "done in"
        return f"{event.stage}: {verb} {event.seconds:.1f}s{extra}"
    if isinstance(event, ResearcherStarted):
        return f"researcher {event.index + 1}: {event.question}"
    if isinstance(event, ResearcherFinished):
        return (
            f"researcher {event.index + 1} finished ({event.status}): {event.notes} notes, "
            f"{event.rejected} rejected, {event.seconds:.1f}s"
        )
    if isinstance(event, SourceAdded):
        return f"source [{event.number}] {event.title or event.location}"
    if isinstance(event, SectionWritten):
        return f"section {event.index + 1} written: {event.title}"
    if isinstance(event, WrapUp):
        return f"wrapping up: {event.reason}"
    return f"report ready ({event.report.status}): {len(event.report.sources)} sources"
