"""MCP client test fixtures: a crash-prone stdio server script and a process-table check."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CRASHY_SERVER = '''
"""A small MCP stdio server that can crash on request (for restart and cleanup tests)."""
import os
import sys
import time

from mcp.server.mcpserver import MCPServer

marker = os.environ.get("CRASHY_REFUSE_RESTART")
if marker:
    if os.path.exists(marker):
        print("crashy: refusing to start again (state file is corrupt)", file=sys.stderr)
        sys.exit(1)
    open(marker, "w").close()

server = MCPServer("crashy")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    print("crashy: crashing now", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "slept"


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


server.run()
'''


@pytest.fixture
def crashy_server(tmp_path: Path) -> list[str]:
    """Command line (python + script) of a stdio MCP server with echo/crash/sleep/pid tools."""
    script = tmp_path / "crashy_server.py"
    script.write_text(CRASHY_SERVER, encoding="utf-8")
    return [sys.executable, str(script)]


def descendants(pid: int | None = None) -> set[int]:
    """Live descendant process ids of ``pid`` (default: this process), read from /proc."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, ...
        after = stat.rsplit(")", 1)[1].split()
        if after[0] == "Z":  # a zombie is dead; only its parent's reaping is pending
            continue
        children.setdefault(int(after[1]), []).append(int(entry))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(exited)"


@pytest.fixture
def no_leaked_processes() -> Iterator[None]:
    """Fail the test if it leaves child processes of the test process running."""
    before = descendants()
    yield
    leaked = descendants() - before
    details = {p: _cmdline(p) for p in leaked}
    assert not leaked, f"processes left running after the test: {details}"
