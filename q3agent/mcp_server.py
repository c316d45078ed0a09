"""``q3agent serve-mcp``: a q3agent agent (and RAG store) served as an MCP server.

Any MCP client (Claude Desktop, an IDE, another agent) can then call:

* ``ask(task)``: run the configured agent on the task; returns the answer with its sources
  (numbered RAG citations when a store is configured, plus the tool calls the agent made).
  Sends ``notifications/progress`` at every step and tool call.
* ``rag_search(query, k)`` and ``rag_ingest(sources)``: when a RAG store is given
  (``--rag-store DIR`` or ``--rag-url URL``); ``rag_ingest`` reports progress per source.
* ``research(question)``: with ``--research``, a deep-research report (cited Markdown) from
  :mod:`q3agent.research`, with progress per stage.

Transports: stdio (the default; what desktop clients launch) and streamable HTTP. Streamable
HTTP binds to 127.0.0.1 by default; binding to any other address requires a non-blank bearer
token (``--token`` or ``Q3AGENT_MCP_TOKEN``), and every request without the right
``Authorization: Bearer <token>`` header gets 401. Whatever the address, requests whose
``Host`` (or ``Origin``) header is not the bound address (plus ``--allowed-host`` names) are
refused, so a web page cannot reach the server through DNS rebinding.

What clients may read: ``rag_ingest`` is served only when the operator names the folders
(``--allow-folder``) and URL prefixes (``--allow-url``) it may read; any other path or URL,
including symlinks and redirects that lead outside, is refused. ``ask`` tasks are limited to
``--max-task-tokens`` tokens, counted in a worker thread so a huge task cannot stall the server.

Shutdown order: the agent's own MCP servers are closed after each ``ask`` run, and the runtime
last, when the server stops. SGLang's ``Engine.shutdown`` kills all child processes of this
process, so closing the runtime first would kill MCP servers still in use.
"""

from __future__ import annotations

import hmac
import importlib
import inspect
import ipaddress
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
import mcp_types
from mcp.server.mcpserver import Context
from mcp.server.mcpserver import MCPServer as SDKServer
from mcp.server.mcpserver.exceptions import ToolError as ServerToolError
from pydantic import BaseModel, Field

from q3agent.errors import UsageError
from q3agent.url_grants import NormalURL, UnsafeURL, normalize_url

# The tool functions below are introspected by the MCP SDK, which resolves their (string)
# annotations in this module's globals: Context, mcp_types, Annotated and Field must live here.

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from q3agent.agent import Agent
    from q3agent.policy.base import ThinkingCapability
    from q3agent.rag import Retriever
    from q3agent.rag.ingest import Ingestor
    from q3agent.serving.base import Runtime

__all__ = [
    "AskResult",
    "AskSource",
    "BearerTokenMiddleware",
    "PortInUse",
    "ReadPolicy",
    "ServeConfigError",
    "ServedAgent",
    "build_mcp_server",
    "is_loopback",
    "load_agent_factory",
    "serve",
]

TOKEN_ENV = "Q3AGENT_MCP_TOKEN"
"""Environment variable read for the bearer token when ``--token`` is not given."""

AgentFactory = Callable[[], "Agent | Awaitable[Agent]"]


DEFAULT_MAX_TASK_TOKENS = 16_000
"""Largest ``ask`` task, in tokens, unless the operator sets ``--max-task-tokens``."""

_MAX_CHARS_PER_TOKEN = 16
"""Only a task's first ``limit * 16`` characters are tokenized to find that it is too long."""


class ServeConfigError(UsageError):
    """The server cannot start as configured; the message says what to change."""


class PortInUse(ServeConfigError):
    """The HTTP port is taken by another program (a set-up mistake: pick another port)."""


class SourceRefused(ValueError):
    """A client asked a served tool to read a path or URL the operator did not allow."""


