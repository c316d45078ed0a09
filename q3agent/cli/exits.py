"""The exit statuses of every ``q3agent`` command, in one place.

====  =========================================================================
0     the command did what it was asked
1     a failure while running (a model, server or tool failed; a run or report
      ended incomplete)
2     a mistake in the command or set-up (bad flag or value, missing file,
      model or package); nothing was run
130   interrupted (Ctrl-C or SIGTERM); what finished was kept
====  =========================================================================

The status of an exception is chosen from its type: :class:`q3agent.errors.UsageError` (and
argparse's own usage errors) mean 2, anything else 1.
"""

from __future__ import annotations

from q3agent.errors import UsageError

__all__ = ["FAILURE", "INTERRUPTED", "OK", "USAGE", "exit_status"]

OK = 0
"""The command did what it was asked."""
FAILURE = 1
"""A failure while running."""
USAGE = 2
"""A mistake in the command or set-up (argparse uses 2 for its own usage errors too)."""
INTERRUPTED = 130
"""Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)."""


def exit_status(exc: BaseException) -> int:
    """The exit status for an exception that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, UsageError):
        return USAGE
    return FAILURE
