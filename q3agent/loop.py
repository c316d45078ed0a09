"""The agent loop: policy → append-only prompt → generate → parse → tools → repeat.

One task of a conversation runs here, top to bottom. Everything around it (runtimes, the
prompt builder, the parser, tool execution, policies) lives in its own module; this file only
decides what happens in which order and what is recorded.
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

from q3agent.events import (
    ContentDelta,
    Event,
    FinalResult,
    ReasoningDelta,
    StepEnd,
    StepStart,
    ToolCallEvent,
    ToolProgress,
    ToolResultEvent,
)
from q3agent.memory.context_window import ContextOverflowError, ContextWindow, summary_request
from q3agent.memory.recorder import SessionRecorder
from q3agent.options import RunOptions
from q3agent.policy.base import Policy, ReconsideringPolicy, RunState, StepMode, ThinkingCapability
from q3agent.qwen3.chat_format import render_ids
from q3agent.qwen3.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolCallError,
    ToolMessage,
    UserMessage,
    pending_tool_calls,
)
from q3agent.qwen3.models import sampling_for
from q3agent.qwen3.parsing import Parsed, parse, parse_ids
from q3agent.qwen3.prompt import PromptBuilder
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
class Conversation:
    """A session's history: typed messages plus the append-only prompt ids.

    ``needs_render`` is set when the ids no longer end at a clean turn boundary (a run that
    stopped at a limit, an error or a cancellation, or a changed tool set): the next task then
    re-renders the conversation from its messages and records where the prefix diverged.
    """

    builder: PromptBuilder
    messages: list[Message] = field(default_factory=list)
    needs_render: bool = True
    previous_ids: Sequence[int] = ()
    """The last prompt of a builder that was replaced (to report the divergence)."""
    recorder: SessionRecorder | None = None
    """Persists the conversation as it happens (``Agent.session(store=...)``)."""
    context: ContextWindow | None = None
    """Summarises older turns when the prompt nears the model's window."""
    compact_floor: int = 0
    """Prompt length below which no new compaction is tried (after one that fell short)."""

    def add(self, message: Message) -> None:
        """Append a message (and persist it)."""
        self.messages.append(message)
        if self.recorder is not None:
            self.recorder.messages([message])

    def close_step(
        self, tool_messages: Sequence[ToolMessage], record: StepRecord | Mapping[str, Any]
    ) -> None:
        """Add a step's tool messages and, when persisting, close the step atomically."""
        self.messages.extend(tool_messages)
        if self.recorder is not None:
            data = record.to_json() if isinstance(record, StepRecord) else record
            self.recorder.step(data, tool_messages)

    def set_tools(self, tokenizer: Qwen3Tokenizer, tools: Sequence[dict[str, Any]]) -> None:
        """Use a new tool set from the next task on (the system turn changes: re-render)."""
        self.previous_ids = self.builder.ids or self.previous_ids
        self.builder = PromptBuilder(tokenizer, tools)
        self.needs_render = True

    def open_task(self, enable_thinking: bool | None) -> int | None:
        """Bring the prompt up to ``messages`` and open the next generation turn.

        At a clean turn boundary the newest user message is appended; otherwise (first task,
        a resumed or interrupted conversation, new tools, a compaction) the conversation is
        re-rendered. Returns the index where the prompt stopped being an extension of the
        previous one, or ``None`` when it only grew.
        """
        before = self.builder.ids or self.previous_ids
        if self.needs_render or self.builder.awaiting_generation or not self.builder.ids:
            self.builder.start(self.messages, enable_thinking=enable_thinking)
            self.needs_render = False
            self.previous_ids = ()
            if not before:
                return None
            after = self.builder.ids
            first_diff = next(
                (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), None
            )
            if first_diff is None:
                return None if len(after) >= len(before) else len(after)
            return first_diff
        user = self.messages[-1]
        assert isinstance(user, UserMessage)
        return self.builder.append_user(user, enable_thinking=enable_thinking).diverged_at


