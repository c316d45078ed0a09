"""BFCL's executable multi-turn environments as q3agent tools.

Each multi-turn entry involves some of BFCL's environment classes (``GorillaFileSystem``,
``MathAPI``, ``MessageAPI``, ``TwitterAPI``, ``TicketAPI``, ``TradingBot``, ``TravelAPI``,
``VehicleControlAPI``). :class:`BfclEnvironment` creates them with the entry's
``initial_config`` (as BFCL's executor does) and turns BFCL's function docs into
:class:`EnvTool` objects bound to the instances' methods. The schemas the model sees are BFCL's
docs converted to JSON schema, never derived from the Python signatures.

Calls run the way BFCL's executor runs them: no schema validation (whatever the model sends is
passed to the method), an exception becomes ``"Error during execution: …"``, a dict result is
JSON, anything else ``str()``. So what the model reads matches a BFCL run.

These tools let an :class:`~q3agent.agent.Agent` work on BFCL's environments; the benchmark
harness itself runs calls on BFCL's own executor (:mod:`q3agent.eval.bfcl_multi_turn`).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from q3agent.eval.bfcl_convert import to_qwen3_tool
from q3agent.eval.bfcl_data import BfclEntry, bfcl_module
from q3agent.tools.base import Tool
from q3agent.tools.context import RunContext

__all__ = ["BfclEnvironment", "EnvTool", "method_parameters", "render_bfcl_result"]


def render_bfcl_result(result: Any) -> str:
    """A method's return value as BFCL's executor shows it to the model."""
    if isinstance(result, str):
        return result
    if isinstance(result, dict):
        try:
            return json.dumps(result)
        except (TypeError, ValueError):
            return str(result)
    return str(result)


class EnvTool(Tool):
    """One BFCL function doc bound to the environment method of the same name."""

    def __init__(self, doc: Mapping[str, Any], method: Any) -> None:
        schema = to_qwen3_tool(doc)["function"]
        self.name = str(schema["name"])
        self.description = str(schema["description"])
        self.parameters = schema["parameters"]
        self.method = method
        self.timeout = 30.0

    def validate(self, arguments: dict[str, Any]) -> Any:
        """No schema check: BFCL passes the model's arguments to the method as they are."""
        return arguments

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        """Run the method like BFCL does (the agent runs a step's calls one by one, in order)."""
        try:
            return self.method(**arguments)
        except Exception as exc:  # the model reads the error, as in BFCL
            return f"Error during execution: {exc}"

    def render(self, output: Any) -> str:
        """BFCL's rendering of results (see :func:`render_bfcl_result`)."""
        return render_bfcl_result(output)


@dataclass
class BfclEnvironment:
    """The environment instances of one multi-turn entry, and tools bound to them."""

    entry_id: str
    instances: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, entry: BfclEntry) -> BfclEnvironment:
        """Instantiate the entry's classes and load its ``initial_config`` into them."""
        config = bfcl_module("constants.executable_backend_config")
        env = cls(entry.id)
        long_context = "long_context" in entry.category
        for class_name in entry.involved_classes:
            module = importlib.import_module(config.CLASS_FILE_PATH_MAPPING[class_name])
            instance = getattr(module, class_name)()
            if class_name not in config.STATELESS_CLASSES:
                scenario = copy.deepcopy(entry.initial_config.get(class_name, {}))
                instance._load_scenario(scenario, long_context=long_context)
            env.instances[class_name] = instance
        return env

    def method(self, name: str) -> Any:
        """The bound public method called ``name`` (``None`` when no instance has it)."""
        for instance in self.instances.values():
            candidate = getattr(instance, name, None)
            if not name.startswith("_") and inspect.ismethod(candidate):
                return candidate
        return None

    def tools(self, docs: Sequence[Mapping[str, Any]]) -> list[Tool]:
        """Tools for the given function docs, bound to this environment's instances.

        A doc with no matching method becomes a tool that reports the missing function when
        called (as BFCL's executor would fail on it).
        """
        out: list[Tool] = []
        for doc in docs:
            method = self.method(str(doc["name"]))
            if method is None:
                method = _missing(str(doc["name"]))
            out.append(EnvTool(doc, method))
        return out


def _missing(name: str) -> Any:
    def fail(**_: Any) -> str:
        raise NameError(f"name '{name}' is not defined")

    return fail


def method_parameters(class_names: Sequence[str], function_name: str) -> list[str]:
    """Parameter names (``self`` excluded) of ``function_name`` on the first class that has it.

    Reads the classes' signatures without instantiating them; ``[]`` when none has it.
    """
    config = bfcl_module("constants.executable_backend_config")
    for class_name in class_names:
        module = importlib.import_module(config.CLASS_FILE_PATH_MAPPING[class_name])
        func = getattr(getattr(module, class_name), function_name, None)
        if func is not None and callable(func):
            names = list(inspect.signature(func).parameters)
            return names[1:] if names and names[0] == "self" else names
    return []
