"""MCP stdio faults, each with a real misbehaving server (tests/tools/faulty_mcp_server.py)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from q3agent import Agent
from q3agent.events import ToolProgress
from q3agent.testing.runtimes import ScriptedRuntime
from q3agent.tools.base import ToolError
from q3agent.tools.mcp import MCPServerError, MCPServerStdio

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaked_processes")]

FAULTY = str(Path(__file__).with_name("faulty_mcp_server.py"))
BIN = Path(sys.executable).parent


def faulty(mode: str = "", name: str = "faulty", **options: Any) -> MCPServerStdio:
    return MCPServerStdio(sys.executable, [FAULTY, mode], name=name, **options)


def tool_call(name: str, **arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>\n{body}\n</tool_call>"


async def test_invalid_utf8_on_stdout_is_replaced_and_the_session_lives() -> None:
    async with faulty(timeout=10) as server:
        bad = await server.call_tool("bad_bytes", {})
        after = await server.call_tool("echo", {"text": "still here"})
        assert server.restarts == 0
    assert bad.content[0].text == "before \ufffd\ufffd\ufffd after"  # type: ignore[union-attr]
    assert after.content[0].text == "still here"  # type: ignore[union-attr]


async def test_junk_stdout_lines_are_one_warning_each_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with faulty(timeout=10) as server:
        result = await server.call_tool("junk", {})
        assert result.content[0].text == "after the junk"  # type: ignore[union-attr]
        assert server.restarts == 0
    junk = [r for r in caplog.records if "not JSON-RPC" in r.getMessage()]
    assert len(junk) == 3
    assert "'debug: junk line 0 that is not JSON-RPC'" in junk[0].getMessage()
    assert "'faulty'" in junk[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


async def test_a_server_that_exits_is_noticed_at_once_and_restarted() -> None:
    async with faulty(timeout=10) as server:
        first_pid = (await server.call_tool("pid", {})).content[0].text  # type: ignore[union-attr]
        bye = await server.call_tool("quit", {})
        assert bye.content[0].text == "bye"  # type: ignore[union-attr]
        # No call is made: the end of the server's output alone triggers the restart.
        with anyio.fail_after(30):
            while server.restarts == 0:  # noqa: ASYNC110 - polling the handle's public state
                await anyio.sleep(0.05)
        second_pid = (await server.call_tool("pid", {})).content[0].text  # type: ignore[union-attr]
    assert second_pid != first_pid


async def test_a_hung_call_is_cancelled_and_the_next_call_gets_a_fresh_server() -> None:
    async with faulty(timeout=2) as server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        first_pid = (await server.call_tool("pid", {})).content[0].text  # type: ignore[union-attr]
        with pytest.raises(ToolError, match="did not finish within 2 s") as hung:
            await server.call_tool("hang", {})
        assert "stopped answering and is being restarted" in str(hung.value)
        echo = await tools["echo"].call({"text": "next call"}, _ctx())
        second_pid = (await server.call_tool("pid", {})).content[0].text  # type: ignore[union-attr]
        assert server.restarts == 0  # a hung server's restart is not a crash
    assert echo == "next call"
    assert second_pid != first_pid


def _ctx() -> Any:
    from q3agent.tools.context import RunContext

    return RunContext(deps=None, run_id="t", step=0, messages=[])


@pytest.mark.parametrize("mode", ["exit", "mute"])
async def test_a_server_that_fails_to_start_leaves_the_run_going(mode: str) -> None:
    broken = faulty(mode, name="broken", connect_timeout=3)
    time_server = MCPServerStdio(str(BIN / "mcp-server-time"))
    runtime = ScriptedRuntime(
        [tool_call("time.get_current_time", timezone="UTC"), "It is the time shown above."]
    )
    agent = Agent(runtime=runtime, mcp_servers=[broken, time_server])
    result = await agent.arun("What time is it in UTC?")
    assert result.status == "answer"
    prompt = runtime.requests[0].prompt_text
    assert "MCP server 'broken'" in prompt and "unavailable in this run" in prompt
    assert '"name": "time.get_current_time"' in prompt
    assert broken.startup_error is not None
    if mode == "exit":
        assert "config file missing" in broken.startup_error  # its stderr is quoted


async def test_a_required_server_that_fails_to_start_fails_the_run() -> None:
    broken = faulty("exit", name="broken", required=True)
    agent = Agent(runtime=ScriptedRuntime(["unused"]), mcp_servers=[broken])
    with pytest.raises(MCPServerError, match="could not start MCP server 'broken'"):
        await agent.arun("anything")


async def test_progress_notifications_become_stream_events() -> None:
    runtime = ScriptedRuntime([tool_call("faulty.progress"), "Done."])
    agent = Agent(runtime=runtime, mcp_servers=[faulty(timeout=10)])
    events = [e async for e in agent.session().stream("Run the long job.")]
    progress = [e for e in events if isinstance(e, ToolProgress)]
    assert [(p.progress, p.total, p.message) for p in progress] == [
        (1, 3, "step 1 of 3"),
        (2, 3, "step 2 of 3"),
        (3, 3, "step 3 of 3"),
    ]
    assert {p.name for p in progress} == {"faulty.progress"}
    kinds = [e.kind for e in events]
    assert kinds.index("tool_progress") > kinds.index("tool_call")
    assert kinds.index("tool_result") > max(i for i, k in enumerate(kinds) if k == "tool_progress")
    final = events[-1].result  # type: ignore[union-attr]
    assert final.answer == "Done."
