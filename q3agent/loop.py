"""The agent loop: policy → append-only prompt → generate → parse → tools → repeat.

One task of a conversation runs here, top to bottom. Everything around it (runtimes, the
prompt builder, the parser, tool execution, policies) lives in its own module; this file only
decides what happens in which order and what is recorded.

:func:`run_task` reads in one screen: finish an interrupted step, then run one step at a time
(:meth:`_TaskRun.run_step`: generate, then answer, redo with thinking, or run the calls), each
step leaving a :data:`StepOutcome` that says whether and how the run goes on, then build the
result. The history and its prompt ids live in :class:`~q3agent.conversation.Conversation`.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from q3agent.conversation import Conversation
from q3agent.events import (
    Event,
    FinalResult,
    StepEnd,
    StepStart,
    ToolCallEvent,
    ToolProgress,
    ToolResultEvent,
)
from q3agent.memory.context_window import ContextOverflowError, summary_request
from q3agent.options import RunOptions
from q3agent.policy.base import Policy, ReconsideringPolicy, RunState, StepMode, ThinkingCapability
from q3agent.qwen3.chat_format import render_ids
from q3agent.qwen3.messages import (
    Message,
    ToolCall,
    ToolCallError,
    ToolMessage,
    UserMessage,
    pending_tool_calls,
)
from q3agent.qwen3.models import sampling_for
from q3agent.qwen3.parsing import Parsed, parse, parse_ids
from q3agent.qwen3.streaming import StreamEvent, StreamParser
from q3agent.qwen3.thinking import soft_switch
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import RunResult, RunStatus, StepRecord
from q3agent.serving.base import (
    Generation,
    GenerationRequest,
    Runtime,
    RuntimeError_,
    ToolCallConstraint,
)
from q3agent.serving.budget import BudgetedGeneration, TextDelta, generate_with_budget
from q3agent.tools.base import Tool
from q3agent.tools.context import RunContext
from q3agent.tools.executor import ToolResult, execute_tool_calls
from q3agent.tools.function import FunctionTool
from q3agent.types import Usage


@dataclass(frozen=True)
class LoopSettings:
    """Everything fixed for a run: model, tools, policy and its :class:`RunOptions`.

    ``options.max_tokens`` is the resolved completion-token cap per request (``Agent`` fills
    it from :meth:`~q3agent.Agent.completion_limit`); ``None``: the policy's.
    """

    runtime: Runtime
    policy: Policy
    tools: Mapping[str, Tool]
    capability: ThinkingCapability
    deps: Any = None
    options: RunOptions = field(default_factory=RunOptions)


@dataclass
class _Tally:
    """Running counts the policy and the limits read."""

    usage: Usage = field(default_factory=Usage)
    tool_calls: int = 0
    failures: int = 0
    tool_errors: int = 0
    """Failed tool calls in this run, all tools together (for ``max_tool_errors``)."""
    errors_in_a_row: Counter[str] = field(default_factory=Counter)
    """Each tool's failed calls since its last success (for its ``max_retries``)."""
    last_failed: bool = False
    last_had_calls: bool = False
    last_hit_budget: bool = False
    thinking_steps: int = 0
    thinking_tokens: int = 0
    soft_switch: bool | None = None
    """The user's /think or /no_think; only user and system turns set it, so once a task."""

    def count_generation(self, mode: StepMode, generation: BudgetedGeneration) -> None:
        """Count a step's completion: its usage, its thinking, whether it hit the budget."""
        self.usage += generation.usage
        if mode.thinking:
            self.thinking_steps += 1
            self.thinking_tokens += generation.usage.reasoning_tokens
        self.last_hit_budget = generation.hit_budget


def _template_thinking(s: LoopSettings, mode: StepMode) -> bool | None:
    """The template's ``enable_thinking`` for a step: only hybrid models take the switch."""
    return mode.thinking if s.capability == "hybrid" else None


def _constraint(s: LoopSettings, step: int) -> ToolCallConstraint | None:
    if s.options.tool_choice == "auto" or step > 0 or not s.tools:
        return None
    choice = s.options.tool_choice
    chosen = s.tools.values() if choice == "required" else [s.tools[choice]]
    return ToolCallConstraint(tools=tuple(t.schema() for t in chosen), required=True)


