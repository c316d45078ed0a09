"""The Tool interface, tool errors, toolsets, output rendering and tool-name resolution.

A :class:`Tool` is anything the model can call: it has a name, a description, a JSON schema for
its arguments, validates what the model sent (:meth:`Tool.validate`) and runs
(:meth:`Tool.call`). Function tools (:func:`q3agent.tools.tool`) and MCP tools are both Tools;
the executor (:mod:`q3agent.tools.executor`) treats them alike.

Stateful tools have two documented patterns::

    class Counter(Tool):
        name = "increment"
        description = "Add to the counter and return the new total."
        parameters = {
            "type": "object",
            "properties": {"by": {"type": "integer", "description": "How much to add."}},
            "required": ["by"],
        }

        def __init__(self) -> None:
            self.total = 0

        async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
            self.total += arguments["by"]
            return self.total

or decorate a bound method, which keeps ``self`` out of the schema::

    class Notebook:
        def __init__(self) -> None:
            self.notes: list[str] = []

        def add_note(self, text: str) -> str:
            '''Save a note for later.'''
            self.notes.append(text)
            return f"saved note {len(self.notes)}"

    notebook = Notebook()
    agent = Agent(tools=[tool(notebook.add_note)])
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import pydantic_core

from q3agent.tools.context import RunContext

__all__ = [
    "DelegatingTool",
    "StaticToolset",
    "Tool",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "ToolError",
    "Toolset",
    "as_tool",
    "collect_tools",
    "describe_expected",
    "format_argument_path",
    "render_output",
    "resolve_tools",
]


class ToolArgumentsError(Exception):
    """The arguments the model sent do not fit the tool's schema.

    The message is written for the model: it names each wrong field and what is expected, e.g.
    ``argument 'unit' must be one of 'c', 'f'; got 'kelvin'``. ``errors`` holds one line per
    problem. A tool's :meth:`Tool.call` may raise it too, for checks the schema cannot express.
    """

    def __init__(self, message: str | Sequence[str]) -> None:
        self.errors: list[str] = [message] if isinstance(message, str) else list(message)
        if len(self.errors) == 1:
            text = self.errors[0]
        else:
            text = "\n".join(f"- {line}" for line in self.errors)
        super().__init__(text)


class ToolError(Exception):
    """Raise it from a tool to send a clean error message to the model.

    The model sees ``"Error: " + str(exc)`` (no exception type, no traceback), so say what went
    wrong and what the model can do instead, e.g. ``raise ToolError("no city named 'Pariss';
    check the spelling")``. Any other exception reaches the model as ``"Error: '<tool>' failed
    with <ExceptionType>: <message>"``.
    """


class ToolDefinitionError(TypeError):
    """A tool cannot be built from what was given (bad signature, duplicate names...)."""


class Tool(ABC):
    """Something the model can call.

    Subclasses set :attr:`name`, :attr:`description` and :attr:`parameters` (as class attributes
    or in ``__init__``) and implement :meth:`call`. The default :meth:`validate` checks the
    arguments against :attr:`parameters` with JSON Schema and renders problems for the model.
    """

    name: str
    """The name the model calls the tool by; unique within an agent."""
    description: str
    """What the tool does and when to use it; the model reads it."""
    parameters: dict[str, Any]
    """JSON schema of the arguments, an object schema (``{"type": "object", ...}``)."""
    requires_approval: bool = False
    """When true, the executor asks the approval callback before each call."""
    timeout: float | None = None
    """Seconds one call may take; ``None`` uses the executor's default."""
    max_retries: int = 2
    """How many failed calls of this tool in a row (invalid arguments, errors, timeouts) the
    model may retry: one more ends the run with status ``error``. A successful call resets the
    count. Counted by the agent loop; ``RunOptions.max_tool_errors`` caps all failures of a
    run together."""
    strict: bool = False
    """When true, the schema is rendered with ``"strict": true`` and arguments are validated
    without type coercion (function tools) and with unknown arguments rejected."""

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style tool dict that Qwen3's chat template renders in its tools block."""
        function: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    def validate(self, arguments: dict[str, Any]) -> Any:
        """Check the model's arguments against :attr:`parameters`; return what :meth:`call` gets.

        Raises :class:`ToolArgumentsError` with one line per problem. The default returns the
        arguments dict unchanged when it fits the schema.
        """
        errors = _json_schema_errors(self.parameters, arguments, self._json_validator())
        if errors:
            raise ToolArgumentsError(errors)
        return arguments

    @abstractmethod
    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        """Run the tool. ``arguments`` is what :meth:`validate` returned."""

    def render(self, output: Any) -> str:
        """Turn what :meth:`call` returned into the text the model sees; see
        :func:`render_output`."""
        return render_output(output)

    def _json_validator(self) -> Any:
        cached = self.__dict__.get("_q3_json_validator")
        if cached is None or cached[0] is not self.parameters:
            cached = (self.parameters, _build_json_validator(self.parameters))
            self.__dict__["_q3_json_validator"] = cached
        return cached[1]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '?')!r}>"


