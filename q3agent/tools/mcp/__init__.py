"""MCP client side: server handles (stdio, streamable HTTP, SSE, in-process) as q3agent toolsets.

An MCP server handle is a :class:`~q3agent.tools.base.Toolset` and a reusable async context
manager, in the style of pydantic-ai's ``MCPToolset``::

    time = MCPServerStdio("mcp-server-time")
    async with time:                       # starts the subprocess, runs the MCP handshake
        tools = await time.list_tools()    # [<MCPTool 'time.get_current_time'>, ...]

    agent = Agent(mcp_servers=[time])      # or let the agent open and close it for each run

What the handles do for you:

* **Names** are namespaced per server: ``prefix`` defaults to ``"{name}."``, giving names
  such as ``time.get_current_time``. Qwen3's chat template and q3agent's parser accept dotted
  names (BFCL uses them too). If the model sits behind a strict OpenAI-compatible API that
  only accepts ``[a-zA-Z0-9_-]`` names, pass ``prefix="time_"``; ``prefix=""`` turns
  namespacing off.
* **Tool list** is fetched once and cached; the cache is dropped when the server sends
  ``notifications/tools/list_changed`` (or, on 2026-07-28 connections, a ``tools`` list-changed
  event on ``subscriptions/listen``) and after a reconnect. ``allow``/``block`` filter tools by
  their MCP names (``fnmatch`` patterns). Input schemas go into Qwen3's tools block unchanged.
  Tools the server annotates as destructive need the agent's approval callback
  (``requires_approval="destructive"``, the default; ``False`` turns it off).
* **Results** (:mod:`~q3agent.tools.mcp.content`): text once; images and audio as
  :class:`MediaPart` objects plus a one-line note for the model; embedded text resources
  included; ``audience: ["user"]`` blocks kept for the caller. ``isError`` results, timeouts
  and a server that exits mid-call become :class:`~q3agent.tools.base.ToolError` messages the
  model can act on.
* **Faults** (:mod:`~q3agent.tools.mcp.connection`): a server whose connection dies is noticed
  at once and restarted (``max_restarts``, default once); after that its tools stay listed but
  every call answers that the server is unavailable. A hung call is cancelled and a server that
  stops answering is restarted. Non-UTF-8 bytes and non-JSON lines on stdout do not end the
  session. In an agent run, a server that fails to start is skipped and the model is told,
  unless it is ``required=True``.
* **Client protocol** (:mod:`~q3agent.tools.mcp.client_features`): sampling through the
  agent's runtime behind an approval callback (``sampling=``), elicitation (``elicitation=``),
  roots (``roots=``), progress notifications as :class:`q3agent.events.ToolProgress` events.
* **Lifecycle**: a stdio server runs in its own process session and is shut down (stdin closed,
  then SIGTERM/SIGKILL of its process group) when the handle closes, also when the run fails
  or is cancelled. Close MCP servers *before* shutting down a runtime: SGLang's
  ``Engine.shutdown`` kills every child process of the Python process, MCP servers included.
  ``Agent`` does this (servers are opened per run, the runtime outlives the run).

``load_mcp_config`` reads the ``{"mcpServers": {...}}`` JSON used by Claude Desktop, Cursor
and Qwen-Agent.
"""

from __future__ import annotations

from q3agent.tools.mcp.client_features import (
    Elicitation,
    ElicitationAnswer,
    ElicitationCallback,
    SamplingApproval,
    SamplingRequest,
    ask_on_terminal,
)
from q3agent.tools.mcp.config import load_mcp_config
from q3agent.tools.mcp.connection import MCPServer, MCPServerError, MCPServerOptions
from q3agent.tools.mcp.content import MCPToolOutput, MediaPart, convert_result, render_mcp_result
from q3agent.tools.mcp.toolset import MCPTool, open_toolsets
from q3agent.tools.mcp.transports import (
    MCPServerInProcess,
    MCPServerSSE,
    MCPServerStdio,
    MCPServerStreamableHTTP,
)

__all__ = [
    "Elicitation",
    "ElicitationAnswer",
    "ElicitationCallback",
    "MCPServer",
    "MCPServerError",
    "MCPServerInProcess",
    "MCPServerOptions",
    "MCPServerSSE",
    "MCPServerStdio",
    "MCPServerStreamableHTTP",
    "MCPTool",
    "MCPToolOutput",
    "MediaPart",
    "SamplingApproval",
    "SamplingRequest",
    "ask_on_terminal",
    "convert_result",
    "load_mcp_config",
    "open_toolsets",
    "render_mcp_result",
]
