"""How MCP server handles connect: stdio subprocesses, streamable HTTP, SSE, in-process."""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TextIO, Unpack

from q3agent.tools.mcp.connection import (
    MCPServer,
    MCPServerError,
    MCPServerOptions,
    _name_from_command,
    _name_from_url,
)

if TYPE_CHECKING:
    from mcp.client._transport import Transport, TransportStreams
    from mcp.server.mcpserver import MCPServer as SDKServer

__all__ = ["MCPServerInProcess", "MCPServerSSE", "MCPServerStdio", "MCPServerStreamableHTTP"]

_STDERR_TAIL_CHARS = 1500
_LOG_SINCE_BYTES = 65_536


class MCPServerStdio(MCPServer):
    """An MCP server run as a subprocess, talking JSON-RPC over its stdin/stdout.

    ``env`` is merged over a minimal safe environment (``PATH``, ``HOME`` ...) as the MCP SDK
    does; pass what the server needs explicitly. The server's stderr is captured to a temporary
    file whose tail is quoted in error messages; pass ``errlog=sys.stderr`` to see it live.
    The default name comes from the command (``mcp-server-time`` → ``time``). Bytes on stdout
    that are not UTF-8 are replaced (U+FFFD), and lines that are not JSON-RPC are logged in one
    line and skipped; neither ends the session.
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
        **options: Unpack[MCPServerOptions],
    ) -> None:
        super().__init__(name=name or _name_from_command(command, args), **options)
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
            command=self.command,
            args=self.args,
            env=self.env,
            cwd=self.cwd,
            encoding_error_handler="replace",
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

    def log_mark(self) -> int:
        """The size of the captured stderr now (0 when it is not captured)."""
        if self._stderr_path is None:
            return 0
        try:
            return os.path.getsize(self._stderr_path)
        except OSError:
            return 0

    def log_since(self, mark: int) -> str:
        """The captured stderr written after ``mark`` (its last 64 KB at most)."""
        if self._stderr_path is None:
            return ""
        try:
            with open(self._stderr_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(mark if mark <= size else 0, size - _LOG_SINCE_BYTES))
                return f.read().decode("utf-8", errors="replace")
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
        **options: Unpack[MCPServerOptions],
    ) -> None:
        super().__init__(name=name or _name_from_url(url), **options)
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
        **options: Unpack[MCPServerOptions],
    ) -> None:
        super().__init__(name=name or server.name, **options)
        self.server = server

    def describe(self) -> str:
        """The in-process server's name."""
        return f"in-process server {self.server.name!r}"

    def _target(self) -> Transport:
        from mcp.client._memory import InMemoryTransport

        return InMemoryTransport(self.server)
