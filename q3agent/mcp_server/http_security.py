"""HTTP security of ``serve-mcp``: who may reach the server, and under which names.

Streamable HTTP binds to 127.0.0.1 by default; binding to any other address requires a
non-blank bearer token (``--token`` or ``Q3AGENT_MCP_TOKEN``), and every request without the
right ``Authorization: Bearer <token>`` header gets 401 (:class:`BearerTokenMiddleware`).
Whatever the address, requests whose ``Host`` (or ``Origin``) header is not the bound address
(plus ``--allowed-host`` names, :func:`allowed_hosts_for`) are refused, so a web page cannot
reach the server through DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from q3agent.mcp_server.errors import ServeConfigError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "TOKEN_ENV",
    "BearerTokenMiddleware",
    "LowercaseHostMiddleware",
    "allowed_hosts_for",
    "check_http_settings",
    "is_loopback",
]

TOKEN_ENV = "Q3AGENT_MCP_TOKEN"
"""Environment variable read for the bearer token when ``--token`` is not given."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerTokenMiddleware:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <token>``, else 401.

    The comparison is constant-time. Lifespan events pass through.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for key, value in scope.get("headers", []):
            if key.lower() == b"authorization":
                given = value
                break
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": "invalid_token",
                "error_description": "missing or wrong bearer token; send "
                "'Authorization: Bearer <token>' with the token the server was started with",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer error="invalid_token"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def check_http_settings(host: str, token: str | None) -> None:
    """Refuse to expose the agent beyond this machine without a token, and blank tokens."""
    if token is not None and not token.strip():
        raise ServeConfigError(
            "the bearer token is empty or only whitespace; pass a real secret with --token "
            f"(or {TOKEN_ENV}), e.g. the output of `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`"
        )
    if not is_loopback(host) and not token:
        raise ServeConfigError(
            f"refusing to serve on {host} without a bearer token: anyone who can reach this "
            f"address could run the agent. Pass --token TOKEN (or set {TOKEN_ENV}), or bind to "
            "127.0.0.1."
        )


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _host_forms(host: str) -> list[str]:
    """How ``host`` appears in a Host header: IPv6 addresses in brackets."""
    bare = host.strip("[]")
    try:
        if ipaddress.ip_address(bare).version == 6:
            return [f"[{bare}]"]
    except ValueError:
        pass
    return [bare.lower()]


def allowed_hosts_for(host: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The Host header values the server accepts: the bound address (and, on a loopback bind,
    ``localhost`` and the other loopback names), each with the port, plus ``extra`` names.

    A wildcard bind (``0.0.0.0``, ``::``) accepts only the ``extra`` names (``--allowed-host``),
    since the name clients use for this machine cannot be known in advance.
    """
    names: list[str] = []
    if not _is_wildcard(host):
        names.extend(_host_forms(host))
    if is_loopback(host):
        names.extend(["localhost", "127.0.0.1", "[::1]"])
    for item in extra:
        item = item.strip().lower()  # host names are case-insensitive
        if item:
            names.append(item)
    allowed: list[str] = []
    for name in dict.fromkeys(names):
        if name.endswith("]") or name.count(":") == 0:
            allowed.extend([f"{name}:{port}", name] if port in (80, 443) else [f"{name}:{port}"])
        else:
            allowed.append(name)  # already has a port (or ':*')
    return list(dict.fromkeys(allowed))


class LowercaseHostMiddleware:
    """ASGI middleware: the ``Host`` and ``Origin`` headers lower-cased before they are checked.

    Host names are case-insensitive (``LOCALHOST:8000`` is ``localhost:8000``), while the MCP
    SDK's allowlist compares strings exactly.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [
                (key, value.lower() if key.lower() in (b"host", b"origin") else value)
                for key, value in scope.get("headers", [])
            ]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