class DelegatingTool(Tool):
    """A tool that stands in for another, for wrappers that add behaviour around its calls.

    It takes the inner tool's name, description, parameters, timeout and retry budget, and
    hands validation, the call and the rendering to it; a subclass overrides what it changes.
    """

    def __init__(self, inner: Tool) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.parameters = inner.parameters
        self.timeout = inner.timeout
        self.max_retries = inner.max_retries

    def validate(self, arguments: dict[str, Any]) -> Any:
        """The wrapped tool's validation."""
        return self.inner.validate(arguments)

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        """The wrapped tool's call."""
        return await self.inner.call(arguments, ctx)

    def render(self, output: Any) -> str:
        """The wrapped tool's rendering."""
        return self.inner.render(output)


@runtime_checkable
class Toolset(Protocol):
    """Anything that provides tools at run start: an MCP server, a :class:`StaticToolset`...

    ``list_tools`` may be called at the start of every run; cache inside when listing is slow.
    """

    async def list_tools(self) -> Sequence[Tool]:
        """The tools available now."""
        ...


class StaticToolset:
    """A fixed list of tools (or plain functions) presented as a :class:`Toolset`."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]]) -> None:
        self.tools: list[Tool] = list(resolve_tools(tools).values())

    async def list_tools(self) -> Sequence[Tool]:
        """The tools given at construction."""
        return list(self.tools)


# --------------------------------------------------------------------------------------------
# Output rendering


def render_output(output: Any) -> str:
    """The text the model sees for a tool's return value.

    ``str`` passes through unchanged; ``None`` becomes ``"(no output)"`` (so the model reads it
    as "done, nothing to report" rather than a JSON null it might take for a failure); ``bytes``
    become a note with their size (binary data is useless as text to the model); pydantic
    models, dataclasses, dicts, lists, numbers and booleans become JSON with non-ASCII text kept
    as is; anything else JSON cannot represent falls back to ``str()``.
    """
    if isinstance(output, str):
        return output
    if output is None:
        return "(no output)"
    if isinstance(output, bytes | bytearray | memoryview):
        size = len(bytes(output))
        return f"(binary output of {size:,} bytes, not shown; return text to show it)"
    jsonable = pydantic_core.to_jsonable_python(output, fallback=str)
    return json.dumps(jsonable, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Argument problems rendered for the model (shared by function tools and JSON-schema tools)


def format_argument_path(path: Sequence[str | int]) -> str:
    """``("items", 0, "name")`` → ``items[0].name``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def show_value(value: Any, limit: int = 80) -> str:
    """A short rendering of a value the model sent: strings quoted, the rest as JSON."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def resolve_ref(root: Mapping[str, Any], ref: str) -> Mapping[str, Any] | None:
    """Follow a local ``$ref`` (``#/$defs/Name``) inside ``root``; ``None`` when it cannot."""
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None


def describe_expected(schema: Any, root: Mapping[str, Any] | None = None) -> str:
    """What a schema accepts, in words: ``one of 'c', 'f'``, ``an integer or null``..."""
    if not isinstance(schema, Mapping):
        return "a valid value"
    if "$ref" in schema and root is not None:
        target = resolve_ref(root, str(schema["$ref"]))
        if target is not None:
            return describe_expected(target, root)
    if "enum" in schema:
        return "one of " + ", ".join(show_value(v) for v in schema["enum"])
    if "const" in schema:
        return show_value(schema["const"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            parts = [describe_expected(s, root) for s in schema[key]]
            return " or ".join(dict.fromkeys(parts))
    kind = schema.get("type")
    if isinstance(kind, str):
        word = _TYPE_WORDS.get(kind, kind)
        if kind == "array" and isinstance(schema.get("items"), Mapping):
            items = describe_expected(schema["items"], root)
            if items != "a valid value":
                word = f"an array of {_plural(items)}"
        if kind == "string" and isinstance(schema.get("format"), str):
            word = f"a string ({schema['format']})"
        return word
    if isinstance(kind, list):
        return " or ".join(_TYPE_WORDS.get(str(k), str(k)) for k in kind)
    return "a valid value"


def _plural(words: str) -> str:
    for article in ("an ", "a "):
        if words.startswith(article) and " or " not in words and "(" not in words:
            return words[len(article) :] + "s"
    return f"items that are {words}"


def _build_json_validator(schema: Mapping[str, Any]) -> Any:
    import jsonschema  # type: ignore[import-untyped]

    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        return cls(schema)
    except jsonschema.SchemaError:
        # A tool with a schema we cannot check (e.g. an odd MCP server): let the tool itself
        # judge its arguments rather than rejecting every call.
        return None


def _json_schema_errors(schema: Mapping[str, Any], arguments: Any, validator: Any) -> list[str]:
    if validator is None:
        return []
    lines: list[str] = []
    errors = sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.path])
    for err in errors:
        path = list(err.absolute_path)
        where = format_argument_path(path)
        kind = err.validator
        instance = err.instance
        if kind == "required" and isinstance(instance, Mapping):
            for name in err.validator_value:
                if name not in instance:
                    lines.append(
                        f"missing required argument '{format_argument_path([*path, name])}'"
                    )
        elif kind == "additionalProperties" and isinstance(instance, Mapping):
            known = err.schema.get("properties", {})
            extras = [k for k in instance if k not in known]
            accepted = ", ".join(known) or "none"
            for name in extras:
                lines.append(
                    f"unexpected argument '{format_argument_path([*path, name])}' "
                    f"(accepted: {accepted})"
                )
        elif not path:
            lines.append(f"arguments must be {describe_expected(err.schema, schema)}")
        elif kind in ("type", "enum", "const", "anyOf", "oneOf"):
            lines.append(
                f"argument '{where}' must be {describe_expected(err.schema, schema)}; "
                f"got {show_value(instance)}"
            )
        else:
            lines.append(f"argument '{where}': {err.message}")
    return list(dict.fromkeys(lines))


# --------------------------------------------------------------------------------------------
# Turning Agent(tools=[...]) into a name → Tool mapping


def _is_toolset(obj: object) -> bool:
    return not isinstance(obj, Tool) and callable(getattr(obj, "list_tools", None))


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    """A :class:`Tool` as is; a plain function or bound method wrapped with ``@tool``."""
    if isinstance(obj, Tool):
        return obj
    if _is_toolset(obj):
        raise ToolDefinitionError(
            f"{obj!r} is a toolset (it has list_tools), not a single tool; toolsets are listed "
            "at run start: pass it in Agent(tools=[...]) or use collect_tools()"
        )
    if callable(obj):
        from q3agent.tools.function import FunctionTool

        return FunctionTool(obj)
    raise ToolDefinitionError(
        f"{obj!r} is not a tool: expected a Tool, a function (optionally decorated with @tool) "
        "or a toolset such as an MCP server"
    )


def _add_unique(registry: dict[str, Tool], new: Tool, source: str) -> None:
    existing = registry.get(new.name)
    if existing is None:
        registry[new.name] = new
        return
    if existing is new:
        return
    raise ToolDefinitionError(
        f"two tools are named {new.name!r} ({existing!r} and {new!r} from {source}); tool names "
        "must be unique: rename one, e.g. tool(fn, name='other_name'), or give the toolset a "
        "name prefix"
    )


def resolve_tools(tools: Iterable[Tool | Callable[..., Any]]) -> dict[str, Tool]:
    """Turn a list of tools and plain functions into a name → :class:`Tool` mapping.

    Functions are wrapped with ``@tool``. Raises :class:`ToolDefinitionError` on duplicate names
    or on a toolset (toolsets are async: use :func:`collect_tools`).
    """
    registry: dict[str, Tool] = {}
    for item in tools:
        _add_unique(registry, as_tool(item), "the tools list")
    return registry


async def collect_tools(
    sources: Iterable[Tool | Callable[..., Any] | Toolset],
) -> dict[str, Tool]:
    """Like :func:`resolve_tools`, also listing the tools of each :class:`Toolset` (MCP servers).

    The agent calls this at the start of a run, so a toolset's current tools are used.
    """
    registry: dict[str, Tool] = {}
    for source in sources:
        if isinstance(source, Tool):
            _add_unique(registry, source, "the tools list")
        elif isinstance(source, Toolset):
            for item in await source.list_tools():
                if not isinstance(item, Tool):
                    raise ToolDefinitionError(
                        f"toolset {source!r} listed {item!r}, which is not a Tool"
                    )
                _add_unique(registry, item, f"toolset {source!r}")
        else:
            _add_unique(registry, as_tool(source), "the tools list")
    return registry
