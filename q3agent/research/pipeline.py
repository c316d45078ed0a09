"""Deep research: brief → plan → parallel researchers → notes → outline → sections → check.

:class:`ResearchAgent` drives the stages on top of :class:`q3agent.Agent`. Researchers run
in parallel (bounded by an ``anyio.CapacityLimiter``), each an agent loop with ``rag_search``
and ``fetch_url``; their findings are compressed into notes whose quotes are verified against
the shared :class:`EvidenceBank`. The report is written section by section (non-thinking),
summarised with thinking, and its citations are checked before it is returned. Budgets (model
calls, tokens, wall time) force a wrap-up; cancellation returns the partial report.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from q3agent._sync import SyncPortal, run_sync
from q3agent.agent import Agent, capability_for
from q3agent.options import RunOptions
from q3agent.policy.base import Policy, ThinkingCapability
from q3agent.policy.builtin import AlwaysThink, NeverThink, PlanAct
from q3agent.research import prompts
from q3agent.research.citations import UnsupportedAction, check_report
from q3agent.research.evidence import EvidenceBank, EvidenceItem
from q3agent.research.progress import (
    EventCallback,
    ReportReady,
    ResearcherFinished,
    ResearcherStarted,
    ResearchEvent,
    SectionWritten,
    SourceAdded,
    Stage,
    StageFinished,
    StageStarted,
    WrapUp,
)
from q3agent.research.render import normalize_tables
from q3agent.research.report import Report, ReportSection, ReportStatus
from q3agent.research.tools import (
    Fetcher,
    HttpxFetcher,
    MCPFetcher,
    WrapUpGuard,
    make_fetch_tool,
    make_search_tool,
)
from q3agent.result import RunResult, UsageLimits
from q3agent.serving.base import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    Runtime,
    RuntimeError_,
    RuntimeWrapper,
    closing_stream,
)
from q3agent.tools.base import Tool, Toolset
from q3agent.types import Usage

if TYPE_CHECKING:
    from q3agent.rag.retrieval import Retriever
    from q3agent.rag.store import RagStore
    from q3agent.tools.mcp import MCPServer

DEFAULT_CONTEXT_TOKENS = 32_768
ClarifyCallback = Callable[[str], str | Awaitable[str]]
"""Asked the model's clarifying question; returns the user's answer (sync or async)."""


class BudgetExhaustedError(RuntimeError_):
    """The run's model-call or token budget is spent; the report is written from what exists."""


class ResearchCancelledError(Exception):
    """The task running the research was cancelled; ``report`` is the partial report."""

    def __init__(self, report: Report) -> None:
        super().__init__("the research run was cancelled; the partial report is in .report")
        self.report = report


@dataclass(frozen=True, slots=True)
class ResearchBudget:
    """Limits of one research run. ``None`` means no limit.

    Near a limit the run wraps up: researchers are told to stop calling tools and report, and
    the remaining calls go to writing. ``reserve_calls`` model calls (plus one per section)
    are kept back for writing; ``research_share`` of the wall time goes to research.
    """

    max_llm_calls: int | None = 200
    max_tokens: int | None = None
    """Prompt plus completion tokens over all model calls."""
    max_seconds: float | None = None
    research_share: float = 0.6
    reserve_calls: int = 4
    context_tokens: int | None = None
    """The model's context length (default: the model's, else 32,768)."""
    wrap_up_fraction: float = 0.75
    """A researcher is told to wrap up when its conversation fills this much of the context."""


@dataclass(frozen=True, slots=True)
class ResearchOptions:
    """How a research run goes: its sizes, thinking budgets, limits and interaction.

    >>> options = ResearchOptions(max_researchers=3, budget=ResearchBudget(max_seconds=600))
    >>> ResearchAgent("Qwen3-30B-A3B", docs=["./papers"], options=options)  # doctest: +SKIP
    """

    max_researchers: int = 5
    """Researchers that run at the same time."""
    max_subquestions: int = 5
    """Most sub-questions the plan may have (one researcher each)."""
    researcher_max_steps: int = 6
    """Most model steps of one researcher (its ``RunOptions.max_steps``)."""
    plan_budget: int = 1024
    """Thinking tokens for the plan."""
    synthesis_budget: int = 1024
    """Thinking tokens for the outline of the report."""
    researcher_policy: Policy | None = None
    """Each researcher's thinking policy; ``None``: ``PlanAct(pool=4096, base_budget=512)``."""
    budget: ResearchBudget = field(default_factory=ResearchBudget)
    """Limits of the whole run (model calls, tokens, wall time)."""
    clarify: ClarifyCallback | None = None
    """Asked the clarifying questions, if any, before research starts; ``None``: not asked."""
    unsupported: UnsupportedAction = "flag"
    """A sentence its cited evidence does not support: ``flag`` it or ``remove`` it."""

    def __post_init__(self) -> None:
        if self.max_researchers < 1:
            raise ValueError(f"max_researchers must be at least 1, got {self.max_researchers}")


