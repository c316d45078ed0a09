"""Package attributes loaded on first use, so importing a package stays cheap."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


def defer_httpx_cli() -> None:
    """Keep ``import httpx`` from importing httpx's command-line client.

    httpx's ``__init__`` imports ``httpx._main`` (click, rich and pygments) whenever they are
    installed, as they are beside q3agent's CLI: about 0.4 s of CPU in every process that
    talks to a server, for a ``main`` q3agent never calls. Before httpx is first imported,
    this puts a stand-in ``httpx._main`` in ``sys.modules`` whose ``main`` imports the real
    module and runs it, so ``httpx.main`` still works. Does nothing once httpx is imported.
    """
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stand_in = types.ModuleType("httpx._main", "Stand-in: the real module loads on main().")

    def main(*args: Any, **kwargs: Any) -> Any:
        """Import httpx's real command-line client and run it."""
        if sys.modules.get("httpx._main") is stand_in:
            del sys.modules["httpx._main"]
        real = importlib.import_module("httpx._main")
        return real.main(*args, **kwargs)

    stand_in.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stand_in


defer_httpx_cli()


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first use."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
