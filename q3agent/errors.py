"""The error base that tells a mistake in the command or set-up from a failure while running.

Errors that mean "change the command, a setting or the installation and run again" derive from
:class:`UsageError`; the ``q3agent`` command exits 2 for them and 1 for any other failure (see
:mod:`q3agent.cli.exits`). Library users can catch :class:`UsageError` the same way.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A mistake in the command, its settings or the set-up; the message says what to change."""
