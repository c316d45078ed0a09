"""``q3agent serve-mcp``: a q3agent agent (and RAG store) served as an MCP server.

Any MCP client (Claude Desktop, an IDE, another agent) can then call:

* ``ask(task)``: run the configured agent on the task; returns the answer with its sources
  (numbered RAG citations when a store is configured, plus the tool calls the agent made).
  Sends ``notifications/progress`` at every step and tool call.
* ``rag_search(query, k)`` and ``rag_ingest(sources)``: when a RAG store is given
  (``--rag-store DIR`` or ``--rag-url URL``); ``rag_ingest`` reports progress per source.
* ``research(question)``: with ``--research``, a deep-research report (cited Markdown) from
  :mod:`q3agent.research`, with progress per stage.

Transports: stdio (the default; what desktop clients launch) and streamable HTTP. Streamable
HTTP binds to 127.0.0.1 by default; binding to any other address requires a non-blank bearer
token (``--token`` or ``Q3AGENT_MCP_TOKEN``), and every request without the right
``Authorization: Bearer <token>`` header gets 401. Whatever the address, requests whose
``Host`` (or ``Origin``) header is not the bound address (plus ``--allowed-host`` names) are
refused, so a web page cannot reach the server through DNS rebinding.

What clients may read: ``rag_ingest`` is served only when the operator names the folders
(``--allow-folder``) and URL prefixes (``--allow-url``) it may read; any other path or URL,
including symlinks and redirects that lead outside, is refused. ``ask`` tasks are limited to
``--max-task-tokens`` tokens, counted in a worker thread so a huge task cannot stall the server.

Shutdown order: the agent's own MCP servers are closed after each ``ask`` run, and the runtime
last, when the server stops. SGLang's ``Engine.shutdown`` kills all child processes of this
process, so closing the runtime first would kill MCP servers still in use.

The package, by concern:

* :mod:`~q3agent.mcp_server.grants` (with :mod:`~q3agent.mcp_server.url_grants`): what served
  tools may read;
* :mod:`~q3agent.mcp_server.http_security`: bearer token, Host and Origin checks;
* :mod:`~q3agent.mcp_server.served` and :mod:`~q3agent.mcp_server.tools`: the served agent,
  its ``ask`` run and the MCP tools;
* :mod:`~q3agent.mcp_server.app`: the server object, its HTTP app and the transports.

Building a served agent from ``serve-mcp``'s flags lives with the command line, in
:mod:`q3agent.cli.served_agent`.
"""

from __future__ import annotations

from q3agent.mcp_server.app import bind_socket, build_mcp_server, http_app, serve
from q3agent.mcp_server.errors import PortInUse, ServeConfigError
from q3agent.mcp_server.grants import ReadPolicy, SourceRefused
from q3agent.mcp_server.http_security import (
    TOKEN_ENV,
    BearerTokenMiddleware,
    LowercaseHostMiddleware,
    allowed_hosts_for,
    check_http_settings,
    is_loopback,
)
from q3agent.mcp_server.served import (
    DEFAULT_MAX_TASK_TOKENS,
    AskResult,
    AskSource,
    ServedAgent,
    TaskTooLong,
    check_task_size,
    render_ask,
    run_ask,
)

__all__ = [
    "DEFAULT_MAX_TASK_TOKENS",
    "TOKEN_ENV",
    "AskResult",
    "AskSource",
    "BearerTokenMiddleware",
    "LowercaseHostMiddleware",
    "PortInUse",
    "ReadPolicy",
    "ServeConfigError",
    "ServedAgent",
    "SourceRefused",
    "TaskTooLong",
    "allowed_hosts_for",
    "bind_socket",
    "build_mcp_server",
    "check_http_settings",
    "check_task_size",
    "http_app",
    "is_loopback",
    "render_ask",
    "run_ask",
    "serve",
]