class _Ledger:
    """Live usage of a run against its budget."""

    def __init__(self, budget: ResearchBudget) -> None:
        self.budget = budget
        self.started = time.monotonic()
        self.usage = Usage()
        self.writing_calls = budget.reserve_calls

    def add(self, usage: Usage) -> None:
        self.usage = self.usage + usage

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def hard_stop(self) -> str | None:
        """Why no more model calls may be made, or ``None``."""
        b = self.budget
        if b.max_llm_calls is not None and self.usage.requests >= b.max_llm_calls:
            return f"the budget of {b.max_llm_calls} model calls is spent"
        if b.max_tokens is not None and self.usage.total_tokens >= b.max_tokens:
            return f"the budget of {b.max_tokens:,} tokens is spent"
        return None

    def research_stop(self) -> str | None:
        """Why researchers must wrap up now (budget kept back for writing), or ``None``."""
        b = self.budget
        if b.max_llm_calls is not None:
            left = b.max_llm_calls - self.usage.requests
            if left <= self.writing_calls:
                return f"{left} of {b.max_llm_calls} model calls are left for writing"
        if b.max_tokens is not None and self.usage.total_tokens >= 0.7 * b.max_tokens:
            return f"70% of the {b.max_tokens:,}-token budget is used"
        if b.max_seconds is not None and self.elapsed() >= b.research_share * b.max_seconds:
            return f"{b.research_share:.0%} of the {b.max_seconds:.0f}s wall-time budget is used"
        return self.hard_stop()

    def limits(self) -> UsageLimits:
        """Usage limits for one agent run: what is left of the run's budget."""
        b = self.budget
        calls = None if b.max_llm_calls is None else max(1, b.max_llm_calls - self.usage.requests)
        tokens = None if b.max_tokens is None else max(1, b.max_tokens - self.usage.total_tokens)
        return UsageLimits(max_requests=calls, max_total_tokens=tokens)


class _MeteredRuntime(RuntimeWrapper):
    """Counts every model call of the run into the ledger and refuses calls past the budget."""

    def __init__(self, inner: Runtime, ledger: _Ledger) -> None:
        super().__init__(inner)
        self.ledger = ledger

    def _check(self) -> None:
        reason = self.ledger.hard_stop()
        if reason is not None:
            raise BudgetExhaustedError(f"research budget: {reason}")

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate through the wrapped runtime, counting usage (a request cut off by a
        cancellation or an error counts too: its prompt and one request)."""
        self._check()
        try:
            generation = await self.inner.generate(request)
        except BaseException:
            self.ledger.add(Usage(prompt_tokens=len(request.prompt_ids), requests=1))
            raise
        self.ledger.add(generation.usage)
        return generation

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream through the wrapped runtime, counting usage at the end (or, for a stream
        cut off, its prompt, the tokens it streamed and one request)."""
        self._check()
        counted = False
        streamed = 0
        try:
            async with closing_stream(self.inner.stream(request)) as chunks:
                async for chunk in chunks:
                    streamed += len(chunk.token_ids)
                    if chunk.generation is not None:
                        counted = True
                        self.ledger.add(chunk.generation.usage)
                    yield chunk
        finally:
            if not counted:
                self.ledger.add(
                    Usage(
                        prompt_tokens=len(request.prompt_ids),
                        completion_tokens=streamed,
                        requests=1,
                    )
                )

    async def aclose(self) -> None:
        """Nothing: the research agent owns the wrapped runtime."""


@dataclass
class SubQuestion:
    """A planned sub-question and the search queries the planner suggested."""

    question: str
    queries: list[str] = field(default_factory=list)


@dataclass
class OutlineSection:
    """A planned section: its title, goal, the evidence ids it uses, and whether to tabulate."""

    title: str
    goal: str = ""
    notes: list[str] = field(default_factory=list)
    table: bool = False


@dataclass
class _State:
    """Everything a run has produced so far (what a partial report is built from)."""

    question: str
    brief: str = ""
    clarification: str = ""
    subquestions: list[SubQuestion] = field(default_factory=list)
    title: str = ""
    outline: list[OutlineSection] = field(default_factory=list)
    written: dict[int, str] = field(default_factory=dict)
    summary: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    wrap_up: str = ""


