"""The ``serve-mcp`` server: the MCP server object, its HTTP app and the transports.

:func:`build_mcp_server` makes the MCP server (official SDK) with the tools of
:mod:`q3agent.mcp_server.tools`; :func:`serve` runs it over stdio or streamable HTTP, the
HTTP app wrapped in the checks of :mod:`q3agent.mcp_server.http_security`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import anyio
import mcp_types
from mcp.server.mcpserver import Context
from mcp.server.mcpserver import MCPServer as SDKServer

from q3agent.mcp_server.errors import PortInUse, ServeConfigError
from q3agent.mcp_server.http_security import (
    TOKEN_ENV,
    BearerTokenMiddleware,
    LowercaseHostMiddleware,
    allowed_hosts_for,
    check_http_settings,
)
from q3agent.mcp_server.served import ServedAgent
from q3agent.mcp_server.tools import add_served_tools, served_instructions

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from q3agent.agent import Agent

__all__ = ["bind_socket", "build_mcp_server", "http_app", "serve"]


class _Q3AgentMCPServer(SDKServer[Any]):
    """The SDK's server with JSON-RPC error codes where it falls back to 0."""

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        context: Context[Any, Any] | None = None,
    ) -> mcp_types.GetPromptResult | mcp_types.InputRequiredResult:
        """Like the SDK's, but an unknown prompt is ``-32602 Invalid params``, not code 0."""
        from mcp import MCPError

        if self._prompt_manager.get_prompt(name) is None:
            known = ", ".join(p.name for p in await self.list_prompts()) or "none"
            raise MCPError(
                code=mcp_types.INVALID_PARAMS,
                message=f"Unknown prompt: {name!r} (this server's prompts: {known})",
            )
        return await super().get_prompt(name, arguments, context)


def build_mcp_server(
    served: ServedAgent | Agent,
    *,
    name: str = "q3agent",
    lifespan_close: bool = True,
) -> SDKServer:
    """The MCP server object (official SDK) exposing ``ask`` and, with a store, ``rag_*``.

    Run it with :func:`serve`, or connect to it in-process in tests
    (``q3agent.tools.mcp.MCPServerInProcess`` or ``mcp.Client(server)``). With
    ``lifespan_close``, the agent's runtime is closed when the server shuts down.
    """
    from q3agent import __version__

    if not isinstance(served, ServedAgent):
        served = ServedAgent(served)
    holder = served

    @asynccontextmanager
    async def lifespan(_server: SDKServer[Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            if lifespan_close:
                await holder.aclose()

    server: SDKServer[Any] = _Q3AgentMCPServer(
        name,
        instructions=served_instructions(served),
        lifespan=lifespan,
        log_level="WARNING",
        version=__version__,
    )
    add_served_tools(server, served)
    return server


def http_app(
    server: SDKServer,
    *,
    host: str,
    token: str | None,
    path: str = "/mcp",
    port: int = 8000,
    allowed_hosts: Sequence[str] = (),
) -> ASGIApp:
    """The streamable HTTP ASGI app: Host/Origin allowlist always, bearer auth with ``token``.

    Requests whose ``Host`` is not in :func:`allowed_hosts_for` get 421, and requests that carry
    an ``Origin`` other than ``http(s)://`` one of those hosts get 403, on every bind address.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    check_http_settings(host, token)
    hosts = allowed_hosts_for(host, port, allowed_hosts)
    if not hosts:
        raise ServeConfigError(
            f"serving on {host} accepts any Host header, which lets web pages reach the server "
            "through DNS rebinding; name the host clients use with --allowed-host NAME[:PORT] "
            "(e.g. --allowed-host myserver.lan:8000)"
        )
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=path, host=host, transport_security=security
    )
    app = LowercaseHostMiddleware(app)
    return BearerTokenMiddleware(app, token) if token else app


def bind_socket(host: str, port: int) -> Any:
    """A listening TCP socket on ``host:port`` (port 0: a free one), bound before anything else.

    Binding first means the Host allowlist is built for the port actually bound, and a busy
    port is one clear error. Raises :class:`PortInUse` when the port is taken and
    :class:`ServeConfigError` for any other reason the address cannot be bound.
    """
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServeConfigError(
            f"--host {host}: not an address of this machine ({exc.strerror}); use e.g. 127.0.0.1"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use by another program; stop it, or pick "
                "another port with --port N (--port 0 takes a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeConfigError(
                f"not allowed to listen on port {port} of {host} (ports below 1024 need "
                "privileges); pick a port above 1024 with --port N"
            ) from None
        raise ServeConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port"
        ) from None
    return sock


async def serve(
    server: SDKServer,
    *,
    transport: Literal["stdio", "streamable-http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    path: str = "/mcp",
    allowed_hosts: Sequence[str] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run ``server`` until stopped (stdin closed for stdio; Ctrl-C / SIGTERM for HTTP).

    The HTTP socket is bound first (:func:`bind_socket`): with ``port=0`` the Host allowlist
    names the port the system picked, and a port in use raises :class:`PortInUse` before the
    server starts. ``on_ready`` is called with the endpoint URL once the HTTP server accepts
    connections.
    """
    if transport == "stdio":
        await server.run_stdio_async()
        return
    if transport != "streamable-http":
        raise ServeConfigError(f"unknown transport {transport!r}; use stdio or streamable-http")
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_http_settings(host, token)
    sock = bind_socket(host, port)
    try:
        bound = int(sock.getsockname()[1])
        app = http_app(
            server, host=host, token=token, path=path, port=bound, allowed_hosts=allowed_hosts
        )
        config = uvicorn.Config(app, host=host, port=bound, log_level="warning", lifespan="on")
        http_server = uvicorn.Server(config)
        if on_ready is None:
            await http_server.serve(sockets=[sock])
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: http_server.serve(sockets=[sock]))
            while not http_server.started:  # noqa: ASYNC110 - uvicorn has only this flag
                await anyio.sleep(0.05)
            shown = f"[{host.strip('[]')}]" if ":" in host else host
            on_ready(f"http://{shown}:{bound}{path}")
    finally:
        sock.close()
