"""The agent loop: policy → append-only prompt → generate → parse → tools → repeat.

One task of a conversation runs here, top to bottom. Everything around it (runtimes, the
prompt builder, the parser, tool execution, policies) lives in its own module; this file only
decides what happens in which order and what is recorded.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from q3agent.events import (
    ContentDelta,
    Event,
    FinalResult,
    ReasoningDelta,
    StepEnd,
    StepStart,
    ToolCallEvent,
    ToolResultEvent,
)
from q3agent.policy.base import Policy, ReconsideringPolicy, RunState, StepMode, ThinkingCapability
from q3agent.qwen3.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolCallError,
    UserMessage,
)
from q3agent.qwen3.parsing import Parsed, parse
from q3agent.qwen3.prompt import PromptBuilder
from q3agent.qwen3.streaming import ContentDelta as ParsedContent
from q3agent.qwen3.streaming import ReasoningDelta as ParsedReasoning
from q3agent.qwen3.streaming import StreamParser
from q3agent.qwen3.streaming import ToolCallEvent as ParsedCall
from q3agent.qwen3.thinking import soft_switch
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import RunResult, RunStatus, StepRecord, UsageLimits
from q3agent.serving.base import (
    GenerationRequest,
    Runtime,
    RuntimeError_,
    ToolCallConstraint,
    Usage,
)
from q3agent.serving.budget import BudgetedGeneration, TextDelta, generate_with_budget
from q3agent.tools.base import Tool
from q3agent.tools.context import RunContext
from q3agent.tools.executor import ApprovalCallback, ToolResult, execute_tool_calls

ToolChoice = Literal["auto", "required"] | str
"""``auto``: the model decides; ``required``: the first step must call a tool; a tool name:
the first step must call that tool. Enforced by constrained decoding where the runtime can."""


@dataclass(frozen=True)
class LoopSettings:
    """Everything fixed for a run: model, tools, policy and limits (built by ``Agent``)."""

    runtime: Runtime
    policy: Policy
    tools: Mapping[str, Tool]
    capability: ThinkingCapability
    max_steps: int
    usage_limits: UsageLimits
    max_tool_errors: int
    tool_timeout: float | None
    approve: ApprovalCallback | None
    max_output_chars: int
    deps: Any
    tool_choice: ToolChoice = "auto"


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
    previous_ids: tuple[int, ...] = ()
    """The last prompt of a builder that was replaced (to report the divergence)."""

    def set_tools(self, tokenizer: Qwen3Tokenizer, tools: Sequence[dict[str, Any]]) -> None:
        """Use a new tool set from the next task on (the system turn changes: re-render)."""
        self.previous_ids = self.builder.ids or self.previous_ids
        self.builder = PromptBuilder(tokenizer, tools)
        self.needs_render = True

    def open_task(self, enable_thinking: bool | None) -> int | None:
        """Add the newest user message (already in ``messages``) and a generation prompt.

        Returns the index where the prompt stopped being an extension of the previous one, or
        ``None`` when it only grew.
        """
        before = self.builder.ids or self.previous_ids
        if self.needs_render or self.builder.awaiting_generation or not self.builder.ids:
            self.builder.start(self.messages, enable_thinking=enable_thinking)
            self.needs_render = False
            self.previous_ids = ()
            if not before:
                return None
            after = self.builder.ids
            same = next(
                (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), None
            )
            if same is None and len(after) >= len(before):
                return None
            return same if same is not None else len(after)
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
        max_steps=s.max_steps,
        soft_switch=tally.soft_switch,
        user_enable_thinking=thinking,
    )


def _template_thinking(s: LoopSettings, mode: StepMode) -> bool | None:
    """The template's ``enable_thinking`` for a step: only hybrid models take the switch."""
    return mode.thinking if s.capability == "hybrid" else None


def _constraint(s: LoopSettings, step: int) -> ToolCallConstraint | None:
    if s.tool_choice == "auto" or step > 0 or not s.tools:
        return None
    chosen = s.tools.values() if s.tool_choice == "required" else [s.tools[s.tool_choice]]
    return ToolCallConstraint(tools=tuple(t.schema() for t in chosen), required=True)


