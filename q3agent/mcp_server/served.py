"""The served agent and its ``ask`` run: progress per step, the answer and its sources.

:class:`ServedAgent` holds the agent behind ``ask`` and the optional RAG pieces and research
agent behind the other tools; :func:`run_ask` runs one ``ask`` task (refusing tasks over
``max_task_tokens`` before the agent starts) and returns an :class:`AskResult`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, Field

from q3agent.mcp_server.grants import ReadPolicy

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from q3agent.agent import Agent, AgentSession
    from q3agent.rag import CitationBank, Retriever
    from q3agent.rag.ingest import Ingestor
    from q3agent.result import RunResult

__all__ = [
    "DEFAULT_MAX_TASK_TOKENS",
    "AskResult",
    "AskSource",
    "ServedAgent",
    "TaskTooLong",
    "check_task_size",
    "progress_tracker",
    "render_ask",
    "run_ask",
]

DEFAULT_MAX_TASK_TOKENS = 16_000
"""Largest ``ask`` task, in tokens, unless the operator sets ``--max-task-tokens``."""

_MAX_CHARS_PER_TOKEN = 16
"""Only a task's first ``limit * 16`` characters are tokenized to find that it is too long."""

Progress = Callable[[float, float | None, str], Awaitable[None]]
"""Sends one progress notification: ``(progress, total, message)``."""


class AskSource(BaseModel):
    """Something the answer is based on: a cited document or a tool call the agent made."""

    kind: Literal["document", "tool"]
    ref: str
    """``[n]`` citation number for documents, the tool name for tool calls."""
    location: str = ""
    """Document path or URL, or the tool call's arguments as JSON."""
    title: str = ""
    excerpt: str = ""
    """The start of the cited passage or of the tool's result."""


class AskResult(BaseModel):
    """What the ``ask`` tool returns (as structured content; the text is a readable version)."""

    answer: str
    status: str = Field(
        description="answer, truncated (cut at max_tokens), step_limit, usage_limit, cancelled "
        "or error"
    )
    sources: list[AskSource] = Field(default_factory=list)
    steps: int = 0
    detail: str = ""


@dataclass
class ServedAgent:
    """The agent behind ``ask`` and the optional RAG pieces behind ``rag_*`` and citations."""

    agent: Agent
    retriever: Retriever | None = None
    ingestor: Ingestor | None = None
    research: Any = None
    """A :class:`q3agent.research.ResearchAgent` behind the ``research`` tool, or ``None``."""
    read_policy: ReadPolicy = field(default_factory=ReadPolicy)
    """What ``rag_ingest`` may read; with nothing granted, ``rag_ingest`` is not served."""
    max_task_tokens: int = DEFAULT_MAX_TASK_TOKENS
    """Longest ``ask`` task in tokens; longer ones are refused before the agent starts."""
    excerpt_chars: int = 300
    closers: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)

    async def aclose(self) -> None:
        """Close the agent's runtime and the store (MCP servers are closed after each run)."""
        await self.agent.aclose()
        for close in self.closers:
            outcome = close()
            if inspect.isawaitable(outcome):
                await outcome


