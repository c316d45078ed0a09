"""The ``research`` tool of ``q3agent serve-mcp``: a report for a question, with MCP progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from q3agent.research.pipeline import ResearchAgent
from q3agent.research.progress import (
    STAGES,
    ReportReady,
    ResearcherFinished,
    ResearchEvent,
    StageFinished,
    describe,
)

ProgressCallback = Callable[[float, float | None, str], Awaitable[None] | None]
"""``(progress, total, message)``, as MCP's ``ctx.report_progress`` takes them."""


async def research_tool(
    question: str,
    progress_cb: ProgressCallback | None = None,
    *,
    agent: ResearchAgent | None = None,
    **options: Any,
) -> str:
    """Research ``question`` and return the report's Markdown, reporting progress as it goes.

    Progress runs from 0 to the number of stages (9); each finished stage adds one and each
    finished researcher a share of the research stage. ``agent`` is the configured
    :class:`ResearchAgent` (the server's model and sources); without one, ``options`` are
    passed to ``ResearchAgent(...)``.
    """
    research = agent if agent is not None else ResearchAgent(**options)
    total = float(len(STAGES))
    done = 0.0
    researchers_done = 0

    async def on_event(event: ResearchEvent) -> None:
        nonlocal done, researchers_done
        if isinstance(event, StageFinished):
            done = float(STAGES.index(event.stage) + 1)
        elif isinstance(event, ReportReady):
            done = total
        elif isinstance(event, ResearcherFinished):
            researchers_done += 1
            done = STAGES.index("research") + min(0.9, researchers_done / 10)
        if progress_cb is None:
            return
        result = progress_cb(done, total, describe(event))
        if result is not None:
            await result

    report = await research.arun(question, on_event=on_event)
    return report.markdown
