"""Executing the model's tool calls: validation, approvals, concurrency, timeouts, truncation.

:func:`execute_tool_calls` answers every call block of one model turn with exactly one
:class:`ToolResult`, in call order. Model mistakes (unparseable calls, unknown tools, invalid
arguments) and tool failures (exceptions, timeouts) become error results the model reads and can
correct, never exceptions for the caller. What does propagate: cancellation of the caller, and
exceptions raised by the approval callback (a bug in the application, not in the model).

Calls run concurrently in one anyio task group. Calls needing approval are asked about one at
a time, in call order (so a human is never shown two prompts at once), while the other calls
already run; each approved call starts as soon as it is approved.

Sync tools run in worker threads. Python cannot interrupt a thread, so when a sync tool times
out or the caller is cancelled the executor stops waiting (``abandon_on_cancel=True``) and the
thread runs on in the background until the function returns; its result is discarded. Async
tools are cancelled properly: they see anyio's cancellation at their next ``await``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import anyio
import anyio.abc
import anyio.to_thread

from q3agent.qwen3.messages import ToolCall, ToolCallError, ToolMessage
from q3agent.tools.base import Tool, ToolArgumentsError, ToolError, resolve_ref
from q3agent.tools.context import RunContext

__all__ = [
    "TOOL_CALL_FORMAT",
    "ApprovalCallback",
    "ToolErrorKind",
    "ToolResult",
    "execute_tool_calls",
    "signature_hint",
    "truncate_middle",
]

logger = logging.getLogger(__name__)

ToolErrorKind = Literal[
    "parse_error",
    "unknown_tool",
    "invalid_arguments",
    "exception",
    "timeout",
    "denied",
    "cancelled",
]
"""Why a call failed. ``cancelled`` is for callers that record calls abandoned by a cancelled
run; the executor itself lets cancellation propagate instead of returning results."""

ApprovalCallback = Callable[[ToolCall, Tool], Awaitable[bool | str] | bool | str]
"""Asked before each call of a tool with ``requires_approval``: return ``True`` to run it,
``False`` to deny it, or a string to deny it with that reason (the model sees it). Sync callbacks
run in a worker thread, so one may block on ``input()``."""

TOOL_CALL_FORMAT = (
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
"""The call format Qwen3's chat template teaches, quoted in parse-error results."""


_DENIED = (
    "Error: the call to '{name}' was not run: {reason}. "
    "Do not repeat it; continue without it or ask the user how to proceed."
)
_TIMED_OUT = (
    "Error: '{name}' did not finish within {seconds:g} seconds and was stopped. "
    "Try again with a smaller request, or continue without it."
)


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call block; :meth:`to_message` is what goes back to the model."""

    call_id: str
    name: str | None
    content: str
    """The text the model reads inside ``<tool_response>``."""
    is_error: bool
    error_kind: ToolErrorKind | None
    output: Any = None
    """The raw return value (or the exception a tool raised); kept for traces, never sent."""
    truncated: bool = False
    """Whether :attr:`content` was cut to ``max_output_chars``."""
    duration_s: float = 0.0
    """Seconds the tool itself ran (0 for calls that never ran)."""

    @classmethod
    def ok(cls, call_id: str, name: str | None, content: str, output: Any = None) -> ToolResult:
        """A call that ran and returned: ``content`` is the rendered ``output``."""
        return cls(call_id, name, content, is_error=False, error_kind=None, output=output)

    @classmethod
    def error(
        cls,
        call_id: str,
        name: str | None,
        kind: ToolErrorKind,
        content: str,
        output: Any = None,
    ) -> ToolResult:
        """A call that failed for reason ``kind``; ``content`` tells the model what to do next
        and ``output`` may keep the exception."""
        return cls(call_id, name, content, is_error=True, error_kind=kind, output=output)

    @classmethod
    def denied(cls, call_id: str, name: str, reason: str) -> ToolResult:
        """A call that was not run because approval was refused; ``reason`` says why."""
        return cls.error(call_id, name, "denied", _DENIED.format(name=name, reason=reason))

    @classmethod
    def timeout(cls, call_id: str, name: str, seconds: float) -> ToolResult:
        """A call stopped after running ``seconds`` (its limit) without finishing."""
        return cls.error(call_id, name, "timeout", _TIMED_OUT.format(name=name, seconds=seconds))

    def to_message(self) -> ToolMessage:
        """The :class:`ToolMessage` answering this call."""
        return ToolMessage(
            content=self.content,
            tool_call_id=self.call_id,
            name=self.name,
            is_error=self.is_error,
        )


# --------------------------------------------------------------------------------------------
# Text helpers


def truncate_middle(text: str, max_chars: int | None) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_chars`` characters, keeping its head and tail.

    The cut is marked in the middle: ``[… 12,345 characters truncated …]``. Returns the text and
    whether it was cut. ``None`` means no limit.
    """
    if max_chars is None or len(text) <= max_chars:
        return text, False

    def note(removed: int) -> str:
        return f"\n[… {removed:,} characters truncated …]\n"

    keep = max_chars - len(note(len(text)))
    if keep <= 0:
        return text[:max_chars], True
    head = (keep + 1) // 2
    tail = keep - head
    removed = len(text) - head - tail
    return text[:head] + note(removed) + (text[-tail:] if tail else ""), True


