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
* **Results**: text blocks and ``structuredContent`` become the tool response; images, audio
  and embedded resources become a one-line note. ``isError`` results, timeouts and a server
  that exits mid-call become :class:`~q3agent.tools.base.ToolError` messages the model can act
  on. A server whose connection dies is restarted (``max_restarts``, default once); after
  that its tools stay listed but every call answers that the server is unavailable.
* **Lifecycle**: a stdio server runs in its own process session and is shut down (stdin closed,
  then SIGTERM/SIGKILL of its process group) when the handle closes, also when the run fails
  or is cancelled. Close MCP servers *before* shutting down a runtime: SGLang's
  ``Engine.shutdown`` kills every child process of the Python process, MCP servers included.
  ``Agent`` does this (servers are opened per run, the runtime outlives the run).

``load_mcp_config`` reads the ``{"mcpServers": {...}}`` JSON used by Claude Desktop, Cursor
and Qwen-Agent.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shlex
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import anyio
import anyio.abc

from q3agent.tools.base import Tool, ToolError
from q3agent.tools.context import RunContext

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client
    from mcp.client._transport import Transport, TransportStreams
    from mcp.server.mcpserver import MCPServer as SDKServer

__all__ = [
    "MCPServer",
    "MCPServerError",
    "MCPServerInProcess",
    "MCPServerSSE",
    "MCPServerStdio",
    "MCPServerStreamableHTTP",
    "MCPTool",
    "load_mcp_config",
    "render_mcp_result",
]

logger = logging.getLogger(__name__)

_STDERR_TAIL_CHARS = 1500
_RESTART_WAIT_GRACE = 10.0
_CLOSE_GRACE = 6.0


class MCPServerError(Exception):
    """An MCP server could not be started, is not open, or its configuration is wrong.

    The message says which server, what happened and what to do next. Errors during a tool call
    are :class:`~q3agent.tools.base.ToolError` instead, so the model sees them as tool results.
    """


def _check_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_\-]+", "_", name.strip()).strip("_")
    if not cleaned:
        raise MCPServerError(
            f"MCP server name {name!r} has no usable characters; pass name='something' "
            "(letters, digits, '_' or '-')"
        )
    return cleaned


_RUNNERS = {"npx", "uvx", "uv", "run", "python", "python3", "node", "bunx", "bun", "deno", "pipx"}


def _name_from_command(command: str, args: Sequence[str]) -> str:
    """``mcp-server-time`` → ``time``; ``uvx mcp-server-git --repository .`` → ``git``."""
    tokens = [command, *[a for a in args if not a.startswith("-")]]
    basenames = [Path(t).name for t in tokens]
    candidates = [b for b in basenames if b.lower() not in _RUNNERS and b] or basenames
    chosen = next(
        (b for b in candidates if "mcp" in b.lower() or "server" in b.lower()), candidates[0]
    )
    chosen = re.sub(r"\.(py|js|ts|mjs|exe)$", "", chosen)
    for affix in ("mcp-server-", "mcp_server_", "server-", "server_", "mcp-", "mcp_"):
        if chosen.lower().startswith(affix) and len(chosen) > len(affix):
            chosen = chosen[len(affix) :]
    for affix in ("-mcp-server", "_mcp_server", "-mcp", "_mcp", "-server", "_server"):
        if chosen.lower().endswith(affix) and len(chosen) > len(affix):
            chosen = chosen[: -len(affix)]
    return _check_name(chosen)


def _name_from_url(url: str) -> str:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or "mcp"
    return _check_name(host.split(".")[0] if not host[0].isdigit() else host)


