"""``{"mcpServers": {...}}`` configuration files (Claude Desktop, Cursor, Qwen-Agent style)."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from q3agent.tools.mcp.connection import MCPServer, MCPServerError
from q3agent.tools.mcp.transports import MCPServerSSE, MCPServerStdio, MCPServerStreamableHTTP

__all__ = ["load_mcp_config"]

logger = logging.getLogger("q3agent.tools.mcp")

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
    "required",
    "roots",
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
    for key in (
        "prefix",
        "allow",
        "block",
        "timeout",
        "requires_approval",
        "max_restarts",
        "required",
        "roots",
    ):
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
    ``max_restarts``, ``required`` (the run fails if it cannot start), ``roots`` (folders
    offered to the server); ``"disabled": true`` skips one. ``${VAR}`` in strings is replaced
    from the environment. The config key is the server name (and tool prefix).
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
