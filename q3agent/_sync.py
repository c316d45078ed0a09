"""Running q3agent's async entry points from synchronous code, any number of times.

A synchronous ``run()`` must not start a fresh event loop per call: runtimes keep HTTP
clients (httpx connection pools) and engines bound to the loop they first ran on, so a second
``anyio.run`` would meet "Event loop is closed". Instead each object with sync entry points
owns a :class:`SyncPortal`: one event loop in a daemon thread, started on the first sync call
and reused by every later one, so everything the runtime binds stays valid.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import sniffio
from anyio.from_thread import BlockingPortal

T = TypeVar("T")


def _refuse_inside_a_loop(instead: str) -> None:
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return
    raise RuntimeError(
        f"a synchronous entry point was called inside a running event loop; use `{instead}` "
        "in async code."
    )


class SyncPortal:
    """One event loop in a background thread that sync entry points run their coroutines on.

    :meth:`call` runs ``main()`` there and blocks until it finishes; a ``KeyboardInterrupt``
    in the caller cancels it. The loop lives until :meth:`close` (or interpreter exit: the
    thread is a daemon), so clients bound to it survive between calls.
    """

    def __init__(self) -> None:
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _start(self) -> BlockingPortal:
        with self._lock:
            if self._portal is not None:
                return self._portal
            ready = threading.Event()
            holder: list[BlockingPortal] = []

            async def serve() -> None:
                async with BlockingPortal() as portal:
                    holder.append(portal)
                    ready.set()
                    await portal.sleep_until_stopped()

            thread = threading.Thread(
                target=lambda: anyio.run(serve), name="q3agent-sync-loop", daemon=True
            )
            thread.start()
            ready.wait()
            self._portal, self._thread = holder[0], thread
            return self._portal

    def call(self, main: Callable[[], Awaitable[T]], *, instead: str) -> T:
        """Run ``main()`` on the portal's loop; inside a running loop, say to use ``instead``."""
        _refuse_inside_a_loop(instead)
        portal = self._start()

        async def run() -> T:
            return await main()

        future = portal.start_task_soon(run)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop and its thread (a later :meth:`call` starts a new one)."""
        with self._lock:
            portal, thread = self._portal, self._thread
            self._portal = self._thread = None
        if portal is not None:
            portal.call(portal.stop)
        if thread is not None:
            thread.join(timeout=10)


def run_sync(main: Callable[[], Awaitable[T]], *, instead: str) -> T:
    """Run ``main`` on a new event loop; inside a running loop, say to use ``instead``.

    For one-shot calls that hold nothing bound to the loop afterwards; objects whose runtime
    outlives the call use a :class:`SyncPortal`.
    """
    _refuse_inside_a_loop(instead)
    return anyio.run(main)
