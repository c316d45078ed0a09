"""The tools ``serve-mcp`` offers: ``ask``, ``rag_search``, ``rag_ingest`` and ``research``.

:func:`add_served_tools` adds to an MCP server the tools a :class:`ServedAgent` can back:
``ask`` always; ``rag_search`` with a retriever; ``rag_ingest`` with an ingestor and a read
grant (:class:`~q3agent.mcp_server.grants.ReadPolicy`); ``research`` with a research agent.
A tool's unexpected failure reaches the client as one line with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import anyio
import mcp_types
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError as ServerToolError
from pydantic import Field

from q3agent.mcp_server.served import (
    AskResult,
    ServedAgent,
    TaskTooLong,
    progress_tracker,
    render_ask,
    run_ask,
)

# The tool functions below are introspected by the MCP SDK, which resolves their (string)
# annotations in this module's globals: Context, mcp_types, Annotated and Field must live here.

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer as SDKServer

    from q3agent.mcp_server.grants import ReadPolicy
    from q3agent.rag import Retriever
    from q3agent.rag.ingest import Ingestor

__all__ = ["add_served_tools", "served_instructions"]


def served_instructions(served: ServedAgent) -> str:
    """The server's instructions to clients: which tools it offers and what each is for."""
    instructions = (
        "q3agent runs a Qwen3 agent with its own tools. Call `ask` with a self-contained task; "
        "it returns the answer and the sources it used."
    )
    if served.retriever is not None:
        instructions += " `rag_search` searches the document store."
    if served.ingestor is not None and served.read_policy.allows_anything:
        instructions += " `rag_ingest` adds documents from the folders and URLs it may read."
    return instructions


def add_served_tools(server: SDKServer[Any], served: ServedAgent) -> None:
    """Add every tool ``served`` can back to ``server``."""
    add_ask_tool(server, served)
    if served.retriever is not None:
        add_rag_search_tool(server, served.retriever)
    if served.ingestor is not None and served.read_policy.allows_anything:
        policy = served.read_policy
        if policy.url_prefixes:
            served.ingestor.http_client = policy.http_client()
            served.closers.append(served.ingestor.http_client.close)
        add_rag_ingest_tool(server, served.ingestor, policy)
    if served.research is not None:
        add_research_tool(server, served.research)


def _failed(what: str, exc: BaseException) -> str:
    """One line for a served tool's unexpected failure: what failed and the exception's words.

    (The MCP SDK would otherwise send only "Error executing tool NAME", without the reason.)
    """
    words = " ".join(str(exc).split()).rstrip(".") or "no message"
    return f"{what} failed: {type(exc).__name__}: {words}"


def add_ask_tool(server: SDKServer[Any], served: ServedAgent) -> None:
    """``ask(task)``: run the served agent; the answer as text and as an :class:`AskResult`."""

    async def ask(
        task: Annotated[str, Field(description="The task or question, self-contained.")],
        ctx: Context,
    ) -> Annotated[mcp_types.CallToolResult, AskResult]:
        """Run the q3agent agent on a task; returns its answer and the sources it used.

        The agent may think, call its tools and search its documents over several steps;
        progress notifications report each step.
        """
        try:
            result = await run_ask(served, task, ctx)
        except TaskTooLong as exc:
            raise ServerToolError(str(exc)) from exc
        except Exception as exc:
            raise ServerToolError(
                f"the agent failed: {type(exc).__name__}: {str(exc).rstrip('.')}. Check the "
                "server's model and runtime configuration."
            ) from exc
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text=render_ask(result))],
            structured_content=result.model_dump(mode="json"),
            is_error=result.status == "error",
        )

    server.add_tool(ask, name="ask")


def add_rag_search_tool(server: SDKServer[Any], retriever: Retriever) -> None:
    """``rag_search(query, k)``: the best passages of the document store with their sources."""

    async def rag_search(
        query: Annotated[str, Field(description="A question or keywords.")],
        k: Annotated[int, Field(ge=1, le=50, description="How many passages.")] = 5,
    ) -> dict[str, list[dict[str, Any]]]:
        """Search the document store; returns the best passages with their sources."""
        try:
            passages = await retriever.asearch(query, k)
        except Exception as exc:
            raise ServerToolError(_failed("the search", exc)) from exc
        return {
            "passages": [
                {
                    "n": i,
                    "source": p.source,
                    "title": p.title,
                    "section": p.section,
                    "page": p.page,
                    "score": round(p.score, 4),
                    "text": p.text,
                }
                for i, p in enumerate(passages, 1)
            ]
        }

    server.add_tool(rag_search, name="rag_search")


def add_rag_ingest_tool(server: SDKServer[Any], ingestor: Ingestor, policy: ReadPolicy) -> None:
    """``rag_ingest(sources)``: add the files and URLs ``policy`` allows, progress per source."""

    async def rag_ingest(
        sources: Annotated[
            list[str], Field(description="File paths, folders or URLs to add.", min_length=1)
        ],
        ctx: Context,
    ) -> dict[str, Any]:
        """Add documents to the store (new or changed ones are re-embedded).

        Only files under the folders, and URLs under the prefixes, that the server was
        started with can be added; anything else is listed under ``failed``.
        """
        allowed, refused = await anyio.to_thread.run_sync(policy.expand, sources)
        if not allowed:
            raise ServerToolError(
                "nothing to ingest: " + "; ".join(refused) + ". Ask the server's operator to "
                "allow the folder or URL prefix (--allow-folder / --allow-url)."
            )
        return await _ingest_each(ingestor, allowed, refused, ctx)

    server.add_tool(rag_ingest, name="rag_ingest")


async def _ingest_each(
    ingestor: Ingestor, allowed: list[str], refused: list[str], ctx: Context
) -> dict[str, Any]:
    """Ingest the sources one by one (progress per source); what happened to each, in total.

    ``refused`` (sources the grant refused) and any source that fails are listed under
    ``failed`` with the reason; the others still go in.
    """
    totals: dict[str, Any] = {
        "added": [],
        "updated": [],
        "unchanged": [],
        "removed": [],
        "failed": list(refused),
        "chunks_written": 0,
    }
    for i, source in enumerate(allowed):
        await ctx.report_progress(i, len(allowed), f"ingesting {source}")
        try:
            report = await ingestor.aingest([source], prune=False)
        except Exception as exc:
            totals["failed"].append(f"{source}: {_failed('ingesting it', exc)}")
            continue
        for key in ("added", "updated", "unchanged", "removed"):
            totals[key].extend(getattr(report, key))
        totals["failed"].extend(f"{s}: {why}" for s, why in report.failed)
        totals["chunks_written"] += report.chunks_written
    await ctx.report_progress(len(allowed), len(allowed), "done")
    return totals


def add_research_tool(server: SDKServer[Any], research_agent: Any) -> None:
    """``research(question)``: a cited Markdown report from ``research_agent``."""

    async def research(
        question: Annotated[str, Field(description="The research question, self-contained.")],
        ctx: Context,
    ) -> str:
        """Research a question across the configured sources; returns a cited Markdown report.

        Plans sub-questions, runs researchers, checks citations and writes the report; this
        takes a while, and progress notifications report each stage.
        """
        from q3agent.research.mcp_tool import research_tool

        return await research_tool(question, progress_tracker(ctx), agent=research_agent)

    server.add_tool(research, name="research")