def parse_generation(
    tokenizer: Qwen3Tokenizer,
    generation: Generation | BudgetedGeneration,
    *,
    thinking_started: bool = False,
    constrained: bool = False,
) -> Parsed:
    """A completion's reasoning, content and calls: from the control ids where the runtime
    returned the sampled ids (a tag the model spelled in ordinary tokens is content), from the
    text for text-only servers.

    ``constrained``: q3agent's own grammar (a :class:`ToolCallConstraint`) shaped the output.
    Grammar engines match strings, so they admit ``<tool_call>`` spelled in ordinary tokens as
    well as the control token; every tag written under the grammar is schema-checked by it, so
    such a step is parsed from its text.
    """
    if generation.ids_exact and not constrained:
        return parse_ids(generation.token_ids, tokenizer, thinking_started=thinking_started)
    return parse(generation.text, thinking_started=thinking_started)


def _stream_events(
    parser: StreamParser, delta: TextDelta, *, constrained: bool = False
) -> list[StreamEvent]:
    """A streamed delta's events: from its ids where the runtime streams ids, else its text
    (also for a step shaped by q3agent's grammar: see :func:`parse_generation`)."""
    if not constrained and (parser.mode == "ids" or (not parser.mode and delta.token_ids)):
        return parser.feed_ids(delta.token_ids)
    return parser.feed(delta.text)


def _is_failure(result: ToolResult) -> bool:
    """An error, or an empty result: both send the policy into recovery."""
    return result.is_error or not result.content.strip()


async def _run_tools(
    s: LoopSettings,
    conv: Conversation,
    calls: Sequence[ToolCall | ToolCallError],
    ctx: RunContext[Any],
) -> list[ToolResult]:
    """Execute a step's calls concurrently; results recorded before an interruption are reused."""
    tools: Mapping[str, Tool] = s.tools
    done: dict[str, ToolResult] = {}
    if conv.recorder is not None:
        done = conv.recorder.completed([c for c in calls if isinstance(c, ToolCall)])
        tools = conv.recorder.wrap(s.tools)
    todo = [c for c in calls if c.id not in done]
    batches = [todo] if s.options.parallel_tool_calls else [[c] for c in todo]
    ran: list[ToolResult] = []
    for batch in batches:
        ran += await execute_tool_calls(
            batch,
            tools,
            ctx,
            default_timeout=s.options.tool_timeout,
            approve=s.options.approve,
            max_output_chars=s.options.max_output_chars,
        )
    by_id = {r.call_id: r for r in ran} | done
    return [by_id[c.id] for c in sorted(calls, key=lambda c: c.index)]


def _may_report_progress(s: LoopSettings, calls: Sequence[ToolCall | ToolCallError]) -> bool:
    """Whether a call of this step can report progress: any tool but a function tool that
    takes no ``RunContext`` (MCP tools forward their server's progress notifications)."""
    for call in calls:
        tool = s.tools.get(call.name) if isinstance(call, ToolCall) else None
        if tool is not None and not (isinstance(tool, FunctionTool) and not tool.takes_context):
            return True
    return False


async def _run_tools_reporting(
    s: LoopSettings,
    conv: Conversation,
    calls: Sequence[ToolCall | ToolCallError],
    ctx: RunContext[Any],
) -> AsyncGenerator[ToolProgress | list[ToolResult], None]:
    """:func:`_run_tools`, yielding the tools' progress reports as they arrive, then the results."""
    if not _may_report_progress(s, calls):  # the common step: no task or stream to set up
        yield await _run_tools(s, conv, calls, ctx)
        return
    send, receive = anyio.create_memory_object_stream[ToolProgress](math.inf)

    def sink(call: ToolCall | None, progress: float, total: float | None, msg: str | None) -> None:
        if call is not None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.send_nowait(ToolProgress(ctx.step, call.id, call.name, progress, total, msg))

    ctx.progress_sink = sink
    results: list[ToolResult] = []
    error: Exception | None = None

    async def run() -> None:
        nonlocal results, error
        async with send:
            try:
                results = await _run_tools(s, conv, calls, ctx)
            except Exception as exc:  # re-raised below as itself, not in an ExceptionGroup
                error = exc

    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(run)
        async for progress in receive:
            yield progress
    if error is not None:
        raise error
    yield results