def _matches(name: str, patterns: Collection[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


# --------------------------------------------------------------------------------------------
# Results → text for the model


def _size_note(chars_base64: int) -> str:
    size = chars_base64 * 3 // 4
    return f"{size / 1024:.1f} KB" if size >= 1024 else f"{size} bytes"


def _note_for_block(block: Any) -> str | None:
    """A short note for a content block the model cannot read as text; ``None`` for text."""
    kind = getattr(block, "type", None)
    if kind == "text":
        return None
    if kind in ("image", "audio"):
        mime = getattr(block, "mime_type", None) or kind
        data = getattr(block, "data", "") or ""
        return f"[{kind} returned by the tool ({mime}, {_size_note(len(data))}); not shown]"
    if kind == "resource":
        res = block.resource
        mime = getattr(res, "mime_type", None) or "unknown type"
        text = getattr(res, "text", None)
        if text is not None:
            size = f"{len(text):,} characters"
        else:
            size = _size_note(len(getattr(res, "blob", "") or ""))
        return f"[embedded resource {res.uri} ({mime}, {size}); not shown]"
    if kind == "resource_link":
        label = block.title or block.name
        mime = f", {block.mime_type}" if block.mime_type else ""
        return f"[resource link: {block.uri} ({label}{mime})]"
    return f"[{kind or 'unknown'} content returned by the tool; not shown]"


def _json_equal(text: str, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except json.JSONDecodeError:
        return False


def _is_result_wrapper(texts: list[str], structured: Any) -> bool:
    """``{"result": x}`` that only wraps the text blocks (how SDK servers return non-objects).

    A list value is sent as one text block per item, so those are compared item by item.
    """
    if not (isinstance(structured, dict) and list(structured) == ["result"]):
        return False
    value = structured["result"]

    def same(text: str, item: Any) -> bool:
        return text == item if isinstance(item, str) else _json_equal(text, item)

    if isinstance(value, list) and len(texts) == len(value) and len(texts) != 1:
        return all(same(t, v) for t, v in zip(texts, value, strict=True))
    return same("\n".join(texts), value)


def render_mcp_result(result: mcp_types.CallToolResult) -> str:
    """The text the model sees for an MCP tool result (error or not).

    Text blocks are joined with newlines. ``structuredContent`` is added as JSON unless the text
    already is that same JSON (servers are asked to send both for older clients). Images, audio
    and embedded resources become a one-line note, so binary data never reaches the prompt.
    """
    texts: list[str] = []
    notes: list[str] = []
    for block in result.content:
        note = _note_for_block(block)
        if note is None:
            texts.append(block.text)  # type: ignore[union-attr]
        else:
            notes.append(note)
    structured = result.structured_content
    parts: list[str] = []
    if structured is not None:
        structured_json = json.dumps(structured, ensure_ascii=False)
        joined = "\n".join(texts)
        if not joined.strip():
            parts.append(structured_json)
        elif _is_result_wrapper(texts, structured):
            value = structured["result"]
            if isinstance(value, str):
                parts.append(value)
            else:
                parts.append(json.dumps(value, ensure_ascii=False))
        elif _json_equal(joined, structured):
            parts.append(structured_json)
        else:
            parts.extend([*texts, structured_json])
    else:
        parts.extend(texts)
    parts.extend(notes)
    text = "\n".join(p for p in parts if p)
    return text or "(the tool returned no content)"


# --------------------------------------------------------------------------------------------
# Tools


class MCPTool(Tool):
    """One tool of an MCP server, presented to the agent as a q3agent :class:`Tool`.

    ``name`` is the namespaced name the model sees; ``mcp_name`` the server's own name.
    ``parameters`` is the server's input schema, unchanged.
    """

    def __init__(self, server: MCPServer, definition: mcp_types.Tool) -> None:
        self.server = server
        self.definition = definition
        self.mcp_name: str = definition.name
        self.name = f"{server.prefix}{definition.name}"
        self.description = definition.description or definition.title or ""
        schema = definition.input_schema
        self.parameters = dict(schema) if schema else {"type": "object", "properties": {}}
        approval = server.requires_approval
        self.requires_approval = (
            approval if isinstance(approval, bool) else _matches(definition.name, approval)
        )
        # The MCP request timeout fires first (and cancels the call on the server); the
        # executor's timeout is only a backstop.
        self.timeout = server.timeout + 5.0 if server.timeout is not None else None

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        """Call the tool on its server; returns the rendered result text.

        Raises :class:`ToolError` for ``isError`` results, timeouts and a server that died.
        """
        result = await self.server.call_tool(self.mcp_name, dict(arguments or {}))
        text = render_mcp_result(result)
        if result.is_error:
            raise ToolError(text)
        return text


# --------------------------------------------------------------------------------------------
# Server handles


class _Session:
    """State of one open period of a handle (between the outermost enter and exit)."""

    def __init__(self) -> None:
        self.stack = AsyncExitStack()
        self.task_group: anyio.abc.TaskGroup | None = None
        self.client: Client | None = None
        self.lost = anyio.Event()
        self.changed = anyio.Event()
        self.stopped = anyio.Event()
        self.closing = False
        self.unavailable: str | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.generation = 0

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class MCPServer(ABC):
    """Base class of MCP server handles: a toolset and a reusable async context manager.

    Entering opens the connection (nested entries share it; the last exit closes it); a closed
    handle can be entered again, e.g. by the next agent run. Subclasses say how to connect.

    Args:
        name: Server name, used in error messages and in the default tool-name prefix.
        prefix: Prepended to every tool name; ``None`` means ``"{name}."``, ``""`` none.
        allow: Only these MCP tool names (``fnmatch`` patterns) are offered; ``None``: all.
        block: These MCP tool names (patterns) are never offered.
        timeout: Seconds one tool call may take before the model gets a timeout error.
        connect_timeout: Seconds the handshake and ``tools/list`` may take.
        max_restarts: How many times a connection that died is re-established per open period.
        requires_approval: ``True`` for all tools, or MCP tool names (patterns) that need the
            approval callback before each call.
        protocol: ``"auto"`` (discover the newest protocol, fall back to the initialize
            handshake) or ``"legacy"`` (initialize handshake only).
    """

    def __init__(
        self,
        *,
        name: str,
        prefix: str | None = None,
        allow: Collection[str] | None = None,
        block: Collection[str] | None = None,
        timeout: float | None = 60.0,
        connect_timeout: float = 30.0,
        max_restarts: int = 1,
        requires_approval: bool | Collection[str] = False,
        protocol: Literal["auto", "legacy"] = "auto",
    ) -> None:
        self.name = _check_name(name)
        self.prefix = f"{self.name}." if prefix is None else prefix
        self.allow = None if allow is None else tuple(allow)
        self.block = tuple(block or ())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_restarts = max_restarts
        self.requires_approval = (
            requires_approval if isinstance(requires_approval, bool) else tuple(requires_approval)
        )
        self.protocol = protocol
        self._depth = 0
        self._session: _Session | None = None
        self._tools: list[MCPTool] | None = None
        self._known_tools: list[MCPTool] | None = None
        self._tools_version = 0
        self._lock = anyio.Lock()

    # -- what subclasses provide ---------------------------------------------------------------

    @abstractmethod
    def _target(self) -> Transport | SDKServer:
        """A fresh transport (or in-process server) for :class:`mcp.Client`."""

    @abstractmethod
    def describe(self) -> str:
        """How this server is reached (command line or URL), for messages."""

    def _diagnostics(self) -> str:
        """Extra text for error messages (a stdio server's stderr tail)."""
        return ""

    async def _cleanup(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release per-open resources (temp files) after the connection closed."""

    # -- context manager -----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the handle is entered (its connection may still be restarting)."""
        return self._session is not None

    @property
    def restarts(self) -> int:
        """How many times the connection was re-established in the current open period."""
        return self._session.restarts if self._session is not None else 0

    async def __aenter__(self) -> MCPServer:
        if self._depth == 0:
            await self._open()
        self._depth += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            await self._close()

    async def _open(self) -> None:
        session = _Session()
        self._session = session
        self._tools = None
        try:
            session.task_group = await session.stack.enter_async_context(anyio.create_task_group())
            await session.task_group.start(self._supervise, session)
        except BaseException as exc:
            self._session = None
            diagnostics = self._diagnostics() if isinstance(exc, Exception) else ""
            try:
                await session.stack.aclose()  # waits for the supervisor; its shutdown is shielded
            finally:
                await self._cleanup()
            if isinstance(exc, Exception) and not isinstance(exc, MCPServerError):
                raise MCPServerError(
                    f"could not start MCP server {self.name!r} ({self.describe()}): "
                    f"{_describe_startup_error(exc)}.{diagnostics} Check that the command or "
                    "URL is right and that the server starts on its own."
                ) from exc
            raise

    async def _close(self) -> None:
        session = self._session
        if session is None:
            return
        session.closing = True
        session.lost.set()
        try:
            with anyio.move_on_after(_CLOSE_GRACE):
                await session.stopped.wait()
        finally:
            if session.task_group is not None:
                session.task_group.cancel_scope.cancel()
            try:
                await session.stack.aclose()  # waits for the supervisor; its shutdown is shielded
            finally:
                self._session = None
                await self._cleanup()

    def _client_for(self, session: _Session) -> Client:
        from mcp import Client

        async def on_message(message: Any) -> None:
            import mcp_types

            if isinstance(message, mcp_types.ToolListChangedNotification):
                self._tools_changed()
                logger.debug("MCP server %r: tool list changed", self.name)
            elif isinstance(message, Exception):
                logger.debug("MCP server %r transport error: %r", self.name, message)

        return Client(
            self._target(),
            mode=self.protocol,
            read_timeout_seconds=self.connect_timeout,
            message_handler=on_message,
            cache=None,
        )

    async def _listen_for_changes(self, client: Client) -> None:
        """On 2026-07-28 connections, list-changed events arrive on ``subscriptions/listen``."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._tools_changed()
                    logger.debug("MCP server %r: tool list changed (listen)", self.name)
        except Exception as exc:  # the connection ended or the server refused the stream
            logger.debug("MCP server %r: listen stream ended: %r", self.name, exc)

    def _tools_changed(self) -> None:
        self._tools = None
        self._tools_version += 1

    async def _supervise(
        self, session: _Session, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """Own the connection: connect, wait until it is lost or closed, reconnect if allowed.

        Runs as one task, so the client's transport is entered and exited in the same task
        whichever task notices that the server died.
        """
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        first = True
        try:
            while True:
                session.lost = anyio.Event()
                try:
                    async with self._client_for(session) as client:
                        session.client = client
                        session.generation += 1
                        self._tools_changed()
                        caps = client.server_capabilities.tools
                        async with anyio.create_task_group() as watchers:
                            if (
                                client.protocol_version in MODERN_PROTOCOL_VERSIONS
                                and caps is not None
                                and caps.list_changed
                            ):
                                watchers.start_soon(self._listen_for_changes, client)
                            if first:
                                first = False
                                task_status.started()
                            session.notify()
                            await session.lost.wait()
                            watchers.cancel_scope.cancel()
                except Exception as exc:
                    if first:
                        raise
                    session.last_error = _describe_exception(exc)
                    logger.debug("MCP server %r connection ended: %r", self.name, exc)
                session.client = None
                if session.closing:
                    return
                if session.restarts >= self.max_restarts:
                    session.unavailable = (
                        f"MCP server {self.name!r} is unavailable: its connection was lost "
                        f"{session.restarts + 1} time(s)"
                        + (f" (last error: {session.last_error})" if session.last_error else "")
                        + f".{self._diagnostics()}"
                    )
                    logger.warning("%s", session.unavailable)
                    session.notify()
                    return
                session.restarts += 1
                logger.warning(
                    "MCP server %r (%s) stopped; restarting it (%d of %d)",
                    self.name,
                    self.describe(),
                    session.restarts,
                    self.max_restarts,
                )
        finally:
            session.client = None
            session.stopped.set()
            session.notify()

    async def _ready_client(self) -> Client:
        """The live client, waiting for a restart in progress; raises when there is none."""
        session = self._session
        if session is None:
            raise MCPServerError(
                f"MCP server {self.name!r} is not open: use `async with server:` around its "
                "use, or pass it to Agent(mcp_servers=[...]), which opens it for each run"
            )
        with anyio.move_on_after(self.connect_timeout + _RESTART_WAIT_GRACE):
            while True:
                if session.client is not None and not session.lost.is_set():
                    return session.client
                if session.unavailable is not None or session.stopped.is_set():
                    break
                await session.changed.wait()
        raise ToolError(
            (session.unavailable or f"MCP server {self.name!r} did not come back after a restart.")
            + " Do not call its tools again in this run; answer with what you have, or tell the "
            "user that this tool server needs attention."
        )

    def _connection_lost(self, session: _Session, client: Client, reason: str) -> None:
        if session.client is client and not session.lost.is_set():
            session.last_error = reason
            session.lost.set()

    # -- toolset ---------------------------------------------------------------------------------

    async def list_tools(self) -> list[MCPTool]:
        """The server's tools after ``allow``/``block`` filtering, namespaced with ``prefix``.

        Cached until the server reports a change or the connection is re-established. When
        the server has become unavailable, the last known tools are returned (their calls
        answer that the server is unavailable) so the tools block of a running task stays put.
        """
        async with self._lock:
            cached = self._tools
            if cached is not None:
                return list(cached)
            session = self._session
            if session is not None and session.unavailable is not None:
                if self._known_tools is not None:
                    return list(self._known_tools)
                raise MCPServerError(session.unavailable)
            try:
                client = await self._ready_client()
            except ToolError as exc:
                raise MCPServerError(str(exc)) from None
            version = self._tools_version
            definitions: list[mcp_types.Tool] = []
            cursor: str | None = None
            try:
                while True:
                    page = await client.list_tools(cursor=cursor, cache_mode="bypass")
                    definitions.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
            except Exception as exc:
                raise MCPServerError(
                    f"MCP server {self.name!r} could not list its tools: "
                    f"{_describe_exception(exc)}.{self._diagnostics()}"
                ) from exc
            tools = [
                MCPTool(self, d)
                for d in definitions
                if (self.allow is None or _matches(d.name, self.allow))
                and not _matches(d.name, self.block)
            ]
            if version == self._tools_version:  # no change notice arrived meanwhile
                self._tools = tools
            self._known_tools = tools
            return list(tools)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Call a tool by its MCP name (no prefix) and return the raw MCP result.

        ``isError`` results are returned as they are; a timeout, a lost connection or a
        protocol error raises :class:`ToolError` with a message written for the model.
        """
        import mcp_types
        from mcp import MCPError

        session = self._session
        client = await self._ready_client()
        assert session is not None
        try:
            return await client.call_tool(name, arguments, read_timeout_seconds=self.timeout)
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                self._connection_lost(session, client, f"the server exited while running {name!r}")
                allowed = session.restarts < self.max_restarts
                next_step = (
                    "It is being restarted; call the tool again only if repeating it is safe."
                    if allowed
                    else "It will not be restarted again; do not call its tools again in this run."
                )
                raise ToolError(
                    f"MCP server {self.name!r} stopped while running {name!r} (connection "
                    f"closed). {next_step}"
                ) from exc
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                raise ToolError(
                    f"{self.prefix}{name} did not finish within {self.timeout:g} s and was "
                    "cancelled. Try smaller inputs or a different approach."
                ) from exc
            raise ToolError(
                f"MCP server {self.name!r} rejected the call to {name!r}: {exc.message} "
                f"(error {exc.code}). Check the tool name and arguments against its schema."
            ) from exc
        except RuntimeError as exc:  # output-schema validation or an unexpected result shape
            raise ToolError(
                f"MCP server {self.name!r} returned an invalid result for {name!r}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.describe()}>"


def _describe_startup_error(exc: BaseException) -> str:
    import mcp_types
    from mcp import MCPError

    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError) and exc.code == mcp_types.CONNECTION_CLOSED:
        return "the server closed the connection during the MCP handshake (did it exit?)"
    if isinstance(exc, MCPError) and exc.code == mcp_types.REQUEST_TIMEOUT:
        return "the server did not answer the MCP handshake in time"
    return _describe_exception(exc)


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        inner = [_describe_exception(e) for e in exc.exceptions]
        return "; ".join(inner)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text


class MCPServerStdio(MCPServer):
    """An MCP server run as a subprocess, talking JSON-RPC over its stdin/stdout.

    ``env`` is merged over a minimal safe environment (``PATH``, ``HOME`` ...) as the MCP SDK
    does; pass what the server needs explicitly. The server's stderr is captured to a temporary
    file whose tail is quoted in error messages; pass ``errlog=sys.stderr`` to see it live.
    The default name comes from the command (``mcp-server-time`` → ``time``).
    """

    def __init__(
        self,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        errlog: TextIO | None = None,
        prefix: str | None = None,
        allow: Collection[str] | None = None,
        block: Collection[str] | None = None,
        timeout: float | None = 60.0,
        connect_timeout: float = 30.0,
        max_restarts: int = 1,
        requires_approval: bool | Collection[str] = False,
        protocol: Literal["auto", "legacy"] = "auto",
    ) -> None:
        super().__init__(
            name=name or _name_from_command(command, args),
            prefix=prefix,
            allow=allow,
            block=block,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_restarts=max_restarts,
            requires_approval=requires_approval,
            protocol=protocol,
        )
        self.command = command
        self.args = list(args)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.errlog = errlog
        self._stderr_file: TextIO | None = None
        self._stderr_path: str | None = None

    @classmethod
    def from_command_line(cls, command_line: str, **kwargs: Any) -> MCPServerStdio:
        """Build from one shell-style string, e.g. ``"mcp-server-git --repository ."``."""
        parts = shlex.split(command_line)
        if not parts:
            raise MCPServerError("empty MCP server command line; give e.g. 'mcp-server-time'")
        return cls(parts[0], parts[1:], **kwargs)

    def describe(self) -> str:
        """The command line."""
        return shlex.join([self.command, *self.args])

    def _target(self) -> Transport:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        errlog = self.errlog
        if errlog is None:
            if self._stderr_file is None:
                fd, path = tempfile.mkstemp(prefix=f"q3agent-mcp-{self.name}-", suffix=".log")
                os.close(fd)
                # Append mode: the child writes at the end even while we read the tail.
                self._stderr_file = open(path, "a", encoding="utf-8")  # noqa: SIM115
                self._stderr_path = path
            errlog = self._stderr_file
        params = StdioServerParameters(
            command=self.command, args=self.args, env=self.env, cwd=self.cwd
        )
        return stdio_client(params, errlog=errlog)

    def stderr_tail(self) -> str:
        """The end of what the server wrote to stderr in this open period (captured only)."""
        if self._stderr_path is None:
            return ""
        try:
            with open(self._stderr_path, encoding="utf-8", errors="replace") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - _STDERR_TAIL_CHARS))
                return f.read().strip()
        except OSError:
            return ""

    def _diagnostics(self) -> str:
        tail = self.stderr_tail()
        return f" Server stderr (last lines): {tail.rstrip('.')}." if tail else ""

    async def _cleanup(self) -> None:
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        if self._stderr_path is not None:
            with suppress(OSError):
                os.unlink(self._stderr_path)
            self._stderr_path = None


class _MCPServerHTTP(MCPServer):
    """What both HTTP transports share: a URL, headers sent with every request, and auth."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        auth: Any = None,
        name: str | None = None,
        prefix: str | None = None,
        allow: Collection[str] | None = None,
        block: Collection[str] | None = None,
        timeout: float | None = 60.0,
        connect_timeout: float = 30.0,
        max_restarts: int = 1,
        requires_approval: bool | Collection[str] = False,
        protocol: Literal["auto", "legacy"] = "auto",
    ) -> None:
        super().__init__(
            name=name or _name_from_url(url),
            prefix=prefix,
            allow=allow,
            block=block,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_restarts=max_restarts,
            requires_approval=requires_approval,
            protocol=protocol,
        )
        self.url = url
        self.headers = dict(headers or {})
        self.auth = auth

    def describe(self) -> str:
        """The URL."""
        return self.url


class MCPServerStreamableHTTP(_MCPServerHTTP):
    """An MCP server reached over streamable HTTP (the current MCP HTTP transport).

    ``headers`` go with every request (e.g. ``{"Authorization": "Bearer ..."}``); ``auth`` takes
    an ``httpx2.Auth`` such as the MCP SDK's OAuth client provider.
    """

    def _target(self) -> Transport:
        return _streamable_http_transport(self.url, self.headers, self.auth)


@asynccontextmanager
async def _streamable_http_transport(
    url: str, headers: dict[str, str], auth: Any
) -> AsyncIterator[TransportStreams]:
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async with (
        create_mcp_http_client(headers=headers or None, auth=auth) as http_client,
        streamable_http_client(url, http_client=http_client) as streams,
    ):
        yield streams


class MCPServerSSE(_MCPServerHTTP):
    """An MCP server reached over the older HTTP+SSE transport (``.../sse`` endpoints)."""

    def _target(self) -> Transport:
        from mcp.client.sse import sse_client

        return sse_client(self.url, headers=self.headers or None, auth=self.auth)


class MCPServerInProcess(MCPServer):
    """An MCP server object from the same process (``mcp.server.mcpserver.MCPServer``).

    Messages go through the SDK's in-memory transport as JSON-RPC, exactly as over stdio but
    without a subprocess: for tests, and for exposing Python-defined MCP servers to an agent.
    """

    def __init__(
        self,
        server: SDKServer,
        *,
        name: str | None = None,
        prefix: str | None = None,
        allow: Collection[str] | None = None,
        block: Collection[str] | None = None,
        timeout: float | None = 60.0,
        connect_timeout: float = 30.0,
        max_restarts: int = 1,
        requires_approval: bool | Collection[str] = False,
        protocol: Literal["auto", "legacy"] = "auto",
    ) -> None:
        super().__init__(
            name=name or server.name,
            prefix=prefix,
            allow=allow,
            block=block,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_restarts=max_restarts,
            requires_approval=requires_approval,
            protocol=protocol,
        )
        self.server = server

    def describe(self) -> str:
        """The in-process server's name."""
        return f"in-process server {self.server.name!r}"

    def _target(self) -> Transport:
        from mcp.client._memory import InMemoryTransport

        return InMemoryTransport(self.server)


# --------------------------------------------------------------------------------------------
# Configuration files

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KNOWN_KEYS = {
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "transport",
    "type",
    "prefix",
    "allow",
    "block",
    "timeout",
    "disabled",
    "requires_approval",
    "max_restarts",
}


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in os.environ:
                raise MCPServerError(
                    f"{where} uses ${{{var}}} but the environment variable {var} is not set; "
                    "export it or write the value into the config"
                )
            return os.environ[var]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, where) for k, v in value.items()}
    return value


