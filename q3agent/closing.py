"""A base for objects that hold resources until closed, so that ``with obj:`` closes them."""

from __future__ import annotations

import abc
from typing import Self

__all__ = ["Closing"]


class Closing(abc.ABC):
    """Something that holds resources (connections, locks, leases) until :meth:`close`.

    ``with obj:`` returns the object itself and calls :meth:`close` on the way out.
    """

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