def _json_from(text: str) -> Any:
    """The JSON value in a model answer (code fences and chatter around it tolerated)."""
    import json_repair

    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text
    start = min((i for i in (candidate.find("{"), candidate.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        return json_repair.loads(candidate[start:])
    except Exception:  # json_repair is lenient; anything it still rejects is just not data
        return None


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + " …"


def _strip_heading(text: str, title: str) -> str:
    """A section body without a leading heading that repeats its title, and without a
    Sources list the writer added."""
    text = re.split(r"(?m)^#{1,6}\s+(Sources|References)\s*$", text.strip())[0].strip()
    first, _, rest = text.partition("\n")
    if first.lstrip().startswith("#"):
        return rest.strip()
    return text


async def _call(callback: Callable[..., Any] | None, *args: Any) -> Any:
    if callback is None:
        return None
    result = callback(*args)
    if inspect.isawaitable(result):
        return await result
    return result


def _why_stopped(exc: BaseException) -> str:
    if isinstance(exc, BudgetExhaustedError):
        return "stopped: budget"
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "stopped: cancelled"
    return f"failed: {type(exc).__name__}"


class ResearchAgent:
    """Writes cited research reports from documents and web pages.

    >>> agent = ResearchAgent("Qwen3-30B-A3B", docs=["./papers"], web=True)  # doctest: +SKIP
    >>> report = agent.run("How do solid-state batteries compare on energy density?")
    >>> print(report.markdown)  # doctest: +SKIP

    Sources: ``docs`` (files or folders, ingested into a temporary store), ``store`` or
    ``retriever`` (an existing RAG store), and the web when ``web`` is true (``fetch_url`` via
    httpx, or via ``fetcher``: a :class:`~q3agent.research.tools.Fetcher` or an MCP fetch
    server), starting from ``urls`` found in the question or passed in. Extra tools and MCP
    servers (a web-search server, say) are given to every researcher. How the run goes
    (researchers, sub-questions, thinking budgets, limits, clarifying questions, what to do
    with unsupported sentences) is one :class:`ResearchOptions` given as ``options``.
    """

    def __init__(
        self,
        model: str | None = "Qwen3-30B-A3B",
        *,
        runtime: Runtime | None = None,
        docs: Iterable[str | Path] = (),
        store: RagStore | None = None,
        retriever: Retriever | None = None,
        web: bool = False,
        urls: Iterable[str] = (),
        fetcher: Fetcher | MCPServer | None = None,
        tools: Iterable[Tool] = (),
        mcp_servers: Iterable[Toolset] = (),
        options: ResearchOptions | None = None,
        capability: ThinkingCapability | None = None,
    ) -> None:
        self.options = options if options is not None else ResearchOptions()
        """How each research run goes: sizes, budgets, clarification, unsupported claims."""
        self.model = model
        self._runtime = runtime
        self._portal: SyncPortal | None = None
        """The event loop every sync ``run`` of this agent uses (made on the first)."""
        self.docs = [Path(d) for d in docs]
        self._store = store
        self._retriever = retriever
        self.web = web or fetcher is not None
        self.urls = list(urls)
        self.fetch_server: MCPServer | None = None
        """An MCP fetch server to open for each run (when ``fetcher`` is one)."""
        self.fetcher: Fetcher | None = None
        if fetcher is not None:
            from q3agent.tools.mcp.connection import MCPServer

            if isinstance(fetcher, MCPServer):
                self.fetch_server = fetcher
            else:
                self.fetcher = fetcher
        self.extra_tools = list(tools)
        self.mcp_servers = list(mcp_servers)
        self.researcher_policy: Policy = self.options.researcher_policy or PlanAct(
            pool=4096, base_budget=512
        )
        if capability is None and model is not None:
            capability = capability_for(model, runtime)  # unknown names fail here, not mid-run
        self.capability = capability
        self._owned_store: RagStore | None = None

    @property
    def budget(self) -> ResearchBudget:
        """The limits of each run (``options.budget``)."""
        return self.options.budget

    # -- resources ----------------------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        """The runtime, chosen on first use when none was given."""
        if self._runtime is None:
            from q3agent.serving.select import runtime_for

            self._runtime = runtime_for("ResearchAgent", self.model)
        return self._runtime

    def _context_tokens(self) -> int:
        if self.budget.context_tokens is not None:
            return self.budget.context_tokens
        if self.model is not None:
            from q3agent.qwen3.models import UnknownModelError, get_model

            with contextlib.suppress(UnknownModelError, OSError, ValueError):
                return get_model(self.model).native_context
        return DEFAULT_CONTEXT_TOKENS

    async def _retriever_for_run(self) -> Retriever | None:
        if self._retriever is not None:
            return self._retriever
        from q3agent.rag.retrieval import Retriever

        if self._store is not None:
            self._retriever = Retriever(self._store)
            return self._retriever
        if not self.docs:
            return None
        from q3agent.rag.ingest import Ingestor
        from q3agent.rag.store import RagStore

        def build() -> RagStore:
            store = RagStore.ephemeral()
            report = Ingestor(store).ingest([str(d) for d in self.docs], progress=False)
            if store.count() == 0:
                problems = "; ".join(f"{s}: {why}" for s, why in report.failed) or "no text"
                raise ValueError(
                    f"no documents could be ingested from {[str(d) for d in self.docs]} "
                    f"({problems}); pass files or folders with .md, .txt, .html or .pdf files"
                )
            return store

        self._owned_store = await anyio.to_thread.run_sync(build)
        self._retriever = Retriever(self._owned_store)
        return self._retriever

    async def aclose(self) -> None:
        """Release the runtime and the temporary document store."""
        if self._owned_store is not None:
            self._owned_store.close()
            self._owned_store = None
        if self._runtime is not None:
            await self._runtime.aclose()

    def close(self) -> None:
        """Synchronous :meth:`aclose`, then stop the event loop the sync ``run`` calls share."""
        portal, self._portal = self._portal, None
        if portal is None:  # never run synchronously: nothing is bound to a loop
            run_sync(self.aclose, instead="await agent.aclose()")
            return
        portal.call(self.aclose, instead="await agent.aclose()")
        portal.close()

    # -- entry points -------------------------------------------------------------------------

    def run(self, question: str) -> Report:
        """Research ``question`` from synchronous code; see :meth:`arun`."""
        if self._portal is None:
            self._portal = SyncPortal()
        return self._portal.call(lambda: self.arun(question), instead="await agent.arun(question)")

    async def stream(
        self, question: str, *, cancel: anyio.Event | None = None
    ) -> AsyncIterator[ResearchEvent]:
        """Research ``question``, yielding progress events; the last is :class:`ReportReady`."""
        send, receive = anyio.create_memory_object_stream[ResearchEvent](math.inf)

        async def runner() -> None:
            async with send:
                with contextlib.suppress(ResearchCancelledError):
                    await self.arun(question, cancel=cancel, on_event=send.send)

        async with anyio.create_task_group() as tg:
            tg.start_soon(runner)
            async with receive:
                async for event in receive:
                    yield event

    async def arun(
        self,
        question: str,
        *,
        cancel: anyio.Event | None = None,
        on_event: EventCallback | None = None,
    ) -> Report:
        """Research ``question`` and return the checked report.

        Setting ``cancel`` stops the run and returns the partial report (status
        ``cancelled``): what researchers verified so far, sections already written. Cancelling
        the task that awaits this raises :class:`ResearchCancelledError` carrying that report.
        Budgets end the run early with status ``partial``. ``on_event`` receives progress.
        """
        run = _Run(self, question, on_event)
        return await run.execute(cancel)


class _Run:
    """One research run: the stages in order, sharing a ledger, a bank and the state."""

    def __init__(self, agent: ResearchAgent, question: str, on_event: EventCallback | None):
        self.agent = agent
        self.on_event = on_event
        self.state = _State(question=question.strip())
        self.ledger = _Ledger(agent.budget)
        self.runtime = _MeteredRuntime(agent.runtime, self.ledger)
        self.context_tokens = agent._context_tokens()
        self.capability: ThinkingCapability = agent.capability or "hybrid"
        self.pending_sources: list[SourceAdded] = []
        self.bank = EvidenceBank(
            on_new_source=lambda s: self.pending_sources.append(
                SourceAdded(s.number, s.location, s.title)
            )
        )
        self.started = time.perf_counter()

    # -- plumbing -----------------------------------------------------------------------------

    async def emit(self, event: ResearchEvent) -> None:
        pending, self.pending_sources = self.pending_sources, []
        for source in pending:
            await _call(self.on_event, source)
        await _call(self.on_event, event)

    @contextlib.asynccontextmanager
    async def stage(self, name: Stage) -> AsyncIterator[list[str]]:
        """Times a stage and reports it; the yielded list collects a detail line."""
        await self.emit(StageStarted(name))
        started = time.perf_counter()
        detail: list[str] = []
        failed = True
        try:
            yield detail
            failed = False
        except BaseException as exc:
            detail.append(_why_stopped(exc))
            raise
        finally:
            seconds = time.perf_counter() - started
            self.state.timings[name] = self.state.timings.get(name, 0.0) + seconds
            with anyio.CancelScope(shield=True):
                await self.emit(StageFinished(name, seconds, "; ".join(detail), failed=failed))

    async def ask(
        self, system: str, user: str, *, thinking: bool, budget: int | None = None
    ) -> RunResult:
        """One model answer without tools (thinking under ``budget`` when asked)."""
        policy: Policy = AlwaysThink(budget) if thinking else NeverThink()
        agent = Agent(
            None,
            runtime=self.runtime,
            policy=policy,
            system_prompt=system,
            options=RunOptions(max_steps=1, usage_limits=self.ledger.limits()),
            capability=self.capability,
        )
        result = await agent.arun(user)
        if result.status == "error" and isinstance(result.error, BudgetExhaustedError):
            raise result.error
        if result.status == "error" and result.error is not None:
            raise result.error
        return result

    # -- the run ------------------------------------------------------------------------------

    async def execute(self, cancel: anyio.Event | None) -> Report:
        status: ReportStatus = "complete"
        detail = ""
        failure: Exception | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.agent.fetch_server is not None and self.agent.fetcher is None:
                    await stack.enter_async_context(self.agent.fetch_server)
                async with anyio.create_task_group() as tg:
                    work = anyio.CancelScope()
                    if self.agent.budget.max_seconds is not None:
                        work.deadline = anyio.current_time() + self.agent.budget.max_seconds
                    if cancel is not None:

                        async def watch() -> None:
                            await cancel.wait()
                            work.cancel()

                        tg.start_soon(watch)
                    try:
                        with work:
                            await self.pipeline()
                    except BudgetExhaustedError as exc:
                        status, detail = "partial", str(exc)
                    except RuntimeError_ as exc:
                        status, detail = "error", f"the runtime failed: {exc}"
                    except Exception as exc:  # re-raised below, outside the task group
                        failure = exc
                    if work.cancelled_caught:
                        if cancel is not None and cancel.is_set():
                            status, detail = "cancelled", "the run was cancelled"
                        else:
                            status, detail = (
                                "partial",
                                f"the wall-time budget of {self.agent.budget.max_seconds}s ran out",
                            )
                    tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            report = self.assemble("cancelled", "the task running the research was cancelled")
            raise ResearchCancelledError(report) from None
        if failure is not None:
            raise failure
        if status == "complete" and self.state.wrap_up:
            status, detail = "partial", f"wrapped up early: {self.state.wrap_up}"
        report = self.assemble(status, detail)
        with anyio.CancelScope(shield=True):
            await self.emit(ReportReady(report))
        return report

    async def pipeline(self) -> None:
        await self.clarify_and_brief()
        await self.plan()
        await self.research()
        await self.outline()
        await self.write()
        await self.synthesise()

    async def clarify_and_brief(self) -> None:
        state = self.state
        async with self.stage("clarify") as detail:
            if self.agent.options.clarify is None:
                detail.append("skipped (non-interactive)")
            else:
                result = await self.ask(prompts.CLARIFY, state.question, thinking=False)
                asked = result.answer.strip()
                if asked and asked.upper().strip(".") != "NONE":
                    answer = await _call(self.agent.options.clarify, asked)
                    if isinstance(answer, str) and answer.strip():
                        state.clarification = f"Q: {asked}\nA: {answer.strip()}"
                        detail.append("clarified")
                else:
                    detail.append("no question needed")
        async with self.stage("brief"):
            user = f"Request: {state.question}"
            if state.clarification:
                user += f"\n\nClarification:\n{state.clarification}"
            result = await self.ask(prompts.BRIEF, user, thinking=False)
            state.brief = result.answer.strip() or state.question

    async def plan(self) -> None:
        state = self.state
        async with self.stage("plan") as detail:
            user = f"Request: {state.question}\n\nResearch brief:\n{state.brief}"
            result = await self.ask(
                prompts.plan_prompt(self.agent.options.max_subquestions),
                user,
                thinking=True,
                budget=self.agent.options.plan_budget,
            )
            state.subquestions = self.parse_plan(result.answer)
            count = len(state.subquestions)
            detail.append(f"{count} sub-question{'' if count == 1 else 's'}")

    def parse_plan(self, answer: str) -> list[SubQuestion]:
        data = _json_from(answer)
        items: list[Any] = []
        if isinstance(data, dict):
            found = data.get("subquestions") or data.get("sub_questions") or []
            items = found if isinstance(found, list) else []
        elif isinstance(data, list):
            items = data
        planned: list[SubQuestion] = []
        for item in items:
            if isinstance(item, str) and item.strip():
                planned.append(SubQuestion(item.strip()))
            elif isinstance(item, dict) and isinstance(item.get("question"), str):
                queries = item.get("queries")
                planned.append(
                    SubQuestion(
                        item["question"].strip(),
                        [q for q in queries if isinstance(q, str)]
                        if isinstance(queries, list)
                        else [],
                    )
                )
        if not planned:  # misbehaviour is data: fall back to question lines, then the question
            lines = [ln.strip(" -*0123456789.") for ln in answer.splitlines()]
            planned = [SubQuestion(ln) for ln in lines if ln.endswith("?") and len(ln) > 10]
        if not planned:
            planned = [SubQuestion(self.state.question)]
        seen: set[str] = set()
        unique = []
        for sq in planned:
            if sq.question.casefold() not in seen:
                seen.add(sq.question.casefold())
                unique.append(sq)
        return unique[: self.agent.options.max_subquestions]

    # -- research -----------------------------------------------------------------------------

    def start_urls(self) -> list[str]:
        found = re.findall(r"https?://[^\s)>\]\"']+", self.state.question)
        return list(dict.fromkeys([*self.agent.urls, *found]))

    async def research_tools(self) -> list[Tool]:
        tools: list[Tool] = []
        retriever = await self.agent._retriever_for_run()
        if retriever is not None:
            tools.append(make_search_tool(retriever, self.bank))
        if self.agent.web:
            fetcher: Fetcher = self.agent.fetcher or (
                MCPFetcher(self.agent.fetch_server)
                if self.agent.fetch_server is not None
                else HttpxFetcher()
            )
            tools.append(make_fetch_tool(fetcher, self.bank))
        tools.extend(self.agent.extra_tools)
        if not tools and not self.agent.mcp_servers:
            raise ValueError(
                "the research agent has no sources: pass docs=[...] (or store=/retriever=), "
                "web=True with urls=[...], or tools/mcp_servers for researchers to use"
            )
        return tools

    def must_wrap_up(self) -> str | None:
        return self.ledger.research_stop()

    async def research(self) -> None:
        state = self.state
        async with self.stage("ingest") as detail:
            base_tools = await self.research_tools()
            detail.append(", ".join(t.name for t in base_tools) or "MCP tools only")
        async with self.stage("research") as detail:
            limit = int(self.context_tokens * self.agent.budget.wrap_up_fraction)
            tools = [
                WrapUpGuard(
                    t,
                    tokenizer=self.runtime.tokenizer,
                    context_limit=limit,
                    should_wrap_up=self.must_wrap_up,
                )
                for t in base_tools
            ]
            self.ledger.writing_calls = self.agent.budget.reserve_calls + len(state.subquestions)
            limiter = anyio.CapacityLimiter(self.agent.options.max_researchers)
            scope = anyio.CancelScope()
            b = self.agent.budget
            if b.max_seconds is not None:
                share = min(0.95, b.research_share + 0.15)
                left = share * b.max_seconds - self.ledger.elapsed()
                scope.deadline = anyio.current_time() + max(0.0, left)
            with scope:
                async with anyio.create_task_group() as tg:
                    for index, sq in enumerate(state.subquestions):
                        tg.start_soon(self.researcher, index, sq, tools, limiter)
            if scope.cancelled_caught:
                await self.note_wrap_up("the research share of the wall-time budget ran out")
            detail.append(
                f"{len(self.bank.items)} verified notes from {len(self.bank.sources())} sources, "
                f"{len(self.bank.rejected)} rejected"
            )

    async def note_wrap_up(self, reason: str) -> None:
        if not self.state.wrap_up:
            self.state.wrap_up = reason
            await self.emit(WrapUp(reason))

    def researcher_task(self, index: int, sq: SubQuestion) -> str:
        lines = [
            f"Sub-question {index + 1} of {len(self.state.subquestions)}: {sq.question}",
            f"Overall question: {self.state.question}",
            f"Research brief: {self.state.brief}",
        ]
        if sq.queries:
            lines.append("Suggested searches: " + "; ".join(sq.queries))
        urls = self.start_urls()
        if urls and self.agent.web:
            lines.append("Start URLs (fetch with fetch_url):\n" + "\n".join(f"- {u}" for u in urls))
        return "\n".join(lines)

    async def researcher(
        self, index: int, sq: SubQuestion, tools: Sequence[Tool], limiter: anyio.CapacityLimiter
    ) -> None:
        async with limiter:
            reason = self.must_wrap_up()
            if reason is not None:
                await self.note_wrap_up(reason)
                return
            await self.emit(ResearcherStarted(index, sq.question))
            started = time.perf_counter()
            agent = Agent(
                None,
                runtime=self.runtime,
                tools=tools,
                mcp_servers=self.agent.mcp_servers,
                policy=self.agent.researcher_policy,
                system_prompt=prompts.RESEARCHER,
                options=RunOptions(
                    max_steps=self.agent.options.researcher_max_steps,
                    usage_limits=self.ledger.limits(),
                ),
                capability=self.capability,
            )
            result = await agent.arun(self.researcher_task(index, sq))
            refused = any(isinstance(t, WrapUpGuard) and t.refusals for t in tools)
            if refused:
                reason = self.must_wrap_up()
                if reason is not None:
                    await self.note_wrap_up(reason)
            before = (len(self.bank.items), len(self.bank.rejected))
            if self.ledger.hard_stop() is None:
                await self.compress(index, sq, result)
            else:
                await self.note_wrap_up(str(self.ledger.hard_stop()))
            await self.emit(
                ResearcherFinished(
                    index,
                    sq.question,
                    len(self.bank.items) - before[0],
                    len(self.bank.rejected) - before[1],
                    result.status,
                    time.perf_counter() - started,
                )
            )

    def retrieved_for(self, result: RunResult) -> str:
        """The evidence a researcher saw: its successful tool results, as the model saw them."""
        blocks = [
            r.content
            for step in result.steps
            for r in step.tool_results
            if not r.is_error and r.content.lstrip().startswith("[")
        ]
        return "\n\n---\n\n".join(blocks)

    async def compress(self, index: int, sq: SubQuestion, result: RunResult) -> None:
        evidence = self.retrieved_for(result)
        if not evidence:
            return
        budget_chars = max(4000, int(self.context_tokens * 2))
        user = (
            f"Sub-question: {sq.question}\n\n"
            f"Researcher's findings:\n{_clip(result.answer.strip() or '(none)', 4000)}\n\n"
            f"Retrieved evidence:\n{_clip(evidence, budget_chars)}"
        )
        try:
            answer = (await self.ask(prompts.COMPRESS, user, thinking=False)).answer
        except BudgetExhaustedError as exc:
            await self.note_wrap_up(str(exc))
            return
        data = _json_from(answer)
        notes = data.get("notes") if isinstance(data, dict) else data
        if not isinstance(notes, list):
            return
        for note in notes:
            if not isinstance(note, dict):
                continue
            source = note.get("source")
            if isinstance(source, str):
                digits = re.sub(r"\D", "", source)
                source = int(digits) if digits else None
            quote = note.get("quote")
            claim = note.get("claim")
            if isinstance(quote, str):
                self.bank.add_note(
                    source if isinstance(source, int) else None,
                    quote,
                    claim if isinstance(claim, str) else "",
                    index,
                )

    # -- writing ------------------------------------------------------------------------------

    def notes_listing(self, items: Sequence[EvidenceItem]) -> str:
        lines = []
        for item in items:
            source = self.bank.source(item.source)
            title = source.title or source.location if source else ""
            lines.append(
                f'{item.id} [{item.source}] {item.claim}\n   Quote: "{item.quote}"\n'
                f"   Source: {title}"
            )
        return "\n".join(lines)

    async def outline(self) -> None:
        state = self.state
        async with self.stage("outline") as detail:
            items = list(self.bank.items)
            if not items:
                detail.append("no verified evidence to outline")
                return
            grouped = []
            for index, sq in enumerate(state.subquestions):
                mine = [i for i in items if i.subquestion == index]
                if mine:
                    grouped.append(f"Sub-question {index + 1}: {sq.question}\n"
                                   f"{self.notes_listing(mine)}")  # fmt: skip
            user = (
                f"Question: {state.question}\n\nResearch brief:\n{state.brief}\n\n"
                f"Evidence notes:\n\n{_clip(chr(10).join(grouped), self.context_tokens * 2)}"
            )
            result = await self.ask(prompts.OUTLINE, user, thinking=False)
            state.title, state.outline = self.parse_outline(result.answer, items)
            detail.append(f"{len(state.outline)} sections")

    def parse_outline(
        self, answer: str, items: Sequence[EvidenceItem]
    ) -> tuple[str, list[OutlineSection]]:
        data = _json_from(answer)
        known = {i.id for i in items}
        title = ""
        sections: list[OutlineSection] = []
        if isinstance(data, dict):
            raw_title = data.get("title")
            title = raw_title.strip() if isinstance(raw_title, str) else ""
            raw_sections = data.get("sections")
            for raw in raw_sections if isinstance(raw_sections, list) else []:
                if not isinstance(raw, dict) or not isinstance(raw.get("title"), str):
                    continue
                raw_notes = raw.get("notes")
                notes = raw_notes if isinstance(raw_notes, list) else []
                sections.append(
                    OutlineSection(
                        raw["title"].strip(),
                        str(raw.get("goal") or ""),
                        [n for n in notes if isinstance(n, str) and n in known],
                        bool(raw.get("table")),
                    )
                )
        sections = [s for s in sections if s.title]
        used = {n for s in sections for n in s.notes}
        unused = [i for i in items if i.id not in used]
        if not sections:  # fall back to one section per researched sub-question
            for index, sq in enumerate(self.state.subquestions):
                mine = [i.id for i in items if i.subquestion == index]
                if mine:
                    sections.append(OutlineSection(sq.question.rstrip("?"), sq.question, mine))
        elif unused:
            for section in sections:
                if not section.notes:
                    section.notes = [i.id for i in unused]
                    break
        return title or self.state.question, sections

    async def write(self) -> None:
        state = self.state
        if not state.outline:
            return
        async with self.stage("write") as detail:
            by_id = {i.id: i for i in self.bank.items}
            limiter = anyio.CapacityLimiter(self.agent.options.max_researchers)

            async def one(index: int, section: OutlineSection) -> None:
                async with limiter:
                    items = [by_id[n] for n in section.notes if n in by_id]
                    if not items:
                        return
                    user = (
                        f"Report question: {state.question}\n"
                        f"Section {index + 1} of {len(state.outline)}: {section.title}\n"
                        f"Goal: {section.goal or section.title}\n"
                        + (f"\n{prompts.TABLE_HINT}\n" if section.table else "")
                        + f"\nEvidence notes:\n{self.notes_listing(items)}"
                    )
                    result = await self.ask(prompts.SECTION, user, thinking=False)
                    body = _strip_heading(result.answer, section.title)
                    if body:
                        state.written[index] = normalize_tables(body)[0]
                        await self.emit(SectionWritten(index, section.title))

            async with anyio.create_task_group() as tg:
                for index, section in enumerate(state.outline):
                    tg.start_soon(one, index, section)
            detail.append(f"{len(state.written)} of {len(state.outline)} sections written")

    async def synthesise(self) -> None:
        state = self.state
        if not state.written:
            return
        async with self.stage("synthesis"):
            body = "\n\n".join(
                f"## {state.outline[i].title}\n\n{text}"
                for i, text in sorted(state.written.items())
            )
            user = (
                f"Question: {state.question}\n\nSections:\n\n{_clip(body, self.context_tokens * 2)}"
            )
            result = await self.ask(
                prompts.SYNTHESIS, user, thinking=True, budget=self.agent.options.synthesis_budget
            )
            state.summary = _strip_heading(result.answer, "Summary")

    # -- assembly -----------------------------------------------------------------------------

    def draft_markdown(self) -> str:
        """The report before the citation check, from whatever the run produced."""
        state = self.state
        parts = [f"# {state.title or state.question}"]
        if state.summary:
            parts.append(f"## Summary\n\n{state.summary}")
        covered: set[str] = set()
        for index, section in enumerate(state.outline):
            text = state.written.get(index)
            if text:
                parts.append(f"## {section.title}\n\n{text}")
                covered.update(section.notes)
        # evidence no written section used (a run cut short): its verified quotes, cited
        leftovers = [i for i in self.bank.items if i.id not in covered]
        for index, sq in enumerate(state.subquestions):
            mine = [i for i in leftovers if i.subquestion == index]
            if mine:
                lines = [f"- “{i.quote}” [{i.source}]" for i in mine]
                parts.append(f"## Findings: {sq.question}\n\n" + "\n".join(lines))
        if len(parts) == 1:
            parts.append("No verified evidence was gathered before the run ended.")
        return "\n\n".join(parts) + "\n"

    def assemble(self, status: ReportStatus, detail: str) -> Report:
        state = self.state
        started = time.perf_counter()
        unsupported = self.agent.options.unsupported
        checked = check_report(self.draft_markdown(), self.bank, unsupported=unsupported)
        state.timings["citations"] = time.perf_counter() - started
        state.timings["total"] = time.perf_counter() - self.started
        markdown = checked.markdown
        if status != "complete":
            markdown = markdown.replace(
                "\n", f"\n\n> **{status.capitalize()} report:** {detail.rstrip('. ')}.\n", 1
            )
        sections = _split_sections(markdown)
        return Report(
            question=state.question,
            title=state.title or state.question,
            markdown=markdown,
            sources=checked.sources,
            sections=sections,
            usage=self.ledger.usage,
            timings=dict(state.timings),
            status=status,
            detail=detail,
            brief=state.brief,
            subquestions=[sq.question for sq in state.subquestions],
            evidence=list(self.bank.items),
            rejected=list(self.bank.rejected),
            issues=checked.issues,
        )


def _split_sections(markdown: str) -> list[ReportSection]:
    sections: list[ReportSection] = []
    title: str | None = None
    body: list[str] = []
    in_fence = False
    for line in markdown.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence and line.startswith("## "):
            if title is not None:
                sections.append(ReportSection(title, "\n".join(body).strip()))
            title, body = line[3:].strip(), []
        elif title is not None:
            body.append(line)
    if title is not None:
        sections.append(ReportSection(title, "\n".join(body).strip()))
    return sections