def _server_from_entry(name: str, entry: Mapping[str, Any], source: str) -> MCPServer:
    where = f"mcpServers.{name} in {source}"
    unknown = set(entry) - _KNOWN_KEYS
    if unknown:
        logger.info("%s: ignoring unknown keys %s", where, sorted(unknown))
    common: dict[str, Any] = {"name": name}
    for key in ("prefix", "allow", "block", "timeout", "requires_approval", "max_restarts"):
        if key in entry:
            common[key] = entry[key]
    kind = str(entry.get("transport") or entry.get("type") or "").lower().replace("_", "-")
    if "command" in entry:
        if kind not in ("", "stdio"):
            raise MCPServerError(f"{where} has a 'command' but transport {kind!r}; use 'stdio'")
        args = _expand(entry.get("args", []), where)
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise MCPServerError(f"{where}: 'args' must be a list of strings")
        env = _expand(entry.get("env"), where)
        return MCPServerStdio(
            _expand(str(entry["command"]), where), args, env, entry.get("cwd"), **common
        )
    if "url" in entry:
        url = _expand(str(entry["url"]), where)
        headers = _expand(entry.get("headers") or {}, where)
        if not kind:
            kind = "sse" if url.rstrip("/").endswith("/sse") else "streamable-http"
        if kind == "sse":
            return MCPServerSSE(url, headers, **common)
        if kind in ("streamable-http", "streamablehttp", "http"):
            return MCPServerStreamableHTTP(url, headers, **common)
        raise MCPServerError(
            f"{where}: unknown transport {kind!r}; use 'streamable-http' (also 'http') or 'sse'"
        )
    raise MCPServerError(
        f"{where} needs either 'command' (a stdio server) or 'url' (an HTTP server), e.g. "
        '{"command": "mcp-server-time"} or {"url": "http://127.0.0.1:8000/mcp"}'
    )


