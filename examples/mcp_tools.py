"""An agent that uses the tools of real MCP servers: mcp-server-time and mcp-server-git.

Runs out of the box with a scripted runtime (raw Qwen3 completions through the real
tokenizer; the MCP servers and tool calls are real). With a model configured it runs the real
thing:

    python examples/mcp_tools.py [REPO]                          # scripted model
    Q3AGENT_MODEL=Qwen3-30B-A3B python examples/mcp_tools.py .   # SGLang / transformers

The same servers from a config file (Claude Desktop / Qwen-Agent format)::

    {"mcpServers": {
        "time": {"command": "mcp-server-time"},
        "git":  {"command": "mcp-server-git", "args": ["--repository", "."],
                 "allow": ["git_log", "git_status"]}
    }}

    servers = load_mcp_config("mcp.json")          # or: q3agent mcp tools --config mcp.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

from q3agent import Agent, ScriptedRuntime
from q3agent.tools.mcp import MCPServerStdio


def call(name: str, **arguments: object) -> str:
    """A tool call exactly as Qwen3 writes it."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


async def main(repo: Path) -> None:
    time_server = MCPServerStdio("mcp-server-time")  # tools: time.get_current_time, ...
    git_server = MCPServerStdio(
        "mcp-server-git",
        ["--repository", str(repo)],
        allow=["git_log", "git_status"],  # offer only read-only tools
    )

    # Tools are listed once per open connection; this is what goes into Qwen3's tools block.
    async with time_server, git_server:
        for server in (time_server, git_server):
            for tool in await server.list_tools():
                print(f"{tool.name:<28} {tool.description.splitlines()[0][:70]}")

    model = os.environ.get("Q3AGENT_MODEL") or None
    runtime = None
    if not model:
        runtime = ScriptedRuntime(
            [
                call("time.get_current_time", timezone="Europe/Paris")
                + "\n"
                + call("git.git_log", repo_path=str(repo), max_count=3),
                "It is now the time shown above in Paris; the three latest commits are listed "
                "above.",
            ]
        )
    # Agent opens the servers for each run and closes them afterwards (no processes left).
    # Keep them open across several runs with `async with time_server, git_server:`.
    agent = Agent(model or "Qwen3-30B-A3B", runtime=runtime, mcp_servers=[time_server, git_server])
    try:
        result = await agent.arun(
            "What time is it in Paris, and what were the last three commits in this repo?"
        )
    finally:
        await agent.aclose()  # the runtime last: MCP servers are already closed
    for step in result.steps:
        for tool_result in step.tool_results:
            print(f"\n[{tool_result.name}] {tool_result.content[:300]}")
    print(f"\n{result.status}: {result.answer}")


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
