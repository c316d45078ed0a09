"""A test runtime that calls every tool with arguments made from its JSON schema.

:class:`SchemaRuntime` needs no script: for a task it answers, as a Qwen3 completion, one
``<tool_call>`` per tool offered in the request, each with arguments generated from the tool's
schema (:func:`example_arguments`); once the tool responses are back it answers with a JSON
object of each tool's result. It goes through the real chat template, tokenizer and parser
like the other test runtimes, so a user's test exercises their tools' schemas, validation and
code end to end without writing a single completion::

    runtime = SchemaRuntime()
    result = Agent(runtime=runtime, tools=[get_weather, search_orders]).run("go")
    assert "error" not in result.answer.lower()
    print(runtime.calls)  # [("get_weather", {"city": "city", "unit": "c"}), ...]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Unpack

from q3agent.qwen3.messages import AssistantMessage, ToolMessage, UserMessage
from q3agent.qwen3.thinking import reasoning_mode
from q3agent.serving.base import GenerationRequest
from q3agent.testing.runtimes import Completion, StandInOptions, _TestRuntimeBase
from q3agent.tools.base import resolve_ref

__all__ = ["SchemaRuntime", "example_arguments", "example_value"]

_FORMATS = {
    "date": "2024-01-31",
    "date-time": "2024-01-31T12:00:00Z",
    "time": "12:00:00",
    "duration": "P1D",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "12345678-1234-4234-8234-123456789abc",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}
_SHALLOW = 3
"""Below this depth, objects get only their required properties and arrays only their
``minItems`` (so recursive schemas end)."""
_MAX_DEPTH = 32


def example_arguments(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments that fit a tool's parameters schema: every property (required or not) gets a
    value of its type; see :func:`example_value`."""
    value = example_value(parameters)
    return value if isinstance(value, dict) else {}


