"""Deep research on top of the agent: plan, research in parallel, write cited reports.

``ResearchAgent(model, docs=[...], web=True).run(question)`` returns a :class:`Report` whose
every ``[n]`` resolves to a verified quote from a retrieved source. Importing this package is
cheap; the RAG store, httpx and the renderers load when a run needs them.
"""

from q3agent.research.citations import CitationCheck, CitationIssue, ReportSource, check_report
from q3agent.research.evidence import EvidenceBank, EvidenceItem, RejectedNote
from q3agent.research.fixture_runtime import ResearchFixtureRuntime
from q3agent.research.mcp_tool import research_tool
from q3agent.research.pipeline import (
    BudgetExhaustedError,
    OutlineSection,
    ResearchAgent,
    ResearchBudget,
    ResearchCancelledError,
    ResearchOptions,
    SubQuestion,
)
from q3agent.research.progress import (
    ReportReady,
    ResearcherFinished,
    ResearcherStarted,
    ResearchEvent,
    SectionWritten,
    SourceAdded,
    StageFinished,
    StageStarted,
    WrapUp,
    describe,
)
from q3agent.research.render import (
    RenderError,
    normalize_tables,
    to_html,
    to_pdf,
    write_report,
)
from q3agent.research.report import Report, ReportSection
from q3agent.research.tools import FetchedPage, HttpxFetcher, MCPFetcher, make_fetch_tool

__all__ = [
    "BudgetExhaustedError",
    "CitationCheck",
    "CitationIssue",
    "EvidenceBank",
    "EvidenceItem",
    "FetchedPage",
    "HttpxFetcher",
    "MCPFetcher",
    "OutlineSection",
    "RejectedNote",
    "RenderError",
    "Report",
    "ReportReady",
    "ReportSection",
    "ReportSource",
    "ResearchAgent",
    "ResearchBudget",
    "ResearchCancelledError",
    "ResearchEvent",
    "ResearchFixtureRuntime",
    "ResearchOptions",
    "ResearcherFinished",
    "ResearcherStarted",
    "SectionWritten",
    "SourceAdded",
    "StageFinished",
    "StageStarted",
    "SubQuestion",
    "WrapUp",
    "check_report",
    "describe",
    "make_fetch_tool",
    "normalize_tables",
    "research_tool",
    "to_html",
    "to_pdf",
    "write_report",
]