def _assistant(parsed: Parsed) -> AssistantMessage:
    """The assistant turn as a message; unparseable call blocks stay visible in the content."""
    broken = "\n".join(e.raw for e in parsed.errors)
    content = f"{parsed.content}\n{broken}".strip("\n") if broken else parsed.content
    return AssistantMessage(
        content=content, reasoning_content=parsed.reasoning, tool_calls=list(parsed.tool_calls)
    )


def _is_failure(result: ToolResult) -> bool:
    """An error, or an empty result: both send the policy into recovery."""
    return result.is_error or not result.content.strip()


async def run_task(
    s: LoopSettings,
    conv: Conversation,
    task: str,
    *,
    stream: bool = False,
    thinking: bool | None = None,
) -> AsyncGenerator[Event, None]:
    """Run one user task to an answer, a limit, an error or cancellation; yield its events.

    The last event is always :class:`FinalResult`. Cancelling the task that iterates this
    stops in-flight tools; the result then has status ``cancelled`` and what was done so far.
    """
    run_id = uuid.uuid4().hex[:12]
    tok = s.runtime.tokenizer
    tally = _Tally()
    steps: list[StepRecord] = []
    first_message = len(conv.messages)
    status: RunStatus = "step_limit"
    detail = f"stopped after max_steps={s.max_steps} steps without an answer"
    answer, reasoning = "", None
    error: BaseException | None = None

    conv.messages.append(UserMessage(content=task))
    task_tokens = tok.count(task)
    tally.soft_switch = soft_switch(conv.messages)
    mode = s.policy.decide(_state(s, 0, task_tokens, tally, thinking))
    diverged_at = conv.open_task(_template_thinking(s, mode))
    conv.needs_render = True  # until the task ends cleanly with an answer

    try:
        step = 0
        while step < s.max_steps:
            # 1. generate this step's completion (thinking under its budget when asked)
            yield StepStart(step, mode)
            prompt_open = s.capability == "thinking_only"
            if prompt_open:  # Thinking-2507: the template's generation prompt opens <think>
                conv.builder.append_text("<think>\n", trusted=True)
            parser = StreamParser(thinking_started=prompt_open)
            request = GenerationRequest(
                prompt_ids=conv.builder.ids,
                sampling=mode.sampling,
                constraint=_constraint(s, step),
                messages=tuple(conv.messages),
                tools=tuple(t.schema() for t in s.tools.values()),
                enable_thinking=_template_thinking(s, mode),
                request_id=f"{run_id}-{step}",
            )
            started, started_at = time.perf_counter(), time.time()
            generation: BudgetedGeneration | None = None
            async for item in generate_with_budget(
                s.runtime,
                request,
                mode.budget if mode.thinking else None,
                model_opens_think=not prompt_open,
                stream=stream,
            ):
                if isinstance(item, TextDelta):
                    for ev in parser.feed(item.text):
                        if isinstance(ev, ParsedReasoning):
                            yield ReasoningDelta(step, ev.text)
                        elif isinstance(ev, ParsedContent):
                            yield ContentDelta(step, ev.text)
                        elif isinstance(ev, ParsedCall):
                            yield ToolCallEvent(step, ev.call)
                else:
                    generation = item
            assert generation is not None
            latency = time.perf_counter() - started
            parsed = parse(generation.text, thinking_started=prompt_open)
            tally.usage += generation.usage
            if mode.thinking:
                tally.thinking_steps += 1
                tally.thinking_tokens += generation.usage.reasoning_tokens
            tally.last_hit_budget = generation.hit_budget
            calls = parsed.calls
            if not stream:
                for call in calls:
                    yield ToolCallEvent(step, call)

            def record(
                results: Sequence[ToolResult] = (),
                redone: bool = False,
                *,
                _mode: StepMode = mode,
                _gen: BudgetedGeneration = generation,
                _parsed: Parsed = parsed,
                _calls: Sequence[ToolCall | ToolCallError] = calls,
                _latency: float = latency,
                _step: int = step,
                _started_at: float = started_at,
            ) -> StepRecord:
                steps.append(
                    StepRecord(
                        index=_step,
                        thinking=_mode.thinking,
                        budget=_mode.budget,
                        reason=_mode.reason,
                        usage=_gen.usage,
                        latency_s=_latency,
                        reasoning=_parsed.reasoning,
                        content=_parsed.content,
                        tool_calls=tuple(_calls),
                        tool_results=tuple(results),
                        hit_budget=_gen.hit_budget,
                        finish_reason=_gen.finish_reason,
                        prompt_diverged_at=diverged_at if _step == 0 else None,
                        redone=redone,
                        started_at=_started_at,
                    )
                )
                return steps[-1]

            # 2. a final answer: the policy may ask for it once more, with thinking
            if not calls:
                redo = None
                if not mode.thinking and isinstance(s.policy, ReconsideringPolicy):
                    state = _state(s, step, task_tokens, tally, thinking)
                    redo = s.policy.reconsider(state, parsed)
                if redo is not None and step + 1 < s.max_steps:
                    yield StepEnd(record(redone=True))
                    mode = redo
                    conv.builder.reopen_generation(enable_thinking=_template_thinking(s, mode))
                    step += 1
                    continue
                conv.builder.append_generation(
                    generation.token_ids,
                    message=_assistant(parsed),
                    finish_reason=generation.finish_reason,
                )
                conv.messages.append(_assistant(parsed))
                conv.needs_render = False
                yield StepEnd(record())
                status, detail = "answer", ""
                answer, reasoning = parsed.content, parsed.reasoning
                break

            # 3. tool calls: run them concurrently, answer each in call order
            conv.builder.append_generation(
                generation.token_ids,
                message=_assistant(parsed),
                finish_reason=generation.finish_reason,
            )
            conv.messages.append(_assistant(parsed))
            ctx = RunContext(deps=s.deps, run_id=run_id, step=step, messages=tuple(conv.messages))
            results = await execute_tool_calls(
                calls,
                s.tools,
                ctx,
                default_timeout=s.tool_timeout,
                approve=s.approve,
                max_output_chars=s.max_output_chars,
            )
            for tool_result in results:
                yield ToolResultEvent(step, tool_result)
            tally.tool_calls += sum(isinstance(c, ToolCall) for c in calls)
            failed = [r for r in results if _is_failure(r)]
            tally.failures += len(failed)
            tally.last_failed = bool(failed)
            tally.last_had_calls = True
            for r in results:
                if r.is_error:
                    tally.errors_by_tool[r.name or "<unparsed>"] += 1
            tool_messages = [r.to_message() for r in results]
            conv.messages.extend(tool_messages)
            yield StepEnd(record(results))
            step += 1

            # 4. budgets and limits, then the next step's mode and generation prompt
            stop = _retry_budget_spent(s, tally)
            if stop is not None:
                status, detail = "error", stop
                break
            over = s.usage_limits.exceeded(tally.usage)
            if over is not None:
                status, detail = "usage_limit", over
                break
            mode = s.policy.decide(_state(s, step, task_tokens, tally, thinking))
            conv.builder.append_tool_results(
                tool_messages, enable_thinking=_template_thinking(s, mode)
            )
    except anyio.get_cancelled_exc_class():
        status, detail = "cancelled", "the run was cancelled"
    except RuntimeError_ as exc:
        status, detail, error = "error", str(exc), exc

    result = RunResult(
        answer=answer,
        reasoning=reasoning,
        messages=list(conv.messages[first_message:]),
        steps=steps,
        usage=tally.usage,
        status=status,
        detail=detail,
        run_id=run_id,
        prompt_ids=conv.builder.ids,
        error=error,
    )
    yield FinalResult(result)


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
    if total > s.max_tool_errors:
        return (
            f"{total} tool errors in this run, more than max_tool_errors={s.max_tool_errors}; "
            "the model keeps producing calls that fail (see the step records)"
        )
    return None
