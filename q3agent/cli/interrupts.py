"""SIGTERM means what Ctrl-C means: every command stops the same way and keeps what finished.

``kill PID``, a container stop or a job scheduler's timeout send SIGTERM; without a handler the
process dies on the spot and loses its ``--trace``, partial report or finished evaluation
entries. :func:`sigterm_as_interrupt` forwards SIGTERM to whatever handles SIGINT at that
moment: Python's ``KeyboardInterrupt``, asyncio's cancellation of the main task (``run``), or
a command's own signal receiver (``research``, ``eval bfcl``).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["sigterm_as_interrupt"]


def _forward(signum: int, frame: FrameType | None) -> None:
    signal.raise_signal(signal.SIGINT)


def sigterm_as_interrupt() -> None:
    """Handle SIGTERM as Ctrl-C from now on (main thread only; elsewhere a no-op).

    A process started in the background by a non-interactive shell (``q3agent run … &`` in a
    script, or a CI runner) inherits SIGINT as *ignored*; asyncio then installs no handler and
    a forwarded SIGTERM would be ignored too, so the run went on to its end after ``kill``.
    SIGINT is therefore turned back on (as ``KeyboardInterrupt``) before it is used here.
    """
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _forward)
