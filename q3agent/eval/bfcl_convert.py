"""Conversions between BFCL's formats and q3agent's: function docs, calls and ground truth.

BFCL writes function docs in its own dialect of JSON schema (``dict``, ``float``, ``tuple``,
``any``, Java type names); Qwen3's tools block wants standard JSON schema inside OpenAI-style
tool dicts. Calls go the other way: a :class:`~q3agent.qwen3.messages.ToolCall` becomes the
``{name: {arg: value}}`` dict BFCL's AST checker reads, or the ``name(arg=value)`` string its
multi-turn checker executes. Ground-truth answers become concrete calls for the oracle.
"""

from __future__ import annotations

import ast
import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from q3agent.qwen3.messages import ToolCall

__all__ = [
    "BFCL_TO_JSON_SCHEMA_TYPE",
    "call_string",
    "calls_from_answer",
    "convert_schema",
    "decoded_calls",
    "parse_call_string",
    "python_call_list",
    "source_value",
    "to_qwen3_tool",
    "to_qwen3_tools",
]

BFCL_TO_JSON_SCHEMA_TYPE: dict[str, str | None] = {
    "integer": "integer",
    "number": "number",
    "float": "number",
    "double": "number",
    "string": "string",
    "char": "string",
    "String": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "Boolean": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "ArrayList": "array",
    "Array": "array",
    "Queue": "array",
    "Stack": "array",
    "dict": "object",
    "object": "object",
    "HashMap": "object",
    "Hashtable": "object",
    "byte": "integer",
    "short": "integer",
    "long": "integer",
    "Bigint": "integer",
    "any": None,
    "Any": None,
}
"""BFCL type names → JSON-schema types; ``None`` means "any value" (the ``type`` is dropped)."""