@dataclass
class _Tally:
    """Running counts the policy and the limits read."""

    usage: Usage = field(default_factory=Usage)
    tool_calls: int = 0
    failures: int = 0
    errors_by_tool: Counter[str] = field(default_factory=Counter)
    last_failed: bool = False
    last_had_calls: bool = False
    last_hit_budget: bool = False
    thinking_steps: int = 0
    thinking_tokens: int = 0
    soft_switch: bool | None = None
    """The user's /think or /no_think; only user and system turns set it, so once a task."""


def _state(
    s: LoopSettings,
    step: int,
    task_tokens: int,
    tally: _Tally,
    thinking: bool | None,
) -> RunState:
    """The snapshot of the run the policy decides from."""
    return RunState(
        step=step,
        task_tokens=task_tokens,
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
        user_enable_thinking=thinking,
    )


def _template_thinking(s: LoopSettings, mode: StepMode) -> bool | None:
    """The template's ``enable_thinking`` for a step: only hybrid models take the switch."""
    return mode.thinking if s.capability == "hybrid" else None


def _constraint(s: LoopSettings, step: int) -> ToolCallConstraint | None:
    if s.options.tool_choice == "auto" or step > 0 or not s.tools:
        return None
    choice = s.options.tool_choice
    chosen = s.tools.values() if choice == "required" else [s.tools[choice]]
    return ToolCallConstraint(tools=tuple(t.schema() for t in chosen), required=True)


def _assistant(parsed: Parsed) -> AssistantMessage:
    """The assistant turn as a message; unparseable call blocks stay visible in the content."""
    broken = "\n".join(e.raw for e in parsed.errors)
    content = f"{parsed.content}\n{broken}".strip("\n") if broken else parsed.content
    return AssistantMessage(
        content=content, reasoning_content=parsed.reasoning, tool_calls=list(parsed.tool_calls)
    )


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