def example_value(
    schema: Any,
    *,
    name: str = "value",
    variant: int = 0,
    root: Mapping[str, Any] | None = None,
    depth: int = 0,
) -> Any:
    """A value that fits a JSON schema: its ``examples``, ``const`` or first ``enum`` value,
    else one built from its type (strings named after their property and shaped by ``format``
    and length limits; numbers within bounds and ``multipleOf``; arrays of ``minItems`` or one
    item; objects with their properties). ``variant`` makes array items differ. Schemas this
    cannot satisfy (a ``pattern`` with no example or default) get a best effort.
    """
    root = root if root is not None else (schema if isinstance(schema, Mapping) else {})
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return f"{name}{variant or ''}"
    schema = _resolved(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][variant % len(schema["enum"])]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    if "pattern" in schema and "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        members = schema.get(key)
        if isinstance(members, list) and members:
            chosen = next((m for m in members if not _is_null(m, root)), members[0])
            return example_value(chosen, name=name, variant=variant, root=root, depth=depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _example_object(schema, root, depth)
    if kind == "array":
        return _example_array(schema, name, root, depth)
    if kind in ("integer", "number"):
        return _example_number(schema, kind, variant)
    if kind == "boolean":
        return variant % 2 == 0
    if kind == "null":
        return None
    return _example_string(schema, name, variant)


def _resolved(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with its ``$ref`` followed and its ``allOf`` members merged in."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = resolve_ref(root, ref) or {}
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    members = schema.get("allOf")
    if isinstance(members, list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for member in members:
            if isinstance(member, Mapping):
                merged.update(_resolved(member, root))
        schema = merged
    return schema


def _is_null(schema: Any, root: Mapping[str, Any]) -> bool:
    return isinstance(schema, Mapping) and _type_of(_resolved(schema, root)) == "null"


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _example_object(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    required = set(schema.get("required", ()))
    out = {
        key: example_value(sub, name=key, root=root, depth=depth + 1)
        for key, sub in props.items()
        if depth < _SHALLOW or key in required
    }
    extra = schema.get("additionalProperties")
    if not props and isinstance(extra, Mapping) and depth < _SHALLOW:
        out["key"] = example_value(extra, name="key", root=root, depth=depth + 1)
    return out


def _example_array(
    schema: Mapping[str, Any], name: str, root: Mapping[str, Any], depth: int
) -> list[Any]:
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    low = int(schema.get("minItems", 0))
    count = max(low, 1 if depth < _SHALLOW else 0, len(prefix))
    if "maxItems" in schema:
        count = min(count, int(schema["maxItems"]))
    items = schema.get("items", {})
    return [
        example_value(
            prefix[i] if i < len(prefix) else items,
            name=name,
            variant=i,
            root=root,
            depth=depth + 1,
        )
        for i in range(count)
    ]


def _example_number(schema: Mapping[str, Any], kind: str, variant: int) -> int | float:
    integer = kind == "integer"
    step = 1 if integer else 0.5
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + step
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - step
    value: float = (1 if integer else 1.5) + variant
    if low is not None and value < low:
        value = low + variant
    if high is not None and value > high:
        value = high if low is None else max(low, high - variant)
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        value = multiple * math.ceil(value / multiple)
        if high is not None and value > high:
            value = multiple * math.floor(high / multiple)
    return int(value) if integer else float(value)


def _example_string(schema: Mapping[str, Any], name: str, variant: int) -> str:
    text = _FORMATS.get(str(schema.get("format")), f"{name}{variant or ''}")
    low = int(schema.get("minLength", 0))
    if len(text) < low:
        text += "x" * (low - len(text))
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text


class SchemaRuntime(_TestRuntimeBase):
    """A Qwen3 stand-in that calls every tool once, then answers with their results.

    For a request whose conversation ends with the user's turn it writes one ``<tool_call>``
    per offered tool (``call_tools`` may name a subset) with :func:`example_arguments`; after
    the tool responses it writes the final answer: ``answer`` if given, else a JSON object of
    each called tool's result text by tool name. In thinking mode the completion starts with a
    short ``<think>`` block, as Qwen3's would. What it sent is kept in :attr:`calls`; every
    request in ``.requests``, as for the other test runtimes.

    It reads the conversation and tools from ``request.messages`` and ``request.tools``, which
    the agent loop always fills.
    """

    default_model_name = "schema-qwen3"

    def __init__(
        self,
        *,
        call_tools: Sequence[str] | Literal["all"] = "all",
        answer: str | None = None,
        **options: Unpack[StandInOptions],
    ) -> None:
        super().__init__(**options)
        self.call_tools = call_tools
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []
        """(tool name, arguments) of every call written, in order."""

    async def _complete(self, request: GenerationRequest) -> Completion:
        mode = reasoning_mode(request.prompt_ids, self.tokenizer, request.enable_thinking)
        thinking = {
            "open": "I will call each tool once.\n</think>\n\n",
            "required": "<think>\nI will call each tool once.\n</think>\n\n",
        }.get(mode, "")
        results = _tool_results(request)
        if results is not None:
            return thinking + (self.answer or json.dumps(results, ensure_ascii=False))
        blocks = []
        for spec in request.tools:
            function = spec.get("function", spec)
            name = str(function.get("name", ""))
            if self.call_tools != "all" and name not in self.call_tools:
                continue
            arguments = example_arguments(function.get("parameters") or {})
            self.calls.append((name, arguments))
            body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
            blocks.append(f"<tool_call>\n{body}\n</tool_call>")
        if not blocks:
            return thinking + (self.answer or "There are no tools to call.")
        return thinking + "\n".join(blocks)


def _tool_results(request: GenerationRequest) -> dict[str, str] | None:
    """The tool responses since the user's last turn by tool name, or ``None`` when the tools
    have not been called yet for it."""
    results: dict[str, str] = {}
    called = False
    for message in reversed(request.messages):
        if isinstance(message, UserMessage):
            break
        if isinstance(message, ToolMessage):
            results.setdefault(message.name or message.tool_call_id or "tool", message.content)
        elif isinstance(message, AssistantMessage) and message.tool_calls:
            called = True
    return dict(reversed(results.items())) if called else None
