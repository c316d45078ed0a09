"""MCP tools as q3agent tools, and opening a run's MCP servers (optional or required)."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from q3agent.tools.base import Tool, ToolError, Toolset
from q3agent.tools.context import RunContext
from q3agent.tools.mcp.connection import MCPServer, MCPServerError
from q3agent.tools.mcp.content import MCPToolOutput, convert_result
from q3agent.tools.mcp.server_log import crash_reason, is_bare_failure

if TYPE_CHECKING:
    import mcp_types

    from q3agent.serving.base import Runtime

__all__ = ["MCPTool", "open_toolsets"]

logger = logging.getLogger("q3agent.tools.mcp")


def is_destructive(annotations: mcp_types.ToolAnnotations | None) -> bool:
    """Whether MCP annotations mark a tool as possibly destructive.

    Per the MCP spec a tool that is not read-only is destructive unless it says
    ``destructiveHint: false``. A tool with no annotations at all is not treated as destructive
    (most servers annotate nothing); pass ``requires_approval=True`` to gate those too.
    """
    if annotations is None:
        return False
    if annotations.read_only_hint:
        return False
    return annotations.destructive_hint is not False


class MCPTool(Tool):
    """One tool of an MCP server, presented to the agent as a q3agent :class:`Tool`.

    ``name`` is the namespaced name the model sees; ``mcp_name`` the server's own name.
    ``parameters`` is the server's input schema, unchanged. ``read_only`` and ``destructive``
    come from the server's annotations (hints, not guarantees).
    """

    def __init__(self, server: MCPServer, definition: mcp_types.Tool) -> None:
        self.server = server
        self.definition = definition
        self.mcp_name: str = definition.name
        self.name = f"{server.prefix}{definition.name}"
        self.description = definition.description or definition.title or ""
        schema = definition.input_schema
        self.parameters = dict(schema) if schema else {"type": "object", "properties": {}}
        annotations = definition.annotations
        self.read_only = bool(annotations is not None and annotations.read_only_hint)
        self.destructive = is_destructive(annotations)
        approval = server.requires_approval
        if approval == "destructive":
            self.requires_approval = self.destructive
        elif isinstance(approval, bool):
            self.requires_approval = approval
        else:
            self.requires_approval = any(fnmatch.fnmatchcase(definition.name, p) for p in approval)
        # The MCP request timeout fires first (and cancels the call on the server); the
        # executor's timeout is only a backstop (it also covers the hung-server ping).
        self.timeout = server.timeout + 10.0 if server.timeout is not None else None

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> MCPToolOutput:
        """Call the tool on its server; returns the converted result (a ``str`` for the model).

        Progress notifications go to ``ctx.report_progress`` (stream events). Raises
        :class:`ToolError` for ``isError`` results, timeouts and a server that died.
        """

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            ctx.report_progress(progress, total, message)

        mark = self.server.log_mark()
        result = await self.server.call_tool(
            self.mcp_name, dict(arguments or {}), progress=progress
        )
        output = convert_result(result)
        if result.is_error:
            raise ToolError(self._error_text(output.text, mark))
        return output

    def _error_text(self, text: str, mark: int) -> str:
        """The error for the model: the server's message, or its log's words when it sent none.

        The MCP SDK's servers answer a tool that crashed with only "Error executing tool
        NAME" and log the exception; for a stdio server the exception's own message is read
        back from what it logged during the call.
        """
        if not is_bare_failure(text, self.mcp_name):
            return text
        reason = crash_reason(self.server.log_since(mark))
        if reason:
            return f"{text.rstrip('.')}: {reason} (from the MCP server's log)"
        return (
            f"{text.rstrip('.')} (the server {self.server.name!r} gave no reason). Check the "
            "arguments against the tool's description, or try another way."
        )


def _missing_note(server: MCPServer, reason: str) -> str:
    known = server._known_tools
    names = f" ({', '.join(t.name for t in known)})" if known else ""
    return f"the tools of MCP server {server.name!r}{names} are unavailable in this run: {reason}"


async def open_toolsets(
    stack: contextlib.AsyncExitStack,
    toolsets: Iterable[Toolset],
    *,
    runtime: Runtime | None = None,
) -> list[str]:
    """Enter each toolset that is an async context manager on ``stack``; notes for the model.

    An MCP server that fails to start is skipped (logged in one line) unless it is
    ``required``, in which case :class:`MCPServerError` propagates. Each skipped server gives a
    note naming it and why, for the model. ``runtime`` serves sampling for servers that enable
    it without their own ``sampling_runtime``.
    """
    notes: list[str] = []
    for toolset in toolsets:
        if not isinstance(toolset, contextlib.AbstractAsyncContextManager):
            continue
        if isinstance(toolset, MCPServer):
            if toolset.sampling is not False and toolset.sampling_runtime is None:
                toolset.sampling_runtime = runtime
            try:
                await stack.enter_async_context(toolset)
            except MCPServerError as exc:
                if toolset.required:
                    raise
                toolset.startup_error = str(exc)
                logger.warning("%s; the run goes on without its tools", exc)
                notes.append(_missing_note(toolset, "it could not be started"))
                continue
            toolset.startup_error = None
        else:
            await stack.enter_async_context(toolset)
    return notes