def convert_schema(node: Any) -> Any:
    """A copy of a BFCL parameter schema in standard JSON schema (recursively).

    Unknown type names are kept as they are, so nothing the model should see is lost.
    """
    if isinstance(node, list):
        return [convert_schema(item) for item in node]
    if not isinstance(node, Mapping):
        return copy.deepcopy(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, str):
            if value in BFCL_TO_JSON_SCHEMA_TYPE:
                mapped = BFCL_TO_JSON_SCHEMA_TYPE[value]
                if mapped is not None:
                    out["type"] = mapped
            else:
                out["type"] = value
        elif key == "properties" and isinstance(value, Mapping):
            out["properties"] = {name: convert_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping | list):
            out[key] = convert_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_qwen3_tool(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One BFCL function doc as the OpenAI-style tool dict Qwen3's template renders."""
    parameters = convert_schema(doc.get("parameters") or {"type": "dict", "properties": {}})
    parameters["type"] = "object"
    parameters.setdefault("properties", {})
    function: dict[str, Any] = {
        "name": doc["name"],
        "description": doc.get("description", ""),
        "parameters": parameters,
    }
    return {"type": "function", "function": function}


def to_qwen3_tools(docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """All of an entry's function docs as Qwen3 tool dicts, in BFCL's order."""
    return [to_qwen3_tool(doc) for doc in docs]


# --------------------------------------------------------------------------------------------
# Calls → what BFCL's checkers read


def decoded_calls(calls: Sequence[ToolCall]) -> list[dict[str, dict[str, Any]]]:
    """Calls in the ``[{name: {arg: value}}]`` form BFCL's AST checker takes."""
    return [{call.name: dict(call.arguments)} for call in calls]


def call_string(call: ToolCall) -> str:
    """A call as BFCL's multi-turn checker executes it: ``name(a=1,b='x')``.

    Same rendering as BFCL's ``convert_to_function_call`` (``repr`` of each argument).
    """
    args = ",".join(f"{key}={value!r}" for key, value in call.arguments.items())
    return f"{call.name}({args})"


def python_call_list(calls: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Calls in BFCL's prompting format: ``[f(a=1), g(b='x')]`` (Python literals)."""
    parts = [f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})" for name, args in calls]
    return "[" + ", ".join(parts) + "]"


# --------------------------------------------------------------------------------------------
# Ground truth → concrete calls (for the oracle)


def _pick(options: Any) -> tuple[bool, Any]:
    """From a list of acceptable values: (keep?, value). ``""`` among them means "may omit"."""
    if not isinstance(options, list):
        return True, options
    if not options or "" in options:  # no acceptable value listed: BFCL data defect
        return False, None
    value = options[0]
    if isinstance(value, dict):
        return True, _concrete_dict(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return True, [_concrete_dict(v) for v in value]
    return True, value


def _concrete_dict(possible: Mapping[str, Any]) -> dict[str, Any]:
    """A dict whose values are lists of acceptable values → one acceptable dict."""
    out: dict[str, Any] = {}
    for key, options in possible.items():
        keep, value = _pick(options)
        if keep:
            out[key] = value
    return out


def calls_from_answer(
    answer: Sequence[Mapping[str, Mapping[str, Any]]],
    functions: Sequence[Mapping[str, Any]] = (),
    language: str = "python",
) -> list[tuple[str, dict[str, Any]]]:
    """One correct set of calls for a BFCL single-turn possible answer.

    Each argument takes its first acceptable value; an optional argument (``""`` among its
    acceptable values) is left out unless the function doc marks it required. For Java and
    JavaScript, values become the source strings BFCL expects (see :func:`source_value`);
    ``functions`` must then be BFCL's untouched docs, which carry the Java/JS types.
    """
    required: dict[str, set[str]] = {
        str(doc["name"]): set(doc.get("parameters", {}).get("required", [])) for doc in functions
    }
    properties: dict[str, Mapping[str, Any]] = {
        str(doc["name"]): doc.get("parameters", {}).get("properties", {}) for doc in functions
    }
    calls: list[tuple[str, dict[str, Any]]] = []
    for item in answer:
        for name, params in item.items():
            args: dict[str, Any] = {}
            for param, options in params.items():
                keep, value = _pick(options)
                if (
                    not keep
                    and param in required.get(name, set())
                    and any(o != "" for o in options)
                ):
                    keep, value = True, next(o for o in options if o != "")
                if keep and language != "python":
                    value = source_value(value, properties.get(name, {}).get(param, {}), language)
                if keep:
                    args[param] = value
            calls.append((name, args))
    return calls


def parse_call_string(
    text: str, positional_names: Callable[[str], Sequence[str]] | None = None
) -> tuple[str, dict[str, Any]]:
    """Parse one multi-turn ground-truth call (``cd(folder='x')``, ``sort('a.txt')``).

    Positional arguments are named with ``positional_names(function_name)`` (the parameter
    names of the environment method); raises ``ValueError`` when the text is not a call.
    """
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call):
        raise ValueError(f"not a function call: {text!r}")
    func = node.func
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    name = ".".join(reversed(parts))
    args: dict[str, Any] = {}
    if node.args:
        names = list(positional_names(name)) if positional_names else []
        if len(names) < len(node.args):
            raise ValueError(f"cannot name the positional arguments of {text!r}")
        for pname, value in zip(names, node.args, strict=False):
            args[pname] = ast.literal_eval(value)
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"**kwargs are not supported in {text!r}")
        args[kw.arg] = ast.literal_eval(kw.value)
    return name, _jsonable(args)


def _jsonable(value: Any) -> Any:
    """Tuples become lists (a JSON round trip does the same to what a model sends)."""
    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------------------------
# Java and JavaScript argument values (BFCL passes them as source-code strings)


def _java_element(value: Any, nested: str | None) -> str:
    if isinstance(value, str):
        if nested == "char":
            return f"'{value}'"
        return json.dumps(value)
    if nested is not None and not isinstance(value, list | dict):
        return source_value(value, {"type": nested}, "java")
    return _plain_literal(value)


def _plain_literal(value: Any) -> str:
    """A scalar as Java or JavaScript source: ``true``/``false``, a JSON string, else repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _js_element(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_js_element(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_js_element(v)}" for k, v in value.items()) + "}"
    return _plain_literal(value)


def source_value(value: Any, schema: Mapping[str, Any], language: str) -> str:
    """A Java/JavaScript argument value as the source string BFCL's type converters read back.

    ``schema`` is the parameter's entry in BFCL's untouched function doc (its Java/JS type);
    strings are already source code in BFCL's answers and pass through unchanged.
    """
    if isinstance(value, str):
        return value
    kind = str(schema.get("type", "any"))
    nested_schema = schema.get("items")
    nested = str(nested_schema["type"]) if isinstance(nested_schema, Mapping) else None
    if language == "java":
        if isinstance(value, bool):
            return "true" if value else "false"
        if kind == "long" and isinstance(value, int):
            return f"{value}L"
        if kind == "float" and isinstance(value, int | float):
            return f"{value}f"
        if kind == "Array" and isinstance(value, list):
            element_type = {"String": "String", "integer": "int"}.get(nested or "", "Object")
            items = ", ".join(
                str(v) if isinstance(v, str) else _java_element(v, nested) for v in value
            )
            return f"new {element_type}[]{{{items}}}"
        if kind == "ArrayList" and isinstance(value, list):
            if not value:
                return "new ArrayList<>()"
            items = ", ".join(_java_element(v, nested) for v in value)
            return f"new ArrayList<>(Arrays.asList({items}))"
        if kind == "HashMap" and isinstance(value, dict):
            puts = " ".join(f'put("{k}", {_plain_literal(v)});' for k, v in value.items())
            return f"new HashMap<String, Object>() {{{{ {puts} }}}}" if puts else "new HashMap<>()"
        return _plain_literal(value)
    if kind == "Bigint" and isinstance(value, int):
        return f"{value}n"
    return _js_element(value)
