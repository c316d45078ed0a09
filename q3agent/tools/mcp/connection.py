"""An MCP server handle's connection and lifecycle: open, supervise, restart, call, close.

:class:`MCPServer` owns one connection per open period (between the outermost ``async with``
enter and exit) in a supervisor task, so the transport is entered and left in one task. The
supervisor restarts a connection that died (``max_restarts``, default once); a stdio server
whose output ends is noticed at once, not at the next call's timeout. A call that times out is
followed by a ping: a server that does not answer it is hung, and is restarted so that later
calls are not stuck behind the hung one (this restart is not counted against ``max_restarts``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

import anyio
import anyio.abc

from q3agent.tools.base import ToolError
from q3agent.tools.mcp.client_features import (
    ElicitationCallback,
    SamplingApproval,
    elicitation_handler,
    roots_handler,
    sampling_handler,
)

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client
    from mcp.client._transport import Transport, TransportStreams
    from mcp.server.mcpserver import MCPServer as SDKServer
    from mcp.shared.dispatcher import ProgressFnT

    from q3agent.serving.base import Runtime
    from q3agent.tools.mcp.toolset import MCPTool

__all__ = ["MCPServer", "MCPServerError", "MCPServerOptions"]

logger = logging.getLogger("q3agent.tools.mcp")

_RESTART_WAIT_GRACE = 10.0
_CLOSE_GRACE = 6.0
PING_GRACE = 3.0
"""Seconds a server has to answer a ping after one of its calls timed out before it is
considered hung and restarted."""

ApprovalSetting = bool | Collection[str] | Literal["destructive"]


class MCPServerError(Exception):
    """An MCP server could not be started, is not open, or its configuration is wrong.

    The message says which server, what happened and what to do next. Errors during a tool call
    are :class:`~q3agent.tools.base.ToolError` instead, so the model sees them as tool results.
    """


class MCPServerOptions(TypedDict, total=False):
    """Options every MCP server handle takes (see :class:`MCPServer` for what each does)."""

    prefix: str | None
    allow: Collection[str] | None
    block: Collection[str] | None
    timeout: float | None
    connect_timeout: float
    max_restarts: int
    requires_approval: ApprovalSetting
    protocol: Literal["auto", "legacy"]
    required: bool
    sampling: bool | SamplingApproval
    sampling_runtime: Runtime | None
    elicitation: ElicitationCallback | None
    roots: Sequence[str | os.PathLike[str]] | None


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


def _describe_startup_error(exc: BaseException) -> str:
    import mcp_types
    from mcp import MCPError

    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError) and exc.code == mcp_types.CONNECTION_CLOSED:
        return "the server closed the connection during the MCP handshake (did it exit?)"
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, MCPError) and exc.code == mcp_types.REQUEST_TIMEOUT
    ):
        return "the server did not answer the MCP handshake in time"
    return describe_exception(exc)


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` (groups joined with ``;``) for error messages."""
    if isinstance(exc, BaseExceptionGroup):
        inner = [describe_exception(e) for e in exc.exceptions]
        return "; ".join(inner)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text