@dataclass(frozen=True)
class ReadPolicy:
    """The folders and URL prefixes served tools may read; nothing else is read.

    Paths are resolved (symlinks followed) before the check, so a link inside an allowed folder
    that points outside it is refused. URLs are compared in their normal form
    (:func:`q3agent.url_grants.normalize_url`: decoded path with dot segments resolved, host
    and port normalised) on scheme, host, port and path prefix; a URL without one normal form
    is refused, the normal form is what gets fetched, and every redirect hop is checked too.
    An empty policy allows nothing.
    """

    folders: tuple[Path, ...] = ()
    url_prefixes: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, folders: Iterable[str | os.PathLike[str]] = (), urls: Iterable[str] = ()
    ) -> ReadPolicy:
        """Build from operator options; folders must exist, prefixes must be http(s) URLs."""
        resolved: list[Path] = []
        for folder in folders:
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise ServeConfigError(
                    f"--allow-folder {folder}: no such folder; give an existing directory"
                )
            resolved.append(path)
        prefixes: list[str] = []
        for url in urls:
            try:
                normalize_url(url)
            except UnsafeURL as exc:
                raise ServeConfigError(
                    f"--allow-url {url!r} is not a usable http(s) URL prefix ({exc}); give "
                    "e.g. https://docs.example.com/"
                ) from None
            prefixes.append(url.strip())
        return cls(tuple(resolved), tuple(prefixes))

    @property
    def allows_anything(self) -> bool:
        """Whether any folder or URL prefix was granted."""
        return bool(self.folders or self.url_prefixes)

    def _inside(self, path: Path) -> bool:
        return any(path == f or path.is_relative_to(f) for f in self.folders)

    def check_url(self, url: str) -> NormalURL:
        """``url`` in normal form; :class:`SourceRefused` unless it lies under a prefix.

        A URL that has no single normal form (encoded slashes, doubled encoding, user info,
        backslashes ...) is refused with the reason.
        """
        granted = ", ".join(self.url_prefixes) or "none; start the server with --allow-url"
        try:
            normal = normalize_url(url)
        except UnsafeURL as exc:
            why = str(exc).split(": ", 1)[-1]
            raise SourceRefused(
                f"{url}: outside the URL prefixes this server may read ({granted}): {why}, "
                "which web servers read in different ways; write the URL plainly"
            ) from None
        for prefix in self.url_prefixes:
            if normal.within(normalize_url(prefix)):
                return normal
        raise SourceRefused(f"{url}: outside the URL prefixes this server may read ({granted})")

    def check_path(self, source: str) -> Path:
        """The resolved path; raise :class:`SourceRefused` unless it lies in an allowed folder.

        A relative path is taken relative to the first allowed folder. A path that cannot
        name a file (a NUL byte, a symlink loop) is refused with the reason.
        """
        if "\x00" in source:
            raise SourceRefused(
                f"{source!r}: a path cannot contain a NUL byte; give the file's plain path"
            )
        try:
            raw = Path(source).expanduser()
            if not raw.is_absolute() and self.folders:
                raw = self.folders[0] / raw
            path = raw.resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise SourceRefused(f"{source!r}: not a readable path ({exc})") from None
        if not self._inside(path):
            granted = (
                ", ".join(map(str, self.folders)) or "none; start the server with --allow-folder"
            )
            raise SourceRefused(f"{source}: outside the folders this server may read ({granted})")
        return path

    def expand(self, sources: Iterable[str]) -> tuple[list[str], list[str]]:
        """``(allowed files and URLs, refusals)``; folders become their files, each checked."""
        from q3agent.rag.ingest import is_url, walk_folder

        allowed: list[str] = []
        refused: list[str] = []
        for source in sources:
            try:
                if is_url(source.strip().lower()):
                    allowed.append(self.check_url(source).url)
                    continue
                path = self.check_path(source)
            except SourceRefused as exc:
                refused.append(str(exc))
                continue
            try:
                is_dir = path.is_dir()
            except OSError as exc:  # e.g. a name too long for the file system
                refused.append(f"{source!r}: not a readable path ({exc.strerror or exc})")
                continue
            if not is_dir:
                allowed.append(str(path))
                continue
            for file in walk_folder(path):
                real = file.resolve()
                if self._inside(real):
                    allowed.append(str(real))
                else:
                    refused.append(f"{file}: a link to {real}, outside the allowed folders")
        return allowed, refused

    def http_client(self) -> Any:
        """An httpx client that refuses any request (redirects included) outside the prefixes.

        A request that is let through is sent with its path in normal form, so the server
        reads the path that was checked.
        """
        import httpx

        def check(request: httpx.Request) -> None:
            try:
                normal = self.check_url(str(request.url))
            except SourceRefused as exc:
                raise httpx.RequestError(f"refused: {exc}", request=request) from None
            target = httpx.URL(normal.url)
            if target.raw_path != request.url.raw_path:
                request.url = request.url.copy_with(raw_path=target.raw_path)

        return httpx.Client(follow_redirects=True, timeout=30.0, event_hooks={"request": [check]})


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


