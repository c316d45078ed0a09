"""Running q3agent's async entry points from synchronous code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import sniffio

T = TypeVar("T")


def run_sync(main: Callable[[], Awaitable[T]], *, instead: str) -> T:
    """Run ``main`` on a new event loop; inside a running loop, say to use ``instead``.

    Calling a blocking ``run()`` from async code would deadlock or fail obscurely, so it is
    refused with a message naming the awaitable to use (``instead``).
    """
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return anyio.run(main)
    raise RuntimeError(
        f"a synchronous entry point was called inside a running event loop; use `{instead}` "
        "in async code."
    )
