"""An MCP stdio server built with the official SDK whose tools fail, in the ways tools fail.

Run as ``python raising_mcp_server.py [--plain-log]``. Tools:

* ``error(text)``: raises ``ValueError("the disk is full (wanted to write TEXT)")``, an
  unexpected exception: the SDK answers only "Error executing tool error" and logs the
  traceback (Rich-formatted, wrapped at 80 columns; plain ``logging`` with ``--plain-log``).
* ``chained()``: raises ``RuntimeError("could not save the report")`` from a ``KeyError``.
* ``lookup(key)``: raises the SDK's ``ToolError`` (an anticipated failure; its text is sent).
* ``quiet()``: a crash that the server does not log (logging is turned off first).
"""

from __future__ import annotations

import logging
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("raising")


@server.tool()
def error(text: str = "notes.txt") -> str:
    """Write the text to disk (always fails)."""
    raise ValueError(f"the disk is full (wanted to write {text!r})")


@server.tool()
def chained() -> str:
    """Save the report (always fails, with a cause)."""
    try:
        {}["report"]
    except KeyError as exc:
        raise RuntimeError("could not save the report: the template 'report' is missing") from exc
    return "unreachable"


@server.tool()
def lookup(key: str) -> str:
    """Look a key up (fails with a deliberate ToolError)."""
    raise ToolError(f"no entry named {key!r}; known keys: alpha, beta")


@server.tool()
def quiet() -> str:
    """Fail without a traceback in the log."""
    logging.disable(logging.CRITICAL)  # from now on this server logs nothing
    raise OSError(5, "input/output error")


if __name__ == "__main__":
    if "--plain-log" in sys.argv:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
    server.run()
