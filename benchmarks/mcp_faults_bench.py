"""Wall time of MCP stdio faults, with a hand-written faulty server (tests/tools/).

Prints seconds for: a session that received invalid UTF-8 followed by two calls; a hung call
followed by one more call; an agent run with a server that exits at start and one that never
answers the handshake (with a working mcp-server-time beside it). Uses only APIs that existed
before issue 12, so the same script measures an older checkout:
``PYTHONPATH=/path/to/old python benchmarks/mcp_faults_bench.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from q3agent import Agent
from q3agent.testing.runtimes import ScriptedRuntime
from q3agent.tools.mcp import MCPServerStdio

FAULTY = str(Path(__file__).resolve().parents[1] / "tests" / "tools" / "faulty_mcp_server.py")
CALL_TIMEOUT = 15.0


def server(mode: str = "", name: str = "faulty", **options: Any) -> MCPServerStdio:
    return MCPServerStdio(sys.executable, [FAULTY, mode], name=name, **options)


async def timed(label: str, body: Any) -> None:
    start = time.perf_counter()
    try:
        outcome = await body()
    except Exception as exc:
        outcome = f"raised {type(exc).__name__}: {str(exc)[:120]}"
    print(f"{label:<52} {time.perf_counter() - start:7.2f} s  {outcome}")


async def calls(call_timeout: float, names: tuple[str, ...]) -> str:
    """Call the tools one after another; ``ok`` or the exception type of each."""
    async with server(timeout=call_timeout) as s:
        outcomes = []
        for name in names:
            try:
                await s.call_tool(name, {"text": "x"})
                outcomes.append("ok")
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        return ", ".join(outcomes)


async def failed_start(mode: str) -> str:
    call = json.dumps({"name": "time.get_current_time", "arguments": {"timezone": "UTC"}})
    runtime = ScriptedRuntime([f"<tool_call>\n{call}\n</tool_call>", "It is that time."])
    time_server = MCPServerStdio(str(Path(sys.executable).parent / "mcp-server-time"))
    agent = Agent(runtime=runtime, mcp_servers=[server(mode, name="broken"), time_server])
    result = await agent.arun("What time is it in UTC?")
    return f"status={result.status}"


async def main() -> None:
    print(f"call timeout {CALL_TIMEOUT:g} s (hung: 5 s); connect timeout: default")
    await timed(
        "invalid UTF-8, then 2 calls", lambda: calls(CALL_TIMEOUT, ("bad_bytes", "echo", "echo"))
    )
    await timed("hung call (5 s timeout), then 1 call", lambda: calls(5.0, ("hang", "echo")))
    await timed("agent run, one server exits at start", lambda: failed_start("exit"))
    await timed("agent run, one server never answers", lambda: failed_start("mute"))


if __name__ == "__main__":
    anyio.run(main)