class _StdioJunkFilter(logging.Filter):
    """Drops the MCP SDK's traceback for each stdout line that is not JSON-RPC; q3agent logs
    one line per such line instead (with the server's name)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to parse JSONRPC message")


logging.getLogger("mcp.client.stdio").addFilter(_StdioJunkFilter())


@asynccontextmanager
async def _watched(
    transport: Transport,
    on_closed: Callable[[], None],
    on_junk: Callable[[Exception], None],
) -> AsyncIterator[TransportStreams]:
    """``transport``, relaying what it reads: calls ``on_closed`` as soon as the server's output
    ends and ``on_junk`` (instead of the session) for lines that are not JSON-RPC."""
    from mcp.shared.message import SessionMessage

    async with transport as (read, write):
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def relay() -> None:
            try:
                async with send:
                    async for item in read:
                        if isinstance(item, Exception):
                            on_junk(item)
                            continue
                        await send.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            finally:
                on_closed()

        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            try:
                yield receive, write
            finally:
                tg.cancel_scope.cancel()
                receive.close()


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
        self.hung_restarts = 0
        self.forgive = False
        """The next lost connection was a hung server we stopped ourselves: not counted."""
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
        requires_approval: Which tools need the agent's approval callback before each call:
            ``"destructive"`` (the default) those the server annotates as destructive
            (``destructiveHint``, or annotations without ``readOnlyHint``); ``True`` all;
            ``False`` none; or MCP tool names (patterns).
        protocol: ``"auto"`` (discover the newest protocol, fall back to the initialize
            handshake) or ``"legacy"`` (initialize handshake only).
        required: When false (the default), an agent run whose server fails to start goes on
            without its tools and the model is told which are missing; when true the run fails.
        sampling: Serve the server's ``sampling/createMessage`` requests with the agent's
            runtime: ``True``, or a :data:`SamplingApproval` asked each time. Default off.
        sampling_runtime: The runtime for sampling; by default the agent run's runtime.
        elicitation: Answers the server's requests for user input; default: not offered.
        roots: Folders the server may work in, offered as ``roots/list``; default: not offered.
    """

    def __init__(self, *, name: str, **options: Unpack[MCPServerOptions]) -> None:
        self.name = _check_name(name)
        prefix = options.get("prefix")
        self.prefix = f"{self.name}." if prefix is None else prefix
        allow = options.get("allow")
        self.allow = None if allow is None else tuple(allow)
        self.block = tuple(options.get("block") or ())
        self.timeout: float | None = options.get("timeout", 60.0)
        self.connect_timeout: float = options.get("connect_timeout", 30.0)
        self.max_restarts: int = options.get("max_restarts", 1)
        approval = options.get("requires_approval", "destructive")
        self.requires_approval: bool | tuple[str, ...] | Literal["destructive"] = (
            approval if isinstance(approval, bool) or approval == "destructive" else tuple(approval)
        )
        self.protocol: Literal["auto", "legacy"] = options.get("protocol", "auto")
        self.required: bool = options.get("required", False)
        self.sampling: bool | SamplingApproval = options.get("sampling", False)
        self.sampling_runtime: Runtime | None = options.get("sampling_runtime")
        self.elicitation: ElicitationCallback | None = options.get("elicitation")
        roots = options.get("roots")
        self.roots: list[Path] | None = None if roots is None else [Path(r) for r in roots]
        self.startup_error: str | None = None
        """Why the last open failed (set by :func:`~q3agent.tools.mcp.open_toolsets`)."""
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

    def log_mark(self) -> int:
        """Where the server's captured log ends now, for :meth:`log_since` (0 without one)."""
        return 0

    def log_since(self, mark: int) -> str:
        """What the server logged after :meth:`log_mark` gave ``mark`` (a stdio server's
        captured stderr; ``""`` for servers whose log q3agent cannot see)."""
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
            # One bound for the whole start (the SDK may try discovery, then initialize).
            with anyio.fail_after(self.connect_timeout):
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

        lost = session.lost

        def on_closed() -> None:
            if not lost.is_set():
                if not session.closing:
                    session.last_error = "the server closed its output (it exited or crashed)"
                lost.set()

        def on_junk(exc: Exception) -> None:
            errors = getattr(exc, "errors", None)
            line: Any = None
            if callable(errors):
                with contextlib.suppress(Exception):
                    line = errors()[0].get("input")
            shown = repr(line[:120]) if isinstance(line, str) else type(exc).__name__
            logger.warning(
                "MCP server %r wrote a line to stdout that is not JSON-RPC; ignored: %s",
                self.name,
                shown,
            )

        target = self._target()
        from mcp.server.mcpserver import MCPServer as SDKServer

        if not isinstance(target, SDKServer):
            target = _watched(target, on_closed, on_junk)
        sampling = None
        if self.sampling is not False:
            approve = None if self.sampling is True else self.sampling
            sampling = sampling_handler(self.name, lambda: self.sampling_runtime, approve)
        return Client(
            target,
            mode=self.protocol,
            read_timeout_seconds=self.connect_timeout,
            message_handler=on_message,
            cache=None,
            sampling_callback=sampling,
            elicitation_callback=(
                None
                if self.elicitation is None
                else elicitation_handler(self.name, self.elicitation)
            ),
            list_roots_callback=None if self.roots is None else roots_handler(self.roots),
        )

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
                    session.last_error = describe_exception(exc)
                    logger.debug("MCP server %r connection ended: %r", self.name, exc)
                session.client = None
                if session.closing:
                    return
                if session.forgive:
                    session.forgive = False
                    session.hung_restarts += 1
                    logger.warning(
                        "MCP server %r (%s) hung in a tool call; restarting it",
                        self.name,
                        self.describe(),
                    )
                    continue
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
        A server that failed to start in :func:`~q3agent.tools.mcp.open_toolsets` has none.
        """
        from q3agent.tools.mcp.toolset import MCPTool

        async with self._lock:
            cached = self._tools
            if cached is not None:
                return list(cached)
            session = self._session
            if session is None and self.startup_error is not None:
                return []
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
                    f"{describe_exception(exc)}.{self._diagnostics()}"
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

    async def _responds(self, client: Client) -> bool:
        """Whether the server answers a request within :data:`PING_GRACE` seconds."""
        with anyio.move_on_after(PING_GRACE):
            try:
                # ``ping`` is gone from the 2026-07-28 protocol; any cheap request will do.
                await client.list_tools(cache_mode="bypass")
            except Exception:
                return False
            return True
        return False

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        progress: ProgressFnT | None = None,
    ) -> mcp_types.CallToolResult:
        """Call a tool by its MCP name (no prefix) and return the raw MCP result.

        ``progress`` receives the server's progress notifications for this call. ``isError``
        results are returned as they are; a timeout, a lost connection or a protocol error
        raises :class:`ToolError` with a message written for the model. After a timeout the
        server is pinged; one that does not answer is restarted, so the next call works.
        """
        import mcp_types
        from mcp import MCPError

        session = self._session
        client = await self._ready_client()
        assert session is not None
        try:
            return await client.call_tool(
                name, arguments, read_timeout_seconds=self.timeout, progress_callback=progress
            )
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
                after = "The server is still responsive."
                if not await self._responds(client):
                    if session.client is client and not session.lost.is_set():
                        session.forgive = True
                    self._connection_lost(
                        session, client, f"{name!r} hung and the server stopped answering"
                    )
                    after = "The server had stopped answering and is being restarted."
                raise ToolError(
                    f"{self.prefix}{name} did not finish within {self.timeout:g} s and was "
                    f"cancelled. {after} Try smaller inputs or a different approach."
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
