"""The errors that stop ``serve-mcp`` from starting: each message says what to change."""

from __future__ import annotations

from q3agent.errors import UsageError

__all__ = ["PortInUse", "ServeConfigError"]


class ServeConfigError(UsageError):
    """The server cannot start as configured; the message says what to change."""


class PortInUse(ServeConfigError):
    """The HTTP port is taken by another program (a set-up mistake: pick another port)."""