def _type_hint(schema: Any, root: Mapping[str, Any], depth: int = 0) -> str:
    if not isinstance(schema, Mapping) or depth > 3:
        return "any"
    if isinstance(schema.get("$ref"), str):
        target = resolve_ref(root, schema["$ref"])
        return _type_hint(target, root, depth + 1) if target is not None else "object"
    if "enum" in schema:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return " | ".join(dict.fromkeys(_type_hint(s, root, depth + 1) for s in schema[key]))
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"array of {_type_hint(items, root, depth + 1)}" if items else "array"
    return str(kind) if kind else "any"


def signature_hint(tool: Tool, limit: int = 600) -> str:
    """A one-line reminder of a tool's arguments: ``get_weather(city: string, unit?: "c" | "f")``.

    Optional arguments carry ``?``, or ``= default`` when the schema gives a default.
    """
    params = tool.parameters if isinstance(tool.parameters, Mapping) else {}
    props = params.get("properties", {})
    required = set(params.get("required", []))
    parts: list[str] = []
    if isinstance(props, Mapping):
        for name, schema in props.items():
            text = f"{name}: {_type_hint(schema, params)}"
            if name not in required:
                if isinstance(schema, Mapping) and "default" in schema:
                    text += f" = {json.dumps(schema['default'], ensure_ascii=False)}"
                else:
                    text = text.replace(":", "?:", 1)
            parts.append(text)
    hint = f"{tool.name}({', '.join(parts)})"
    return hint if len(hint) <= limit else hint[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Results for calls that never run


def _parse_error(item: ToolCallError) -> ToolResult:
    raw, _ = truncate_middle(item.raw.strip(), 600)
    content = (
        f"Error: your tool call could not be parsed: {item.error}\n"
        f"You wrote:\n{raw}\n"
        f"Write each call as:\n{TOOL_CALL_FORMAT}\n"
        "with valid JSON and the arguments as a JSON object, then try again."
    )
    return ToolResult.error(item.id, item.name, "parse_error", content)


def _unknown_tool(call: ToolCall, tools: Mapping[str, Tool]) -> ToolResult:
    names = list(tools)
    if not names:
        content = (
            f"Error: there is no tool named '{call.name}', and no tools are available. "
            "Answer without calling a tool."
        )
        return ToolResult.error(call.id, call.name, "unknown_tool", content)
    close = difflib.get_close_matches(call.name, names, n=3, cutoff=0.5)
    ordered = close + [n for n in names if n not in close]
    shown = ", ".join(ordered[:30])
    if len(ordered) > 30:
        shown += f" and {len(ordered) - 30} more"
    suggestion = f" Did you mean '{close[0]}'?" if close else ""
    content = (
        f"Error: there is no tool named '{call.name}'.{suggestion} Available tools: {shown}. "
        "Call one of these by its exact name, or answer without a tool."
    )
    return ToolResult.error(call.id, call.name, "unknown_tool", content)


def _invalid_arguments(call: ToolCall, tool: Tool, exc: ToolArgumentsError) -> ToolResult:
    content = (
        f"Error: invalid arguments for '{tool.name}':\n{exc}\n"
        f"Expected: {signature_hint(tool)}\n"
        f"Call '{tool.name}' again with corrected arguments."
    )
    return ToolResult.error(call.id, tool.name, "invalid_arguments", content, exc)


# --------------------------------------------------------------------------------------------
# The executor


async def _ask_approval(approve: ApprovalCallback, call: ToolCall, tool: Tool) -> bool | str:
    if inspect.iscoroutinefunction(approve) or inspect.iscoroutinefunction(
        getattr(approve, "__call__", None)  # noqa: B004 - a callable object's method
    ):
        verdict: Any = await cast(Awaitable[bool | str], approve(call, tool))
    else:
        verdict = await anyio.to_thread.run_sync(approve, call, tool, abandon_on_cancel=True)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    if isinstance(verdict, str):
        return verdict
    return bool(verdict)


_Job = tuple[int, ToolCall, Tool, Any]
"""A call ready to run: its slot in the results, the call, its tool, validated arguments."""


def _prepare(
    item: ToolCall | ToolCallError, tools: Mapping[str, Tool]
) -> ToolResult | tuple[ToolCall, Tool, Any]:
    """The result of a call that cannot run (unparseable, unknown tool, invalid arguments), or
    the call with its tool and validated arguments."""
    if isinstance(item, ToolCallError):
        return _parse_error(item)
    tool = tools.get(item.name)
    if tool is None:
        return _unknown_tool(item, tools)
    try:
        return item, tool, tool.validate(item.arguments)
    except ToolArgumentsError as exc:
        return _invalid_arguments(item, tool, exc)
    except Exception as exc:
        content = f"Error: could not check the arguments of '{tool.name}': {exc}"
        return ToolResult.error(item.id, tool.name, "exception", content, exc)


async def _call_tool(
    call: ToolCall, tool: Tool, arguments: Any, ctx: RunContext[Any]
) -> ToolResult:
    """Run one call and turn what it returned or raised into a result."""
    try:
        output = await tool.call(arguments, ctx)
        return ToolResult.ok(call.id, tool.name, tool.render(output), output)
    except ToolArgumentsError as exc:
        return _invalid_arguments(call, tool, exc)
    except ToolError as exc:
        return ToolResult.error(call.id, tool.name, "exception", f"Error: {exc}", exc)
    except Exception as exc:
        content = (
            f"Error: '{tool.name}' failed with {type(exc).__name__}: {exc}\n"
            "Check the arguments and try again, or continue without this tool."
        )
        return ToolResult.error(call.id, tool.name, "exception", content, exc)


async def _run_with_timeout(
    call: ToolCall,
    tool: Tool,
    arguments: Any,
    ctx: RunContext[Any],
    default_timeout: float | None,
) -> ToolResult:
    """Run one call under its time limit, with ``ctx.tool_call`` set; timed in ``duration_s``."""
    limit = tool.timeout if tool.timeout is not None else default_timeout
    result: ToolResult | None = None
    start = time.perf_counter()
    with anyio.move_on_after(limit) as scope:
        result = await _call_tool(call, tool, arguments, dataclasses.replace(ctx, tool_call=call))
    duration = time.perf_counter() - start
    if scope.cancelled_caught or result is None:
        result = ToolResult.timeout(call.id, tool.name, limit or 0.0)
    return dataclasses.replace(result, duration_s=duration)


async def _denial(approve: ApprovalCallback | None, call: ToolCall, tool: Tool) -> str | None:
    """``None`` when the call may run, else why it was denied (no callback, or the user)."""
    if approve is None:
        logger.warning(
            "tool %r requires approval but no approval callback is configured; the call was denied",
            tool.name,
        )
        return "this tool requires approval and no approval callback is configured"
    verdict = await _ask_approval(approve, call, tool)
    if verdict is True:
        return None
    reason = verdict.strip() if isinstance(verdict, str) else ""
    return f"the user denied it ({reason})" if reason else "the user denied it"


async def execute_tool_calls(
    calls: Sequence[ToolCall | ToolCallError],
    tools: Mapping[str, Tool],
    ctx: RunContext[Any],
    *,
    default_timeout: float | None = 60.0,
    approve: ApprovalCallback | None = None,
    max_output_chars: int | None = 16_000,
) -> list[ToolResult]:
    """Run one turn's tool calls concurrently; one :class:`ToolResult` per item, in call order.

    Args:
        calls: The turn's parsed calls and unparseable call blocks (ordered by ``.index``).
        tools: The tools the model may call, by name.
        ctx: The run context; each call gets a copy with ``tool_call`` set.
        default_timeout: Seconds a call may take when its tool sets no ``timeout``
            (``None``: no limit).
        approve: Asked before running tools with ``requires_approval``; see
            :data:`ApprovalCallback`. Without it such calls are denied.
        max_output_chars: Longer result texts keep their head and tail with a note in the
            middle (``None``: no limit).

    Cancelling the caller cancels the calls in flight and propagates; see the module docstring
    for what that means for sync tools.
    """
    items = sorted(calls, key=lambda c: c.index)
    results: list[ToolResult | None] = [None] * len(items)

    def finish(slot: int, result: ToolResult) -> None:
        content, cut = truncate_middle(result.content, max_output_chars)
        results[slot] = dataclasses.replace(result, content=content, truncated=cut)

    async def run(slot: int, call: ToolCall, tool: Tool, arguments: Any) -> None:
        finish(slot, await _run_with_timeout(call, tool, arguments, ctx, default_timeout))

    async def approve_then_run(tg: anyio.abc.TaskGroup) -> None:
        # one approval at a time, in call order; each approved call starts at once
        for slot, call, tool, arguments in awaiting_approval:
            denial = await _denial(approve, call, tool)
            if denial is None:
                tg.start_soon(run, slot, call, tool, arguments)
            else:
                finish(slot, ToolResult.denied(call.id, call.name, denial))

    awaiting_approval: list[_Job] = []
    ready: list[_Job] = []
    for slot, item in enumerate(items):
        prepared = _prepare(item, tools)
        if isinstance(prepared, ToolResult):
            finish(slot, prepared)
        else:
            job = (slot, *prepared)
            (awaiting_approval if prepared[1].requires_approval else ready).append(job)

    if len(ready) == 1 and not awaiting_approval:
        await run(*ready[0])  # the common single call: no task group needed
    elif ready or awaiting_approval:
        async with anyio.create_task_group() as tg:
            for job in ready:
                tg.start_soon(run, *job)
            if awaiting_approval:
                tg.start_soon(approve_then_run, tg)

    done = [result for result in results if result is not None]
    assert len(done) == len(items)  # every slot is filled before the task group exits
    return done