def _excerpt(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_tracker(ctx: Context) -> Progress:
    """Progress values must increase; this keeps them increasing whatever the caller sends."""
    last = [-1.0]

    async def report(progress: float, total: float | None, message: str) -> None:
        value = max(progress, last[0] + 0.01)
        last[0] = value
        await ctx.report_progress(value, total, message)

    return report


class TaskTooLong(ValueError):
    """An ``ask`` task has more tokens than the server accepts."""


async def check_task_size(served: ServedAgent, task: str) -> None:
    """Raise :class:`TaskTooLong` when ``task`` exceeds ``served.max_task_tokens``.

    Tokenizing runs in a worker thread and covers at most the first ``limit * 16`` characters,
    so a multi-megabyte task costs a bounded amount of time and memory and never blocks the
    server's event loop.
    """
    limit = served.max_task_tokens
    if len(task) <= limit:  # a token is at least one character
        return
    tokenizer = await anyio.to_thread.run_sync(lambda: served.agent.runtime.tokenizer)
    head = task[: limit * _MAX_CHARS_PER_TOKEN + 1]
    count = await anyio.to_thread.run_sync(tokenizer.count, head)
    if count > limit or len(head) < len(task):
        shown = f"{count:,}" if len(head) == len(task) else f"more than {limit:,}"
        raise TaskTooLong(
            f"the task is {shown} tokens ({len(task):,} characters); this server accepts at most "
            f"{limit:,}. Shorten it, or put long material in documents the agent can search."
        )


async def run_ask(served: ServedAgent, task: str, ctx: Context | None = None) -> AskResult:
    """Run the served agent on ``task``, reporting progress to ``ctx``; the answer and sources.

    Raises :class:`TaskTooLong` before the agent starts when the task is over the token limit.
    """
    await check_task_size(served, task)
    session = served.agent.session()
    bank = None
    if served.retriever is not None:
        from q3agent.rag import CitationBank, make_rag_search_tool

        bank = CitationBank()
        session.add_tools([make_rag_search_tool(served.retriever, bank)])
    report = progress_tracker(ctx) if ctx is not None else None
    total = float(served.agent.max_steps)
    result, tool_sources = await _stream_run(
        session, task, report, total, excerpt_chars=served.excerpt_chars, cites=bank is not None
    )
    _fill_tool_arguments(result, tool_sources)
    sources = _document_sources(bank, served.excerpt_chars) if bank is not None else []
    sources.extend(tool_sources)
    if report is not None:
        await report(total, total, f"done ({result.status})")
    return AskResult(
        answer=result.answer,
        status=result.status,
        sources=sources,
        steps=len(result.steps),
        detail=result.detail,
    )


async def _stream_run(
    session: AgentSession,
    task: str,
    report: Progress | None,
    total: float,
    *,
    excerpt_chars: int,
    cites: bool,
) -> tuple[RunResult, list[AskSource]]:
    """Stream the run, reporting each step and tool call; its result and the tools it used.

    With ``cites``, ``rag_search`` results are cited documents rather than tool sources.
    """
    from q3agent.events import FinalResult, StepStart, ToolCallEvent, ToolResultEvent
    from q3agent.qwen3.messages import ToolCall

    result = None
    tool_sources: list[AskSource] = []
    async for event in session.stream(task):
        if isinstance(event, StepStart) and report is not None:
            await report(float(event.step), total, f"step {event.step + 1}: model is working")
        elif isinstance(event, ToolCallEvent) and isinstance(event.call, ToolCall):
            if report is not None:
                await report(event.step + 0.5, total, f"calling {event.call.name}")
        elif isinstance(event, ToolResultEvent) and not event.result.is_error:
            name = event.result.name or "tool"
            if not cites or name != "rag_search":
                tool_sources.append(AskSource(kind="tool", ref=name))
                tool_sources[-1].excerpt = _excerpt(event.result.content, excerpt_chars)
        elif isinstance(event, FinalResult):
            result = event.result
    assert result is not None
    return result, tool_sources


def _fill_tool_arguments(result: RunResult, tool_sources: list[AskSource]) -> None:
    """Give each tool source the arguments of the call it came from (as JSON), in call order."""
    calls = {c.id: c for c in result.tool_calls}
    for step in result.steps:
        for tool_result in step.tool_results:
            call = calls.get(tool_result.call_id)
            for source in tool_sources:
                if source.ref == tool_result.name and not source.location and call is not None:
                    source.location = json.dumps(call.arguments, ensure_ascii=False)
                    break


def _document_sources(bank: CitationBank, excerpt_chars: int) -> list[AskSource]:
    """The documents the answer cited, numbered as in the answer, each with an excerpt."""
    sources: list[AskSource] = []
    for cited in bank.sources():
        first = cited.passages[0].text if cited.passages else ""
        sources.append(
            AskSource(
                kind="document",
                ref=f"[{cited.number}]",
                location=cited.location,
                title=cited.title,
                excerpt=_excerpt(first, excerpt_chars),
            )
        )
    return sources


def render_ask(result: AskResult) -> str:
    """The text content of an ``ask`` result: the answer, then a list of sources."""
    lines = [result.answer.strip() or f"(no answer: {result.status}; {result.detail})"]
    if result.status != "answer" and result.answer.strip():
        lines.append(f"\n(run ended with status {result.status}: {result.detail})")
    if result.sources:
        lines.append("\nSources:")
        for source in result.sources:
            if source.kind == "document":
                label = source.title or source.location
                where = f" — {source.location}" if source.location != label else ""
                lines.append(f"{source.ref} {label}{where}")
            else:
                lines.append(f"- tool {source.ref}({source.location})")
    return "\n".join(lines)
