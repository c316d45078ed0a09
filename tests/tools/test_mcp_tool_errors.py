"""A tool that raises on its MCP server reaches the model with the server's own words."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from q3agent import Agent
from q3agent.testing.runtimes import ScriptedRuntime
from q3agent.tools.base import ToolError
from q3agent.tools.mcp import MCPServerStdio
from q3agent.tools.mcp.server_log import crash_reason, is_bare_failure

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaked_processes")]

RAISING = str(Path(__file__).with_name("raising_mcp_server.py"))


def raising(*args: str) -> MCPServerStdio:
    return MCPServerStdio(sys.executable, [RAISING, *args], name="raising", timeout=30)


def tool_call(name: str, **arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>\n{body}\n</tool_call>"


async def test_the_model_reads_the_exception_message_of_a_tool_that_raised() -> None:
    runtime = ScriptedRuntime([tool_call("raising.error", text="q3.csv"), "I could not save it."])
    agent = Agent(runtime=runtime, mcp_servers=[raising()])
    result = await agent.arun("Save q3.csv.")
    (tool_result,) = result.steps[0].tool_results
    assert tool_result.is_error
    assert "ValueError: the disk is full (wanted to write 'q3.csv')" in tool_result.content
    assert "from the MCP server's log" in tool_result.content
    # ... and that is the text of the tool message in the model's next prompt.
    tool_message = next(m for m in result.messages if m.role == "tool")
    assert "the disk is full (wanted to write 'q3.csv')" in str(tool_message.content)


@pytest.mark.parametrize("log", [(), ("--plain-log",)])
async def test_each_kind_of_failure_keeps_the_servers_words(log: tuple[str, ...]) -> None:
    async with raising(*log) as server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        messages: dict[str, str] = {}
        for name, arguments in [
            ("error", {"text": "a.txt"}),
            ("chained", {}),
            ("lookup", {"key": "gamma"}),
            ("error", {"text": "b.txt"}),  # a second crash: its own message, not the first
            ("quiet", {}),  # last: it turns the server's logging off
        ]:
            with pytest.raises(ToolError) as info:
                await tools[name].call(arguments, _ctx())
            messages[f"{name}{arguments}"] = str(info.value)
    assert (
        "ValueError: the disk is full (wanted to write 'a.txt')"
        in messages["error{'text': 'a.txt'}"]
    )
    assert (
        "RuntimeError: could not save the report: the template 'report' is missing"
        in (messages["chained{}"])
    )
    assert messages["lookup{'key': 'gamma'}"] == (
        "Error executing tool lookup: no entry named 'gamma'; known keys: alpha, beta"
    )
    assert "gave no reason" in messages["quiet{}"]
    assert "'b.txt'" in messages["error{'text': 'b.txt'}"]
    assert "'a.txt'" not in messages["error{'text': 'b.txt'}"]


def test_crash_reason_reads_rich_and_plain_tracebacks() -> None:
    rich = """\
[12/06/26 00:14:30] ERROR    Tool 'error' raised an unexpected     server.py:455
                             exception
                             ╭─ Traceback (most recent call last─╮
                             │ /x/y.py:8 in error                │
                             │ ❱ 8 raise ValueError(f"the disk   │
                             ╰───────────────────────────────────╯
                             ValueError: the disk is full (wanted
                             to write 'abc')

                             The above exception was the direct
                             cause of the following exception:

                             UnexpectedToolError: Error executing
                             tool error
"""
    assert crash_reason(rich) == "ValueError: the disk is full (wanted to write 'abc')"
    plain = """\
ERROR:mcp.server:Tool 'error' raised an unexpected exception
Traceback (most recent call last):
  File "/x/y.py", line 8, in error
    raise ValueError("the disk is full")
ValueError: the disk is full

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
mcp.server.mcpserver.exceptions.UnexpectedToolError: Error executing tool error
"""
    assert crash_reason(plain) == "ValueError: the disk is full"
    node = "Error: ENOSPC: no space left on device, write\n    at Object.writeSync (fs.js:1)\n"
    assert crash_reason(node) is None or "ENOSPC" in (crash_reason(node) or "")
    assert crash_reason("INFO started\nINFO done\n") is None
    assert is_bare_failure("Error executing tool error", "error")
    assert is_bare_failure("", "error")
    assert not is_bare_failure("Error executing tool error: disk full", "error")


def _ctx() -> Any:
    from q3agent.tools.context import RunContext

    return RunContext(deps=None, run_id="t", step=0, messages=[])