def load_mcp_config(config: str | os.PathLike[str] | Mapping[str, Any]) -> list[MCPServer]:
    """Server handles from a ``{"mcpServers": {"name": {...}}}`` config (file path or dict).

    Each entry is either ``{"command", "args", "env", "cwd"}`` (stdio) or ``{"url", "headers",
    "transport"}`` with transport ``"streamable-http"`` (default) or ``"sse"`` (the default for
    URLs ending in ``/sse``); ``"type"`` is accepted for ``"transport"``. Entries may also set
    q3agent options: ``prefix``, ``allow``, ``block``, ``timeout``, ``requires_approval``,
    ``max_restarts``; ``"disabled": true`` skips one. ``${VAR}`` in strings is replaced from the
    environment. The config key is the server name (and tool prefix).
    """
    if isinstance(config, Mapping):
        data: Any = config
        source = "the config dict"
    else:
        path = Path(config)
        source = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MCPServerError(f"MCP config file {source} does not exist") from None
        except json.JSONDecodeError as exc:
            raise MCPServerError(f"MCP config file {source} is not valid JSON: {exc}") from None
    servers = data.get("mcpServers") if isinstance(data, Mapping) else None
    if servers is None and isinstance(data, Mapping) and "mcp_servers" in data:
        servers = data["mcp_servers"]
    if not isinstance(servers, Mapping):
        raise MCPServerError(
            f"{source} has no 'mcpServers' object; expected "
            '{"mcpServers": {"time": {"command": "mcp-server-time"}}}'
        )
    handles: list[MCPServer] = []
    for name, entry in servers.items():
        if not isinstance(entry, Mapping):
            raise MCPServerError(f"mcpServers.{name} in {source} must be an object")
        if entry.get("disabled"):
            continue
        handles.append(_server_from_entry(str(name), entry, source))
    return handles
