"""Reading why an MCP tool crashed from its server's log, when the answer itself does not say.

The official MCP SDK's servers answer a tool that raised an unexpected exception with only
``Error executing tool NAME`` (the exception's text stays on the server) and log the traceback
to stderr, which q3agent captures for stdio servers. :func:`crash_reason` finds the exception
line (``ValueError: the disk is full``) in that log, in plain tracebacks as well as in the
column-wrapped Rich tracebacks the SDK prints, so the model gets the server's own words.
"""

from __future__ import annotations

import re

__all__ = ["crash_reason", "is_bare_failure"]

_BARE = re.compile(r"^\s*Error executing tool \S+?\s*\.?\s*$")
_EXCEPTION = re.compile(
    r"^(?P<indent>\s*)(?P<name>(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*"
    r"(?:Error|Exception|Exit|Interrupt|Warning|Fault|Failure))"
    r": (?P<message>.*\S)\s*$"
)
_SOURCE_COLUMN = re.compile(r"\s{2,}[\w.-]+\.py:\d+$")
"""Rich log records end their first line with the emitting ``file.py:line``."""
_MAX_REASON = 600
_WRAPPED_INDENT = 16
"""Log layouts that wrap messages (Rich) indent them this far or more."""


def is_bare_failure(text: str, tool: str) -> bool:
    """Whether an error result says nothing but that the tool failed (or nothing at all)."""
    stripped = text.strip()
    return (
        not stripped
        or stripped == "(the tool returned no content)"
        or bool(_BARE.match(stripped))
        or stripped.rstrip(".") == f"Error executing tool {tool}"
    )


def crash_reason(log: str) -> str | None:
    """``"ExceptionName: message"`` of the last exception in ``log`` that is not the SDK's own
    wrapper (``... Error executing tool NAME``), or ``None`` when the log names none."""
    lines = [line.rstrip() for line in log.splitlines()]
    found: list[str] = []
    i = 0
    while i < len(lines):
        match = _EXCEPTION.match(lines[i])
        i += 1
        if match is None or any(c in lines[i - 1] for c in "│╭╰"):
            continue
        indent = match.group("indent")
        parts = [_SOURCE_COLUMN.sub("", match.group("message"))]
        if len(indent) >= _WRAPPED_INDENT:  # the message may go on, wrapped, below it
            while i < len(lines) and lines[i].startswith(indent) and lines[i].strip():
                follow = lines[i][len(indent) :]
                if follow[:1].isspace() or _EXCEPTION.match(lines[i]):
                    break
                parts.append(follow.strip())
                i += 1
        message = " ".join(parts)
        if message.startswith("Error executing tool"):
            continue
        found.append(f"{match.group('name')}: {message}")
    if not found:
        return None
    reason = found[-1]
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"