def _progress_tracker(ctx: Context) -> Callable[[float, float | None, str], Awaitable[None]]:
    """Progress values must increase; this keeps them increasing whatever the caller sends."""
    last = [-1.0]

    async def report(progress: float, total: float | None, message: str) -> None:
        value = max(progress, last[0] + 0.01)
        last[0] = value
        await ctx.report_progress(value, total, message)

    return report


def _failed(what: str, exc: BaseException) -> str:
    """One line for a served tool's unexpected failure: what failed and the exception's words.

    (The MCP SDK would otherwise send only "Error executing tool NAME", without the reason.)
    """
    words = " ".join(str(exc).split()).rstrip(".") or "no message"
    return f"{what} failed: {type(exc).__name__}: {words}"


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
    from q3agent.events import FinalResult, StepStart, ToolCallEvent, ToolResultEvent
    from q3agent.qwen3.messages import ToolCall

    await check_task_size(served, task)
    agent = served.agent
    session = agent.session()
    bank = None
    if served.retriever is not None:
        from q3agent.rag import CitationBank, make_rag_search_tool

        bank = CitationBank()
        session.add_tools([make_rag_search_tool(served.retriever, bank)])
    report = _progress_tracker(ctx) if ctx is not None else None
    total = float(agent.max_steps)
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
            if bank is None or name != "rag_search":
                tool_sources.append(AskSource(kind="tool", ref=name))
                tool_sources[-1].excerpt = _excerpt(event.result.content, served.excerpt_chars)
        elif isinstance(event, FinalResult):
            result = event.result
    assert result is not None
    calls = {c.id: c for c in result.tool_calls}
    for step in result.steps:
        for tool_result in step.tool_results:
            call = calls.get(tool_result.call_id)
            for source in tool_sources:
                if source.ref == tool_result.name and not source.location and call is not None:
                    source.location = json.dumps(call.arguments, ensure_ascii=False)
                    break
    sources: list[AskSource] = []
    if bank is not None:
        for cited in bank.sources():
            first = cited.passages[0].text if cited.passages else ""
            sources.append(
                AskSource(
                    kind="document",
                    ref=f"[{cited.number}]",
                    location=cited.location,
                    title=cited.title,
                    excerpt=_excerpt(first, served.excerpt_chars),
                )
            )
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


class _Q3AgentMCPServer(SDKServer[Any]):
    """The SDK's server with JSON-RPC error codes where it falls back to 0."""

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        context: Context[Any, Any] | None = None,
    ) -> mcp_types.GetPromptResult | mcp_types.InputRequiredResult:
        """Like the SDK's, but an unknown prompt is ``-32602 Invalid params``, not code 0."""
        from mcp import MCPError

        if self._prompt_manager.get_prompt(name) is None:
            known = ", ".join(p.name for p in await self.list_prompts()) or "none"
            raise MCPError(
                code=mcp_types.INVALID_PARAMS,
                message=f"Unknown prompt: {name!r} (this server's prompts: {known})",
            )
        return await super().get_prompt(name, arguments, context)


