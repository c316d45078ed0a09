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
    """Handle SIGTERM as Ctrl-C from now on (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _forward)
