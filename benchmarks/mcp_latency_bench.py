"""Latency of one tool call through MCP stdio versus the same function as an in-process tool.

The function is mcp-server-time's own ``TimeServer.get_current_time``: once imported and
wrapped with ``@tool`` (in-process), once behind the real ``mcp-server-time`` subprocess over
stdio (``MCPServerStdio``). Both go through ``execute_tool_calls``, as in an agent run; the raw
SDK ``call_tool`` on the same connection is timed too, to show what q3agent adds on top.

    python benchmarks/mcp_latency_bench.py [--calls 300] [--protocol auto|legacy]

Prints the median and p90 per call and the MCP/in-process ratio, measured in this one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio

from q3agent.qwen3.messages import ToolCall
from q3agent.tools import RunContext, execute_tool_calls, tool
from q3agent.tools.mcp import MCPServerStdio


def get_current_time(timezone: str) -> dict[str, Any]:
    """Current time in an IANA timezone (mcp-server-time's own implementation).

    Args:
        timezone: IANA timezone name, e.g. 'Europe/Paris'.
    """
    from mcp_server_time.server import TimeServer

    return TimeServer().get_current_time(timezone).model_dump()


async def timed(n: int, *calls: Callable[[], Awaitable[Any]]) -> list[list[float]]:
    """Time each call ``n`` times, round-robin, so drift on a busy machine hits all alike."""
    for call in calls:  # warm-up: imports, caches, connection
        for _ in range(min(20, n)):
            await call()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(n):
        for call, bucket in zip(calls, samples, strict=True):
            start = time.perf_counter()
            await call()
            bucket.append(time.perf_counter() - start)
    return samples


def describe(name: str, samples: list[float]) -> float:
    median = statistics.median(samples)
    p90 = statistics.quantiles(samples, n=10)[-1]
    print(f"{name:<38} median {median * 1e3:8.3f} ms   p90 {p90 * 1e3:8.3f} ms")
    return median


async def main(calls: int, protocol: Literal["auto", "legacy"]) -> None:
    ctx: RunContext[None] = RunContext(deps=None, run_id="bench", step=0, messages=[])
    local = tool(get_current_time, name="time.get_current_time")
    args = {"timezone": "Europe/Paris"}

    async def in_process() -> None:
        (result,) = await execute_tool_calls(
            [ToolCall(name=local.name, arguments=args)], {local.name: local}, ctx
        )
        assert not result.is_error, result.content

    command = shutil.which("mcp-server-time") or "mcp-server-time"
    server = MCPServerStdio(command, protocol=protocol)
    start = time.perf_counter()
    async with server:
        tools = {t.name: t for t in await server.list_tools()}
        startup = time.perf_counter() - start

        async def through_mcp() -> None:
            (result,) = await execute_tool_calls(
                [ToolCall(name="time.get_current_time", arguments=args)], tools, ctx
            )
            assert not result.is_error, result.content

        async def raw_sdk() -> None:
            await server.call_tool("get_current_time", args)

        local_samples, mcp_samples, raw_samples = await timed(
            calls, in_process, through_mcp, raw_sdk
        )

    print(f"{calls} calls each; mcp-server-time start + handshake + tools/list: {startup:.2f} s")
    local_median = describe("in-process @tool (execute_tool_calls)", local_samples)
    mcp_median = describe("MCP stdio (execute_tool_calls)", mcp_samples)
    raw_median = describe("MCP stdio (SDK call_tool only)", raw_samples)
    print(f"ratio MCP stdio / in-process:      {mcp_median / local_median:8.1f}x")
    print(f"q3agent overhead on the MCP call:  {(mcp_median - raw_median) * 1e3:8.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--protocol", choices=("auto", "legacy"), default="auto")
    options = parser.parse_args()
    print(f"python {sys.version.split()[0]}, protocol={options.protocol}")
    anyio.run(main, options.calls, options.protocol)
