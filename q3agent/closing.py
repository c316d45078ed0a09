"""A base for objects that hold resources until closed, so that ``with obj:`` closes them."""

from __future__ import annotations

from typing import Self

__all__ = ["Closing"]


class Closing:
    """Something that holds resources (connections, locks, leases) until :meth:`close`.

    ``with obj:`` returns the object itself and calls :meth:`close` on the way out.
    """

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
