"""Tests for execute_tool_calls: order, concurrency, errors, approvals, timeouts, cancelling."""

import re
import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from q3agent.qwen3.messages import ToolCall, ToolCallError, ToolMessage
from q3agent.tools import (
    TOOL_CALL_FORMAT,
    RunContext,
    Tool,
    ToolError,
    ToolResult,
    execute_tool_calls,
    tool,
    truncate_middle,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ctx(deps: Any = None) -> RunContext[Any]:
    return RunContext(deps=deps, run_id="run-1", step=3, messages=[])


def _call(name: str, index: int = 0, **arguments: Any) -> ToolCall:
    return ToolCall(name=name, arguments=arguments, index=index)


@tool
def get_weather(city: str, unit: str = "c") -> str:
    """Weather in a city."""
    return f"{city}: 21°{unit.upper()}"


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def get_time(zone: str) -> str:
    """Time in a zone."""
    return "12:00"


TOOLS: dict[str, Tool] = {t.name: t for t in (get_weather, add, get_time)}


async def test_sync_tool_runs_in_a_worker_thread() -> None:
    threads: list[int] = []

    @tool
    def where() -> str:
        """Report the thread."""
        threads.append(threading.get_ident())
        return "ok"

    (result,) = await execute_tool_calls([_call("where")], {"where": where}, _ctx())
    assert result.content == "ok"
    assert result.is_error is False
    assert result.error_kind is None
    assert threads
    assert threads[0] != threading.get_ident()


async def test_async_tool_result_and_message() -> None:
    call = _call("add", a=2, b=40)
    (result,) = await execute_tool_calls([call], TOOLS, _ctx())
    assert result == ToolResult(
        call_id=call.id,
        name="add",
        content="42",
        is_error=False,
        error_kind=None,
        output=42,
        duration_s=result.duration_s,
    )
    assert result.duration_s >= 0
    assert result.to_message() == ToolMessage(
        content="42", tool_call_id=call.id, name="add", is_error=False
    )


async def test_each_call_sees_its_own_call_in_the_context() -> None:
    @tool
    async def echo_call(ctx: RunContext[str], word: str) -> str:
        """Echo."""
        assert ctx.tool_call is not None
        return f"{ctx.deps}:{ctx.tool_call.id}:{word}:{ctx.step}"

    calls = [_call("echo_call", i, word=w) for i, w in enumerate(["a", "b"])]
    ctx = _ctx("deps")
    results = await execute_tool_calls(calls, {"echo_call": echo_call}, ctx)
    assert [r.content for r in results] == [
        f"deps:{c.id}:{w}:3" for c, w in zip(calls, "ab", strict=True)
    ]
    assert ctx.tool_call is None  # the caller's context is not modified


async def test_calls_run_concurrently_and_results_come_back_in_call_order() -> None:
    n = 4
    started = 0
    all_started = anyio.Event()
    finished = {i: anyio.Event() for i in range(n)}
    finish_order: list[int] = []

    @tool
    async def barrier(i: int) -> str:
        """Wait until every call has started (deadlocks if calls run one at a time)."""
        nonlocal started
        started += 1
        if started == n:
            all_started.set()
        await all_started.wait()
        # Finish in reverse order to prove results are re-ordered by call index.
        if i + 1 < n:
            await finished[i + 1].wait()
        finish_order.append(i)
        finished[i].set()
        return f"done {i}"

    calls = [_call("barrier", index=i, i=i) for i in (2, 0, 3, 1)]
    with anyio.fail_after(10):
        results = await execute_tool_calls(calls, {"barrier": barrier}, _ctx())
    assert [r.content for r in results] == [f"done {i}" for i in range(n)]
    assert [r.call_id for r in results] == [c.id for c in sorted(calls, key=lambda c: c.index)]
    assert finish_order == [3, 2, 1, 0]


async def test_sync_tools_also_run_concurrently() -> None:
    n = 3
    barrier = threading.Barrier(n, timeout=10)

    @tool
    def wait_for_others(i: int) -> int:
        """Blocks until all calls are in their threads."""
        barrier.wait()
        return i

    calls = [_call("wait_for_others", index=i, i=i) for i in range(n)]
    results = await execute_tool_calls(calls, {"wait_for_others": wait_for_others}, _ctx())
    assert [r.content for r in results] == ["0", "1", "2"]
    assert not any(r.is_error for r in results)


async def test_parse_error_item_quotes_the_raw_text_and_the_expected_format() -> None:
    broken = ToolCallError(
        raw='{"name": "get_weather", "arguments": {"city": "Paris"',
        error="invalid JSON: unexpected end of input",
        name="get_weather",
        index=1,
    )
    results = await execute_tool_calls(
        [broken, _call("get_time", index=0, zone="UTC")], TOOLS, _ctx()
    )
    assert [r.name for r in results] == ["get_time", "get_weather"]
    result = results[1]
    assert result.call_id == broken.id
    assert result.error_kind == "parse_error"
    assert result.is_error
    assert "invalid JSON: unexpected end of input" in result.content
    assert '{"name": "get_weather", "arguments": {"city": "Paris"' in result.content
    assert TOOL_CALL_FORMAT in result.content


async def test_unknown_tool_suggests_the_closest_name_first() -> None:
    (result,) = await execute_tool_calls([_call("get_wether", city="Oslo")], TOOLS, _ctx())
    assert result.error_kind == "unknown_tool"
    assert "no tool named 'get_wether'" in result.content
    assert "Did you mean 'get_weather'?" in result.content
    assert "Available tools: get_weather, " in result.content
    assert "add" in result.content
    assert "get_time" in result.content

    (result,) = await execute_tool_calls([_call("anything")], {}, _ctx())
    assert result.error_kind == "unknown_tool"
    assert "no tools are available" in result.content


async def test_invalid_arguments_give_the_problem_and_a_signature_hint() -> None:
    ran: list[int] = []

    @tool
    def book(room: int, when: str, note: str | None = None) -> str:
        """Book a room."""
        ran.append(room)
        return "booked"

    (result,) = await execute_tool_calls(
        [_call("book", room="big", extra=1)], {"book": book}, _ctx()
    )
    assert result.error_kind == "invalid_arguments"
    assert "argument 'room' must be an integer; got 'big'" in result.content
    assert "missing required argument 'when'" in result.content
    assert "unexpected argument 'extra'" in result.content
    assert "Expected: book(room: integer, when: string, note: string | null = null)" in (
        result.content
    )
    assert ran == []


async def test_tool_exception_becomes_a_result_with_type_and_message() -> None:
    @tool
    def divide(a: float, b: float) -> float:
        """Divide."""
        return a / b

    @tool
    def find_city(city: str) -> str:
        """Find a city."""
        raise ToolError(f"no city named {city!r}; check the spelling")

    results = await execute_tool_calls(
        [_call("divide", 0, a=1, b=0), _call("find_city", 1, city="Pariss")],
        {"divide": divide, "find_city": find_city},
        _ctx(),
    )
    crash, clean = results
    assert crash.error_kind == "exception"
    assert "ZeroDivisionError: float division by zero" in crash.content
    assert "Traceback" not in crash.content
    assert isinstance(crash.output, ZeroDivisionError)
    assert clean.error_kind == "exception"
    assert clean.content == "Error: no city named 'Pariss'; check the spelling"
    assert isinstance(clean.output, ToolError)


async def test_timeout_stops_an_async_tool_and_reports_it() -> None:
    observed: list[str] = []

    @tool(timeout=0.05)
    async def slow() -> str:
        """Never finishes."""
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            observed.append("cancelled")
            raise
        return "unreachable"

    results = await execute_tool_calls(
        [_call("slow"), _call("add", 1, a=1, b=1)],
        {
            "slow": slow,
            "add": add,
        },
        _ctx(),
    )
    assert results[0].error_kind == "timeout"
    assert "did not finish within 0.05 seconds" in results[0].content
    assert results[1].content == "2"
    assert observed == ["cancelled"]


async def test_default_timeout_applies_to_sync_tools_without_their_own() -> None:
    release = threading.Event()

    @tool
    def blocking() -> str:
        """Blocks until released."""
        release.wait(timeout=10)
        return "late"

    try:
        (result,) = await execute_tool_calls(
            [_call("blocking")], {"blocking": blocking}, _ctx(), default_timeout=0.05
        )
    finally:
        release.set()  # let the abandoned worker thread finish
    assert result.error_kind == "timeout"
    assert result.output is None


async def test_long_output_is_truncated_in_the_middle() -> None:
    text = "HEAD" + "x" * 50_000 + "TAIL"

    @tool
    def dump() -> str:
        """Big output."""
        return text

    (result,) = await execute_tool_calls(
        [_call("dump")], {"dump": dump}, _ctx(), max_output_chars=1000
    )
    assert result.truncated
    assert len(result.content) <= 1000
    assert result.content.startswith("HEAD")
    assert result.content.endswith("TAIL")
    note = re.search(r"\n\[… ([\d,]+) characters truncated …\]\n", result.content)
    assert note is not None
    kept = len(result.content) - len(note.group(0))
    assert int(note.group(1).replace(",", "")) == len(text) - kept
    assert result.output == text  # the raw value is kept whole

    (short,) = await execute_tool_calls([_call("get_time", zone="UTC")], TOOLS, _ctx())
    assert short.truncated is False


def test_truncate_middle_edges() -> None:
    assert truncate_middle("abc", 3) == ("abc", False)
    assert truncate_middle("abc", None) == ("abc", False)
    cut, was_cut = truncate_middle("a" * 100, 10)
    assert was_cut
    assert cut == "a" * 10  # too small for a note: plain head


# -- approvals ---------------------------------------------------------------------------------


@tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


APPROVAL_TOOLS: dict[str, Tool] = {"delete_file": delete_file, "get_time": get_time}


async def test_sync_approval_callback_approves_and_denies() -> None:
    asked: list[tuple[str, str]] = []

    def approve(call: ToolCall, t: Tool) -> bool | str:
        asked.append((t.name, call.arguments["path"]))
        return str(call.arguments["path"]).startswith("/tmp/")

    calls = [
        _call("delete_file", 0, path="/tmp/a"),
        _call("delete_file", 1, path="/etc/passwd"),
        _call("get_time", 2, zone="UTC"),
    ]
    results = await execute_tool_calls(calls, APPROVAL_TOOLS, _ctx(), approve=approve)
    assert asked == [("delete_file", "/tmp/a"), ("delete_file", "/etc/passwd")]
    assert results[0].content == "deleted /tmp/a"
    assert results[1].error_kind == "denied"
    assert "the user denied it" in results[1].content
    assert results[2].content == "12:00"


async def test_async_approval_callback_denial_reason_reaches_the_model() -> None:
    async def approve(call: ToolCall, t: Tool) -> bool | str:
        await anyio.lowlevel.checkpoint()
        return "only files under /tmp may be deleted"

    (result,) = await execute_tool_calls(
        [_call("delete_file", path="/etc/passwd")], APPROVAL_TOOLS, _ctx(), approve=approve
    )
    assert result.error_kind == "denied"
    assert result.is_error
    assert "only files under /tmp may be deleted" in result.content


async def test_approval_is_not_asked_for_invalid_calls() -> None:
    asked: list[ToolCall] = []

    async def approve(call: ToolCall, t: Tool) -> bool:
        asked.append(call)
        return True

    (result,) = await execute_tool_calls(
        [_call("delete_file")], APPROVAL_TOOLS, _ctx(), approve=approve
    )
    assert result.error_kind == "invalid_arguments"
    assert asked == []


async def test_without_a_callback_approval_tools_are_denied() -> None:
    (result,) = await execute_tool_calls(
        [_call("delete_file", path="/tmp/a")], APPROVAL_TOOLS, _ctx()
    )
    assert result.error_kind == "denied"
    assert "no approval callback is configured" in result.content


async def test_other_calls_run_while_an_approval_is_pending() -> None:
    finished = anyio.Event()

    @tool
    async def quick() -> str:
        """Quick."""
        finished.set()
        return "quick"

    async def approve(call: ToolCall, t: Tool) -> bool:
        # Approves only once the unapproved call has completed: deadlocks otherwise.
        await finished.wait()
        return True

    calls = [_call("delete_file", 0, path="/tmp/x"), _call("quick", 1)]
    with anyio.fail_after(10):
        results = await execute_tool_calls(
            calls, {"delete_file": delete_file, "quick": quick}, _ctx(), approve=approve
        )
    assert [r.content for r in results] == ["deleted /tmp/x", "quick"]


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelling_the_caller_cancels_in_flight_async_tools() -> None:
    started = anyio.Event()
    observed: list[str] = []
    returned: list[list[ToolResult]] = []

    @tool
    async def long_job(i: int) -> str:
        """Runs until cancelled."""
        try:
            started.set()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            observed.append(f"cancelled {i}")
            raise
        return "unreachable"

    async def run_turn() -> None:
        calls = [_call("long_job", i, i=i) for i in range(2)]
        returned.append(await execute_tool_calls(calls, {"long_job": long_job}, _ctx()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_turn)
            await started.wait()
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert sorted(observed) == ["cancelled 0", "cancelled 1"]
    assert returned == []


def test_named_constructors_say_what_a_result_means() -> None:
    ok = ToolResult.ok("c1", "add", "42", 42)
    assert (ok.is_error, ok.error_kind, ok.content, ok.output) == (False, None, "42", 42)
    exc = ValueError("boom")
    failed = ToolResult.error("c2", "add", "exception", "Error: boom", exc)
    assert (failed.is_error, failed.error_kind, failed.output) == (True, "exception", exc)
    denied = ToolResult.denied("c3", "rm", "the user denied it")
    assert denied.error_kind == "denied" and denied.is_error
    assert denied.content.startswith("Error: the call to 'rm' was not run: the user denied it.")
    late = ToolResult.timeout("c4", "slow", 1.5)
    assert late.error_kind == "timeout"
    assert "'slow' did not finish within 1.5 seconds" in late.content
    assert late.to_message() == ToolMessage(
        content=late.content, tool_call_id="c4", name="slow", is_error=True
    )