def _step_record(
    index: int,
    mode: StepMode,
    generation: BudgetedGeneration,
    parsed: Parsed,
    started_at: float,
    latency: float,
    results: Sequence[ToolResult] = (),
    *,
    diverged_at: int | None = None,
    redone: bool = False,
) -> StepRecord:
    return StepRecord(
        index=index,
        thinking=mode.thinking,
        budget=mode.budget,
        reason=mode.reason,
        usage=generation.usage,
        latency_s=latency,
        reasoning=parsed.reasoning,
        content=parsed.content,
        tool_calls=tuple(parsed.calls),
        tool_results=tuple(results),
        hit_budget=generation.hit_budget,
        finish_reason=generation.finish_reason,
        prompt_diverged_at=diverged_at,
        redone=redone,
        started_at=started_at,
    )


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
    for r in results:
        if r.is_error:
            tally.errors_by_tool[r.name or "<unparsed>"] += 1
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
        if generation.ids_exact:
            return parse_ids(generation.token_ids, s.runtime.tokenizer).content
        return parse(generation.text).content

    fitted = await window.fit(conv.messages, summarize, [t.schema() for t in s.tools.values()])
    conv.messages[:] = fitted.messages
    conv.needs_render = True
    conv.compact_floor = fitted.tokens_after + window.max_tokens // 10
    if conv.recorder is not None:
        conv.recorder.replace(conv.messages)
    return True


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
    run_id = uuid.uuid4().hex[:12]
    tok = s.runtime.tokenizer
    tally = _Tally()
    steps: list[StepRecord] = []
    first_message = len(conv.messages)
    status: RunStatus = "step_limit"
    detail = f"stopped after max_steps={s.options.max_steps} steps without an answer"
    answer, reasoning = "", None
    error: BaseException | None = None

    pending = pending_tool_calls(conv.messages) if task is None else []
    if task is not None:
        conv.add(UserMessage(content=task))
    query = next((m.content for m in reversed(conv.messages) if isinstance(m, UserMessage)), "")
    task_tokens = tok.count(query)
    tally.soft_switch = soft_switch(conv.messages)
    schemas = tuple(t.schema() for t in s.tools.values())
    step = 0
    in_flight: int | None = None  # prompt tokens of the request in progress, None between
    streamed = 0  # and the completion tokens it has streamed so far
    try:
        if pending:  # resuming: finish the interrupted step's tool calls first
            ctx = RunContext(deps=s.deps, run_id=run_id, step=0, messages=tuple(conv.messages))
            results = await _run_tools(s, conv, pending, ctx)
            _account(s, tally, pending, results)
            conv.close_step([r.to_message() for r in results], {"resumed_calls": len(pending)})
        await _compact(s, conv, tally)
        mode = s.policy.decide(_state(s, 0, task_tokens, tally, thinking))
        diverged_at = conv.open_task(_template_thinking(s, mode))
        conv.needs_render = True  # until the task ends cleanly with an answer

        while step < s.options.max_steps:
            # 1. generate this step's completion (thinking under its budget when asked)
            yield StepStart(step, mode)
            prompt_open = s.capability == "thinking_only"
            if prompt_open:  # Thinking-2507: the template's generation prompt opens <think>
                conv.builder.append_text("<think>\n", trusted=True)
            # streamed deltas are parsed as they come; otherwise the whole completion, once
            parser = StreamParser(thinking_started=prompt_open, tokenizer=tok) if stream else None
            constraint = _constraint(s, step)
            constrained = constraint is not None
            sampling = mode.sampling
            if s.options.max_tokens is not None and sampling.max_tokens > s.options.max_tokens:
                sampling = sampling.with_(max_tokens=s.options.max_tokens)
            request = GenerationRequest(
                prompt_ids=conv.builder.ids,
                sampling=sampling,
                constraint=constraint,
                messages=tuple(conv.messages),
                tools=schemas,
                enable_thinking=_template_thinking(s, mode),
                request_id=f"{run_id}-{step}",
            )
            started, started_at = time.perf_counter(), time.time()
            generation: BudgetedGeneration | None = None
            # what this request has cost so far, counted if the run is cancelled before it ends
            in_flight, streamed = len(request.prompt_ids), 0
            async for item in generate_with_budget(
                s.runtime,
                request,
                mode.budget if mode.thinking else None,
                model_opens_think=not prompt_open,
                stream=stream,
            ):
                if isinstance(item, TextDelta):
                    assert parser is not None  # runtimes yield deltas only when streaming
                    streamed += len(item.token_ids)
                    for ev in _stream_events(parser, item, constrained=constrained):
                        if isinstance(ev, ReasoningDelta):
                            yield ReasoningDelta(step, ev.text)
                        elif isinstance(ev, ContentDelta):
                            yield ContentDelta(step, ev.text)
                        elif isinstance(ev, ToolCallEvent):
                            yield ToolCallEvent(step, ev.call)
                else:
                    generation = item
            assert generation is not None
            latency = time.perf_counter() - started
            parsed = parse_generation(
                tok, generation, thinking_started=prompt_open, constrained=constrained
            )
            in_flight = None
            tally.usage += generation.usage
            if mode.thinking:
                tally.thinking_steps += 1
                tally.thinking_tokens += generation.usage.reasoning_tokens
            tally.last_hit_budget = generation.hit_budget
            calls = parsed.calls
            if not stream:
                for call in calls:
                    yield ToolCallEvent(step, call)
            diverged, diverged_at = diverged_at, None  # reported on the step that saw it

            # 2. a final answer: the policy may ask for it once more, with thinking
            if not calls:
                redo = None
                if not mode.thinking and isinstance(s.policy, ReconsideringPolicy):
                    state = _state(s, step, task_tokens, tally, thinking)
                    redo = s.policy.reconsider(state, parsed)
                if redo is not None and step + 1 < s.options.max_steps:
                    record = _step_record(
                        step,
                        mode,
                        generation,
                        parsed,
                        started_at,
                        latency,
                        diverged_at=diverged,
                        redone=True,
                    )
                    steps.append(record)
                    yield StepEnd(record)
                    mode = redo
                    conv.builder.reopen_generation(enable_thinking=_template_thinking(s, mode))
                    step += 1
                    continue
                message = _assistant(parsed)
                conv.builder.append_generation(
                    generation.token_ids, message=message, finish_reason=generation.finish_reason
                )
                conv.add(message)
                record = _step_record(
                    step, mode, generation, parsed, started_at, latency, diverged_at=diverged
                )
                conv.close_step([], record)
                conv.needs_render = False
                steps.append(record)
                yield StepEnd(record)
                status, detail = "answer", ""
                if generation.finish_reason == "length":
                    status, detail = "truncated", _truncated_detail(request, generation)
                answer, reasoning = parsed.content, parsed.reasoning
                break

            # 3. tool calls: run them concurrently, answer each in call order
            message = _assistant(parsed)
            conv.builder.append_generation(
                generation.token_ids, message=message, finish_reason=generation.finish_reason
            )
            conv.add(message)
            ctx = RunContext(deps=s.deps, run_id=run_id, step=step, messages=tuple(conv.messages))
            results = []
            async for progress_or_results in _run_tools_reporting(s, conv, calls, ctx):
                if isinstance(progress_or_results, ToolProgress):
                    yield progress_or_results
                else:
                    results = progress_or_results
            for tool_result in results:
                yield ToolResultEvent(step, tool_result)
            stop = _account(s, tally, calls, results)
            tool_messages = [r.to_message() for r in results]
            record = _step_record(
                step, mode, generation, parsed, started_at, latency, results, diverged_at=diverged
            )
            conv.close_step(tool_messages, record)
            steps.append(record)
            yield StepEnd(record)
            step += 1

            # 4. budgets and limits, then the next step's mode and generation prompt
            if stop is not None:
                status, detail = "error", stop
                break
            over = s.options.usage_limits.exceeded(tally.usage)
            if over is not None:
                status, detail = "usage_limit", over
                break
            mode = s.policy.decide(_state(s, step, task_tokens, tally, thinking))
            if await _compact(s, conv, tally):
                diverged_at = conv.open_task(_template_thinking(s, mode))
                conv.needs_render = True
            else:
                conv.builder.append_tool_results(
                    tool_messages, enable_thinking=_template_thinking(s, mode)
                )
    except anyio.get_cancelled_exc_class():
        status, detail = "cancelled", "the run was cancelled"
        if in_flight is not None:  # the request it was waiting for ran (in part): count it
            tally.usage += Usage(prompt_tokens=in_flight, completion_tokens=streamed, requests=1)
    except RuntimeError_ as exc:
        status, detail, error = "error", str(exc), exc
    except ContextOverflowError as exc:
        status, error = "error", exc
        detail = (
            f"{exc} Start a new session, shorten the task, or use a longer context "
            "(Agent(context_window=ContextWindow(max_tokens=131072)) with YaRN enabled)."
        )

    result = RunResult(
        answer=answer,
        reasoning=reasoning,
        messages=list(conv.messages[first_message:]),
        steps=steps,
        usage=tally.usage,
        status=status,
        detail=detail,
        run_id=run_id,
        prompt_ids=conv.builder.ids.to_tuple(),
        error=error,
    )
    yield FinalResult(result)


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
    for name, count in tally.errors_by_tool.items():
        tool = s.tools.get(name)
        if tool is not None and count > tool.max_retries:
            return (
                f"tool {name!r} failed {count} times, more than its max_retries="
                f"{tool.max_retries}; see the step records for its errors"
            )
    total = sum(tally.errors_by_tool.values())
    limit = s.options.max_tool_errors
    if total > limit:
        return (
            f"{total} tool errors in this run, more than max_tool_errors={limit}; "
            "the model keeps producing calls that fail (see the step records)"
        )
    return None