def build_mcp_server(
    served: ServedAgent | Agent,
    *,
    name: str = "q3agent",
    lifespan_close: bool = True,
) -> SDKServer:
    """The MCP server object (official SDK) exposing ``ask`` and, with a store, ``rag_*``.

    Run it with :func:`serve`, or connect to it in-process in tests
    (``q3agent.tools.mcp.MCPServerInProcess`` or ``mcp.Client(server)``). With
    ``lifespan_close``, the agent's runtime is closed when the server shuts down.
    """
    if not isinstance(served, ServedAgent):
        served = ServedAgent(served)
    holder = served

    @asynccontextmanager
    async def lifespan(_server: SDKServer[Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            if lifespan_close:
                await holder.aclose()

    instructions = (
        "q3agent runs a Qwen3 agent with its own tools. Call `ask` with a self-contained task; "
        "it returns the answer and the sources it used."
    )
    if served.retriever is not None:
        instructions += " `rag_search` searches the document store."
    if served.ingestor is not None and served.read_policy.allows_anything:
        instructions += " `rag_ingest` adds documents from the folders and URLs it may read."
    from q3agent import __version__

    server: SDKServer[Any] = _Q3AgentMCPServer(
        name,
        instructions=instructions,
        lifespan=lifespan,
        log_level="WARNING",
        version=__version__,
    )

    async def ask(
        task: Annotated[str, Field(description="The task or question, self-contained.")],
        ctx: Context,
    ) -> Annotated[mcp_types.CallToolResult, AskResult]:
        """Run the q3agent agent on a task; returns its answer and the sources it used.

        The agent may think, call its tools and search its documents over several steps;
        progress notifications report each step.
        """
        try:
            result = await run_ask(holder, task, ctx)
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

    if served.retriever is not None:
        retriever = served.retriever

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

    if served.ingestor is not None and served.read_policy.allows_anything:
        ingestor = served.ingestor
        policy = served.read_policy
        if policy.url_prefixes:
            ingestor.http_client = policy.http_client()
            served.closers.append(ingestor.http_client.close)

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
            totals: dict[str, Any] = {
                "added": [],
                "updated": [],
                "unchanged": [],
                "removed": [],
                "failed": [],
                "chunks_written": 0,
            }
            totals["failed"].extend(refused)
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

        server.add_tool(rag_ingest, name="rag_ingest")

    if served.research is not None:
        research_agent = served.research

        async def research(
            question: Annotated[str, Field(description="The research question, self-contained.")],
            ctx: Context,
        ) -> str:
            """Research a question across the configured sources; returns a cited Markdown report.

            Plans sub-questions, runs researchers, checks citations and writes the report; this
            takes a while, and progress notifications report each stage.
            """
            from q3agent.research.mcp_tool import research_tool

            return await research_tool(question, _progress_tracker(ctx), agent=research_agent)

        server.add_tool(research, name="research")
    return server


# --------------------------------------------------------------------------------------------
# Configuring the served agent


def load_agent_factory(spec: str) -> AgentFactory:
    """``module:attribute`` → a callable returning an :class:`Agent` (or an Agent itself)."""
    from q3agent.agent import Agent

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ServeConfigError(
            f"--agent {spec!r} must look like 'package.module:factory' (a function that returns "
            "an Agent, or an Agent object)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ServeConfigError(
            f"--agent: cannot import {module_name!r} ({exc}); run from the directory that "
            "contains it or install it"
        ) from exc
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ServeConfigError(f"--agent: {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, Agent):
        agent = target

        def same() -> Agent:
            return agent

        return same
    if not callable(target):
        raise ServeConfigError(f"--agent: {spec} is neither an Agent nor a callable")
    return target  # type: ignore[no-any-return]


def read_script(path: str) -> list[str]:
    """Completions for ``--runtime-script`` (see ``testing.load_completions``)."""
    from q3agent.serving.testing import ScriptFileError, load_completions

    try:
        return load_completions(path)
    except ScriptFileError as exc:
        raise ServeConfigError(f"--runtime-script: {exc}") from None


async def make_served_agent(
    *,
    agent_spec: str | None = None,
    model: str | None = None,
    runtime_script: str | None = None,
    mcp_config: str | None = None,
    rag_store: str | None = None,
    rag_url: str | None = None,
    system_prompt: str | None = None,
    max_steps: int = 20,
    research: bool = False,
    allow_folders: Sequence[str] = (),
    allow_urls: Sequence[str] = (),
    max_task_tokens: int = DEFAULT_MAX_TASK_TOKENS,
    runtime: Runtime | None = None,
    capability: ThinkingCapability | None = None,
) -> ServedAgent:
    """Build the served agent from CLI-style options (see ``q3agent serve-mcp --help``).

    ``runtime`` (built by the CLI from its runtime flags) and ``capability`` go to the default
    agent; without a runtime it is chosen on the first call.
    """
    from q3agent.agent import Agent

    if agent_spec is not None:
        made = load_agent_factory(agent_spec)()
        agent = await made if inspect.isawaitable(made) else made
        if not isinstance(agent, Agent):
            raise ServeConfigError(f"--agent {agent_spec} returned {agent!r}, not an Agent")
    else:
        if runtime_script is not None:
            from q3agent.serving.testing import ScriptedRuntime

            runtime = ScriptedRuntime(read_script(runtime_script))
        servers: Sequence[Any] = ()
        if mcp_config is not None:
            from q3agent.tools.mcp import load_mcp_config

            servers = load_mcp_config(mcp_config)
        agent = Agent(
            model or "Qwen3-30B-A3B",
            runtime=runtime,
            capability=capability,
            mcp_servers=servers,
            system_prompt=system_prompt,
            max_steps=max_steps,
        )
    served = ServedAgent(
        agent,
        read_policy=ReadPolicy.of(allow_folders, allow_urls),
        max_task_tokens=max_task_tokens,
    )
    if rag_store is not None or rag_url is not None:
        from q3agent.rag import Ingestor, RagStore, Retriever

        store = RagStore.open(rag_store, url=rag_url)
        served.retriever = Retriever(store)
        served.ingestor = Ingestor(store)
        served.closers.append(store.close)
    if research:
        from q3agent.research.pipeline import ResearchAgent
        from q3agent.serving.base import RuntimeUnavailableError

        try:  # the same runtime object: one model in memory serves both tools
            shared = agent.runtime
        except RuntimeUnavailableError:  # no model here: each research call says why
            shared = None
        served.research = ResearchAgent(
            agent.model,
            runtime=shared,
            retriever=served.retriever,
            mcp_servers=agent.mcp_servers,
        )
    return served


# --------------------------------------------------------------------------------------------
# Transports


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerTokenMiddleware:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <token>``, else 401.

    The comparison is constant-time. Lifespan events pass through.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for key, value in scope.get("headers", []):
            if key.lower() == b"authorization":
                given = value
                break
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": "invalid_token",
                "error_description": "missing or wrong bearer token; send "
                "'Authorization: Bearer <token>' with the token the server was started with",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer error="invalid_token"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def check_http_settings(host: str, token: str | None) -> None:
    """Refuse to expose the agent beyond this machine without a token, and blank tokens."""
    if token is not None and not token.strip():
        raise ServeConfigError(
            "the bearer token is empty or only whitespace; pass a real secret with --token "
            f"(or {TOKEN_ENV}), e.g. the output of `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`"
        )
    if not is_loopback(host) and not token:
        raise ServeConfigError(
            f"refusing to serve on {host} without a bearer token: anyone who can reach this "
            f"address could run the agent. Pass --token TOKEN (or set {TOKEN_ENV}), or bind to "
            "127.0.0.1."
        )


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _host_forms(host: str) -> list[str]:
    """How ``host`` appears in a Host header: IPv6 addresses in brackets."""
    bare = host.strip("[]")
    try:
        if ipaddress.ip_address(bare).version == 6:
            return [f"[{bare}]"]
    except ValueError:
        pass
    return [bare.lower()]


def allowed_hosts_for(host: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The Host header values the server accepts: the bound address (and, on a loopback bind,
    ``localhost`` and the other loopback names), each with the port, plus ``extra`` names.

    A wildcard bind (``0.0.0.0``, ``::``) accepts only the ``extra`` names (``--allowed-host``),
    since the name clients use for this machine cannot be known in advance.
    """
    names: list[str] = []
    if not _is_wildcard(host):
        names.extend(_host_forms(host))
    if is_loopback(host):
        names.extend(["localhost", "127.0.0.1", "[::1]"])
    for item in extra:
        item = item.strip().lower()  # host names are case-insensitive
        if item:
            names.append(item)
    allowed: list[str] = []
    for name in dict.fromkeys(names):
        if name.endswith("]") or name.count(":") == 0:
            allowed.extend([f"{name}:{port}", name] if port in (80, 443) else [f"{name}:{port}"])
        else:
            allowed.append(name)  # already has a port (or ':*')
    return list(dict.fromkeys(allowed))


def http_app(
    server: SDKServer,
    *,
    host: str,
    token: str | None,
    path: str = "/mcp",
    port: int = 8000,
    allowed_hosts: Sequence[str] = (),
) -> ASGIApp:
    """The streamable HTTP ASGI app: Host/Origin allowlist always, bearer auth with ``token``.

    Requests whose ``Host`` is not in :func:`allowed_hosts_for` get 421, and requests that carry
    an ``Origin`` other than ``http(s)://`` one of those hosts get 403, on every bind address.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    check_http_settings(host, token)
    hosts = allowed_hosts_for(host, port, allowed_hosts)
    if not hosts:
        raise ServeConfigError(
            f"serving on {host} accepts any Host header, which lets web pages reach the server "
            "through DNS rebinding; name the host clients use with --allowed-host NAME[:PORT] "
            "(e.g. --allowed-host myserver.lan:8000)"
        )
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=path, host=host, transport_security=security
    )
    app = LowercaseHostMiddleware(app)
    return BearerTokenMiddleware(app, token) if token else app


class LowercaseHostMiddleware:
    """ASGI middleware: the ``Host`` and ``Origin`` headers lower-cased before they are checked.

    Host names are case-insensitive (``LOCALHOST:8000`` is ``localhost:8000``), while the MCP
    SDK's allowlist compares strings exactly.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [
                (key, value.lower() if key.lower() in (b"host", b"origin") else value)
                for key, value in scope.get("headers", [])
            ]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def bind_socket(host: str, port: int) -> Any:
    """A listening TCP socket on ``host:port`` (port 0: a free one), bound before anything else.

    Binding first means the Host allowlist is built for the port actually bound, and a busy
    port is one clear error. Raises :class:`PortInUse` when the port is taken and
    :class:`ServeConfigError` for any other reason the address cannot be bound.
    """
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServeConfigError(
            f"--host {host}: not an address of this machine ({exc.strerror}); use e.g. 127.0.0.1"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use by another program; stop it, or pick "
                "another port with --port N (--port 0 takes a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeConfigError(
                f"not allowed to listen on port {port} of {host} (ports below 1024 need "
                "privileges); pick a port above 1024 with --port N"
            ) from None
        raise ServeConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port"
        ) from None
    return sock


async def serve(
    server: SDKServer,
    *,
    transport: Literal["stdio", "streamable-http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    path: str = "/mcp",
    allowed_hosts: Sequence[str] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run ``server`` until stopped (stdin closed for stdio; Ctrl-C / SIGTERM for HTTP).

    The HTTP socket is bound first (:func:`bind_socket`): with ``port=0`` the Host allowlist
    names the port the system picked, and a port in use raises :class:`PortInUse` before the
    server starts. ``on_ready`` is called with the endpoint URL once the HTTP server accepts
    connections.
    """
    if transport == "stdio":
        await server.run_stdio_async()
        return
    if transport != "streamable-http":
        raise ServeConfigError(f"unknown transport {transport!r}; use stdio or streamable-http")
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_http_settings(host, token)
    sock = bind_socket(host, port)
    try:
        bound = int(sock.getsockname()[1])
        app = http_app(
            server, host=host, token=token, path=path, port=bound, allowed_hosts=allowed_hosts
        )
        config = uvicorn.Config(app, host=host, port=bound, log_level="warning", lifespan="on")
        http_server = uvicorn.Server(config)
        if on_ready is None:
            await http_server.serve(sockets=[sock])
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: http_server.serve(sockets=[sock]))
            while not http_server.started:  # noqa: ASYNC110 - uvicorn has only this flag
                await anyio.sleep(0.05)
            shown = f"[{host.strip('[]')}]" if ":" in host else host
            on_ready(f"http://{shown}:{bound}{path}")
    finally:
        sock.close()
