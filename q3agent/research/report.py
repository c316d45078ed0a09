"""What a research run returns: the Markdown report, its sources, sections, usage and timings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from q3agent.research.citations import CitationIssue, ReportSource
from q3agent.research.evidence import EvidenceItem, RejectedNote
from q3agent.research.render import ReportFormat, to_html, write_report
from q3agent.types import Usage

ReportStatus = Literal["complete", "partial", "cancelled", "error"]
"""``complete``: every stage ran; ``partial``: a budget (calls, tokens, wall time) cut the run
short and the report was written from what was gathered; ``cancelled``: the caller cancelled;
``error``: a runtime failed (``detail`` says how)."""


@dataclass(frozen=True, slots=True)
class ReportSection:
    """One ``##`` section of the final report, as checked Markdown."""

    title: str
    markdown: str


@dataclass
class Report:
    """A research report: Markdown (the source of truth), sources, and how it was made."""

    question: str
    title: str
    markdown: str
    sources: list[ReportSource]
    sections: list[ReportSection]
    usage: Usage
    timings: dict[str, float]
    """Seconds per stage (``plan``, ``research``, ``write`` …) and ``total``."""
    status: ReportStatus = "complete"
    detail: str = ""
    brief: str = ""
    subquestions: list[str] = field(default_factory=list)
    evidence: list[EvidenceItem] = field(default_factory=list)
    """Verified notes (quote found in the source's retrieved text)."""
    rejected: list[RejectedNote] = field(default_factory=list)
    """Notes whose quote could not be verified, kept out of the report."""
    issues: list[CitationIssue] = field(default_factory=list)
    """What the citation check removed or flagged."""

    @property
    def complete(self) -> bool:
        """Whether every stage ran to the end."""
        return self.status == "complete"

    @property
    def citations(self) -> list[int]:
        """Every ``[n]`` in the report body, in order of appearance."""
        body = re.split(r"(?m)^## Sources\s*$", self.markdown)[0]
        return [int(n) for n in re.findall(r"\[(\d+)\](?![(:])", body)]

    def to_html(self) -> str:
        """The report as a standalone HTML page."""
        return to_html(self.markdown, title=self.title)

    def write(self, path: str | Path, fmt: ReportFormat | None = None) -> Path:
        """Write the report as Markdown, HTML or PDF (default: chosen by the file suffix)."""
        return write_report(self.markdown, path, fmt)

    def summary(self) -> str:
        """A few lines on the run: status, sources, notes, issues, calls and time."""
        lines = [
            f"status: {self.status}" + (f" ({self.detail})" if self.detail else ""),
            f"sources cited: {len(self.sources)}; verified notes: {len(self.evidence)}; "
            f"rejected notes: {len(self.rejected)}; citation issues: {len(self.issues)}",
            f"model calls: {self.usage.requests}; tokens: {self.usage.total_tokens:,} "
            f"({self.usage.cached_tokens:,} cached)",
            "time: "
            + ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in self.timings.items()),
        ]
        return "\n".join(lines)