def _account(
    s: LoopSettings, tally: _Tally, calls: Sequence[object], results: Sequence[ToolResult]
) -> str | None:
    """Count a step's calls and failures; say why the run must stop if a retry budget is spent."""
    tally.tool_calls += sum(isinstance(c, ToolCall) for c in calls)
    failed = [r for r in results if _is_failure(r)]
    tally.failures += len(failed)
    tally.last_failed = bool(failed)
    tally.last_had_calls = True
    for r in results:  # in call order: a success resets its tool's count
        name = r.name or "<unparsed>"
        if r.is_error:
            tally.tool_errors += 1
            tally.errors_in_a_row[name] += 1
        else:
            tally.errors_in_a_row.pop(name, None)
    return _retry_budget_spent(s, tally)


async def _compact(s: LoopSettings, conv: Conversation, tally: _Tally) -> bool:
    """Summarise older turns once the prompt reaches the window's threshold; True if it did.

    After a compaction that could not get below the threshold (the kept turns are that long),
    the next try waits until the prompt has grown by a tenth of the window, so a long task does
    not pay a summarisation call every step. The summary call's usage counts towards the run.
    """
    window = conv.context
    size = len(conv.builder)
    if window is None or size < max(window.threshold, conv.compact_floor):
        return False

    async def summarize(messages: list[Message]) -> str:
        prompt = render_ids(s.runtime.tokenizer, summary_request(messages), enable_thinking=False)
        request = GenerationRequest(prompt_ids=tuple(prompt), sampling=sampling_for(False))
        generation = await s.runtime.generate(request)
        tally.usage += generation.usage
        return parse_generation(s.runtime.tokenizer, generation).content

    fitted = await window.fit(conv.messages, summarize, [t.schema() for t in s.tools.values()])
    conv.compacted(fitted.messages, fitted.tokens_after + window.max_tokens // 10)
    return True


@dataclass(frozen=True, slots=True)
class Answered:
    """The model answered: the run ends with ``answer`` (``truncated`` if cut at the limit)."""

    answer: str
    reasoning: str | None
    status: RunStatus = "answer"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RunAgain:
    """The step's tools ran: the next step goes on from their results."""

    tool_messages: tuple[ToolMessage, ...]


@dataclass(frozen=True, slots=True)
class RedoWithThinking:
    """The policy asked for the answer once more, in ``mode`` (with thinking)."""

    mode: StepMode


@dataclass(frozen=True, slots=True)
class Stopped:
    """The run ends without an answer: a limit, a spent retry budget, an error, cancellation."""

    status: RunStatus
    detail: str
    error: BaseException | None = None


StepOutcome = Answered | RunAgain | RedoWithThinking | Stopped
"""What one step of :func:`run_task` decided: end the run, or which step comes next."""


@dataclass(frozen=True, slots=True)
class _Generated:
    """One step's completion, parsed, with what its step record needs."""

    index: int
    mode: StepMode
    request: GenerationRequest
    generation: BudgetedGeneration
    parsed: Parsed
    started_at: float
    latency: float

    def record(
        self,
        results: Sequence[ToolResult] = (),
        *,
        diverged_at: int | None = None,
        redone: bool = False,
    ) -> StepRecord:
        """The step's record, with its tools' results."""
        generation, parsed, mode = self.generation, self.parsed, self.mode
        return StepRecord(
            index=self.index,
            thinking=mode.thinking,
            budget=mode.budget,
            reason=mode.reason,
            usage=generation.usage,
            latency_s=self.latency,
            reasoning=parsed.reasoning,
            content=parsed.content,
            tool_calls=tuple(parsed.calls),
            tool_results=tuple(results),
            hit_budget=generation.hit_budget,
            finish_reason=generation.finish_reason,
            prompt_diverged_at=diverged_at,
            redone=redone,
            started_at=self.started_at,
        )


@dataclass
class _TaskRun:
    """One task's run: the state its steps share, and the steps themselves."""

    s: LoopSettings
    conv: Conversation
    stream: bool
    thinking: bool | None
    pending: Sequence[ToolCall | ToolCallError]
    """The interrupted step's calls still to run (when resuming)."""
    first_message: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    tally: _Tally = field(default_factory=_Tally)
    steps: list[StepRecord] = field(default_factory=list)
    step: int = 0
    mode: StepMode = field(init=False)
    task_tokens: int = 0
    schemas: tuple[dict[str, Any], ...] = ()
    tok: Qwen3Tokenizer = field(init=False)
    in_flight: int | None = None
    """Prompt tokens of the request in progress; ``None`` between requests."""
    streamed: int = 0
    """Completion tokens the request in progress has streamed so far."""
    outcome: StepOutcome | None = None
    """What the last step decided (:meth:`run_step` sets it)."""

    @classmethod
    def open(
        cls,
        s: LoopSettings,
        conv: Conversation,
        task: str | None,
        stream: bool,
        thinking: bool | None,
    ) -> _TaskRun:
        """Add the task's user message (none when resuming) and set up the run's state."""
        pending = pending_tool_calls(conv.messages) if task is None else []
        run = cls(s, conv, stream, thinking, pending, first_message=len(conv.messages))
        if task is not None:
            conv.add(UserMessage(content=task))
        query = next((m.content for m in reversed(conv.messages) if isinstance(m, UserMessage)), "")
        run.task_tokens = s.runtime.tokenizer.count(query)
        run.tally.soft_switch = soft_switch(conv.messages)
        run.schemas = tuple(t.schema() for t in s.tools.values())
        run.tok = s.runtime.tokenizer
        return run

    def state(self) -> RunState:
        """The snapshot of the run the policy decides from."""
        s, tally = self.s, self.tally
        return RunState(
            step=self.step,
            task_tokens=self.task_tokens,
            num_tools=len(s.tools),
            capability=s.capability,
            tool_calls_so_far=tally.tool_calls,
            failures_so_far=tally.failures,
            last_step_failed=tally.last_failed,
            last_step_had_calls=tally.last_had_calls,
            last_thinking_hit_budget=tally.last_hit_budget,
            thinking_steps=tally.thinking_steps,
            thinking_tokens_used=tally.thinking_tokens,
            max_steps=s.options.max_steps,
            soft_switch=tally.soft_switch,
            user_enable_thinking=self.thinking,
        )

    async def start(self) -> None:
        """Finish an interrupted step's calls, compact if due, and open the first step."""
        s, conv = self.s, self.conv
        if self.pending:
            ctx = RunContext(deps=s.deps, run_id=self.run_id, step=0, messages=tuple(conv.messages))
            results = await _run_tools(s, conv, self.pending, ctx)
            _account(s, self.tally, self.pending, results)
            conv.close_step([r.to_message() for r in results], {"resumed_calls": len(self.pending)})
        await _compact(s, conv, self.tally)
        self.mode = s.policy.decide(self.state())
        conv.begin(_template_thinking(s, self.mode))

    async def run_step(self) -> AsyncGenerator[Event, None]:
        """One step: generate; then answer, redo with thinking, or run the calls.

        The step's events are yielded; what it decided is left in :attr:`outcome`.
        """
        s, conv, step = self.s, self.conv, self.step
        yield StepStart(step, self.mode)
        # 1. generate the completion (thinking under its budget when asked)
        prompt_open = s.capability == "thinking_only"
        if prompt_open:  # Thinking-2507: the template's generation prompt opens <think>
            conv.builder.append_text("<think>\n", trusted=True)
        # streamed deltas are parsed as they come; otherwise the whole completion, once
        parser = None
        if self.stream:
            parser = StreamParser(thinking_started=prompt_open, tokenizer=self.tok, step=step)
        request = self._request()
        constrained = request.constraint is not None
        started, started_at = time.perf_counter(), time.time()
        generation: BudgetedGeneration | None = None
        # what this request has cost so far, counted if the run is cancelled before it ends
        self.in_flight, self.streamed = len(request.prompt_ids), 0
        budget = self.mode.budget if self.mode.thinking else None
        async for item in generate_with_budget(
            s.runtime, request, budget, model_opens_think=not prompt_open, stream=self.stream
        ):
            if isinstance(item, TextDelta):
                assert parser is not None  # runtimes yield deltas only when streaming
                self.streamed += len(item.token_ids)
                for event in _stream_events(parser, item, constrained=constrained):
                    yield event
            else:
                generation = item
        assert generation is not None
        generated = self._generated(request, generation, started, started_at, prompt_open)
        calls = generated.parsed.calls
        if not self.stream:
            for call in calls:
                yield ToolCallEvent(step, call)
        diverged = conv.take_divergence()  # reported on the step that saw it
        # 2. an answer (the policy may ask for it once more, with thinking) ...
        if not calls:
            yield StepEnd(self._answer_or_redo(generated, diverged))
            return
        # 3. ... or tool calls: run them concurrently, answer each in call order
        conv.add_assistant(generated.parsed, generation.token_ids, generation.finish_reason)
        ctx = RunContext(deps=s.deps, run_id=self.run_id, step=step, messages=tuple(conv.messages))
        results: list[ToolResult] = []
        async with contextlib.aclosing(_run_tools_reporting(s, conv, calls, ctx)) as reports:
            async for progress_or_results in reports:
                if isinstance(progress_or_results, ToolProgress):
                    yield progress_or_results
                else:
                    results = progress_or_results
        for tool_result in results:
            yield ToolResultEvent(step, tool_result)
        yield StepEnd(self._close_tools_step(generated, results, diverged))

    def _request(self) -> GenerationRequest:
        """The step's request: its prompt, sampling (capped at ``max_tokens``), constraint."""
        s, mode = self.s, self.mode
        sampling = mode.sampling
        cap = s.options.max_tokens
        if cap is not None and sampling.max_tokens > cap:
            sampling = sampling.with_(max_tokens=cap)
        return GenerationRequest(
            prompt_ids=self.conv.builder.ids,
            sampling=sampling,
            constraint=_constraint(s, self.step),
            messages=tuple(self.conv.messages),
            tools=self.schemas,
            enable_thinking=_template_thinking(s, mode),
            request_id=f"{self.run_id}-{self.step}",
        )

    def _generated(
        self,
        request: GenerationRequest,
        generation: BudgetedGeneration,
        started: float,
        started_at: float,
        prompt_open: bool,
    ) -> _Generated:
        """Parse the completion and count it."""
        latency = time.perf_counter() - started
        constrained = request.constraint is not None
        parsed = parse_generation(
            self.tok, generation, thinking_started=prompt_open, constrained=constrained
        )
        self.in_flight = None
        self.tally.count_generation(self.mode, generation)
        return _Generated(self.step, self.mode, request, generation, parsed, started_at, latency)

    def _answer_or_redo(self, generated: _Generated, diverged: int | None) -> StepRecord:
        """End the run with the answer, or ask for it again (with thinking) if the policy wants
        that and a step remains; the step's record."""
        redo = None
        policy = self.s.policy
        if not generated.mode.thinking and isinstance(policy, ReconsideringPolicy):
            redo = policy.reconsider(self.state(), generated.parsed)
        if redo is not None and self.step + 1 < self.s.options.max_steps:
            record = generated.record(diverged_at=diverged, redone=True)
            self.outcome = RedoWithThinking(redo)
        else:
            generation, parsed = generated.generation, generated.parsed
            self.conv.add_assistant(parsed, generation.token_ids, generation.finish_reason)
            record = generated.record(diverged_at=diverged)
            self.conv.end_with_answer(record)
            self.outcome = Answered(parsed.content, parsed.reasoning)
            if generation.finish_reason == "length":
                detail = _truncated_detail(generated.request, generation)
                self.outcome = Answered(parsed.content, parsed.reasoning, "truncated", detail)
        self.steps.append(record)
        return record

    def _close_tools_step(
        self, generated: _Generated, results: list[ToolResult], diverged: int | None
    ) -> StepRecord:
        """Count the step's calls, record it, and check the retry budgets and usage limits."""
        s = self.s
        stop = _account(s, self.tally, generated.parsed.calls, results)
        tool_messages = tuple(r.to_message() for r in results)
        record = generated.record(results, diverged_at=diverged)
        self.conv.close_step(tool_messages, record)
        self.steps.append(record)
        over = s.options.usage_limits.exceeded(self.tally.usage)
        if stop is not None:
            self.outcome = Stopped("error", stop)
        elif over is not None:
            self.outcome = Stopped("usage_limit", over)
        else:
            self.outcome = RunAgain(tool_messages)
        return record

    def redo(self, mode: StepMode) -> None:
        """Ask for the answer again, in ``mode``, from the same generation prompt."""
        self.mode = mode
        self.conv.builder.reopen_generation(enable_thinking=_template_thinking(self.s, mode))
        self.step += 1

    async def advance(self, outcome: RunAgain) -> None:
        """The next step's mode, then its prompt: the tools' results, or a compacted history."""
        s, conv = self.s, self.conv
        self.step += 1
        self.mode = s.policy.decide(self.state())
        enable_thinking = _template_thinking(s, self.mode)
        if await _compact(s, conv, self.tally):
            conv.begin(enable_thinking)
        else:
            conv.builder.append_tool_results(outcome.tool_messages, enable_thinking=enable_thinking)

    def cancelled(self) -> Stopped:
        """The run was cancelled: count the request it was waiting for (it ran, in part)."""
        if self.in_flight is not None:
            self.tally.usage += Usage(
                prompt_tokens=self.in_flight, completion_tokens=self.streamed, requests=1
            )
        return Stopped("cancelled", "the run was cancelled")

    def result(self, outcome: Answered | Stopped) -> RunResult:
        """The run's result, from how it ended."""
        answer, reasoning, error = "", None, None
        if isinstance(outcome, Answered):
            answer, reasoning = outcome.answer, outcome.reasoning
        else:
            error = outcome.error
        return RunResult(
            answer=answer,
            reasoning=reasoning,
            messages=list(self.conv.messages[self.first_message :]),
            steps=self.steps,
            usage=self.tally.usage,
            status=outcome.status,
            detail=outcome.detail,
            run_id=self.run_id,
            prompt_ids=self.conv.builder.ids.to_tuple(),
            error=error,
        )


async def run_task(
    s: LoopSettings,
    conv: Conversation,
    task: str | None,
    *,
    stream: bool = False,
    thinking: bool | None = None,
) -> AsyncGenerator[Event, None]:
    """Run one user task to an answer, a limit, an error or cancellation; yield its events.

    ``task=None`` resumes the conversation's interrupted task: the calls of its last assistant
    turn that have no result yet are run (those recorded as completed are not run again), and
    the loop goes on from there. The last event is always :class:`FinalResult`. Cancelling
    the task that iterates this stops in-flight tools; the result then has status
    ``cancelled`` and what was done so far.
    """
    run = _TaskRun.open(s, conv, task, stream, thinking)
    limit = s.options.max_steps
    end: Answered | Stopped = Stopped(
        "step_limit", f"stopped after max_steps={limit} steps without an answer"
    )
    try:
        await run.start()
        while run.step < limit:
            async with contextlib.aclosing(run.run_step()) as events:
                async for event in events:
                    yield event
            outcome, run.outcome = run.outcome, None
            if isinstance(outcome, RedoWithThinking):
                run.redo(outcome.mode)
            elif isinstance(outcome, RunAgain):
                await run.advance(outcome)
            else:
                assert outcome is not None  # every step ends with its outcome
                end = outcome
                break
    except anyio.get_cancelled_exc_class():
        end = run.cancelled()
    except RuntimeError_ as exc:
        end = Stopped("error", str(exc), exc)
    except ContextOverflowError as exc:
        end = Stopped("error", f"{exc} {_LONGER_CONTEXT}", exc)
    yield FinalResult(run.result(end))


_LONGER_CONTEXT = (
    "Start a new session, shorten the task, or use a longer context "
    "(Agent(context_window=ContextWindow(max_tokens=131072)) with YaRN enabled)."
)


def _truncated_detail(request: GenerationRequest, generation: BudgetedGeneration) -> str:
    """Why a ``truncated`` run ended: the answer reached the completion-token limit."""
    used = generation.usage.completion_tokens or len(generation.token_ids)
    return (
        f"the answer was cut off at the completion-token limit ({used:,} tokens; a request "
        f"asks for at most max_tokens={request.sampling.max_tokens:,}, and no more than the "
        "context has room for); raise max_tokens (Agent(max_tokens=...), --max-tokens) or ask "
        "for a shorter answer"
    )


def _retry_budget_spent(s: LoopSettings, tally: _Tally) -> str | None:
    """Why the run must stop because tools keep failing, or ``None``."""
    for name, count in tally.errors_in_a_row.items():
        tool = s.tools.get(name)
        if tool is not None and count > tool.max_retries:
            return (
                f"tool {name!r} failed {count} times in a row, more than its max_retries="
                f"{tool.max_retries}; see the step records for its errors"
            )
    total = tally.tool_errors
    limit = s.options.max_tool_errors
    if total > limit:
        return (
            f"{total} tool errors in this run, more than max_tool_errors={limit}; "
            "the model keeps producing calls that fail (see the step records)"
        )
    return None
