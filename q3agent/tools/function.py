"""Function tools: ``@tool`` turns a typed Python function into a :class:`Tool`.

One pydantic model built from the function's signature gives both the JSON schema the model sees
and the validation of the arguments it sends, so the two cannot disagree. Descriptions come from
the docstring (Google, NumPy or Sphinx style, detected with griffe) and from
``Annotated[..., Field(description=...)]``; the latter wins when both are given.

Schema decisions, made for a model reading raw JSON in its system prompt:

* no ``title`` keys; ``$defs`` are inlined (only recursive models keep a ``$defs`` block);
* ``Optional[int]`` becomes ``{"type": ["integer", "null"]}`` rather than an ``anyOf``;
* keys in natural order: ``type``, ``description``, ``enum``..., ``properties``, ``required``;
* unknown arguments are rejected at validation (an unexpected argument usually means the model
  misread the tool, and telling it is better than silently ignoring), but
  ``additionalProperties: false`` is written into the schema only for ``strict=True`` tools, to
  keep every tool's prompt text short.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    ParamSpec,
    TypedDict,
    TypeVar,
    Unpack,
    get_args,
    get_origin,
    overload,
)

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from q3agent.tools.base import (
    Tool,
    ToolArgumentsError,
    ToolDefinitionError,
    describe_expected,
    format_argument_path,
    resolve_ref,
    show_value,
)
from q3agent.tools.context import RunContext

__all__ = [
    "DocstringStyle",
    "FunctionSchema",
    "FunctionTool",
    "ToolOptions",
    "clean_schema",
    "function_schema",
    "parse_docstring",
    "tool",
    "validation_error_lines",
]

P = ParamSpec("P")
R = TypeVar("R")

DocstringStyle = Literal["google", "numpy", "sphinx"]


# --------------------------------------------------------------------------------------------
# Docstrings


def parse_docstring(
    text: str | None, style: DocstringStyle | None = None
) -> tuple[str, dict[str, str]]:
    """Split a docstring into the tool description and per-parameter descriptions.

    ``style`` ``None`` detects Google, NumPy or Sphinx style with griffe's heuristics. Sections
    other than the free text and the parameters (returns, raises, examples) are left out of the
    description. A docstring griffe cannot parse is used whole as the description.
    """
    if not text or not text.strip():
        return "", {}
    import griffe

    try:
        docstring = griffe.Docstring(text)
        parser: Any = style
        if parser is None:
            parser, _ = griffe.infer_docstring_style(docstring)
        sections = docstring.parse(parser, warnings=False) if parser else docstring.parse()
    except Exception:
        return text.strip(), {}
    description: list[str] = []
    params: dict[str, str] = {}
    for section in sections:
        kind = section.kind.value
        if kind == "text":
            description.append(str(section.value).strip())
        elif kind in ("parameters", "other parameters"):
            for param in section.value:
                if param.description:
                    params[param.name.lstrip("*")] = str(param.description).strip()
    return "\n\n".join(d for d in description if d), params


# --------------------------------------------------------------------------------------------
# Schema cleaning

_KEY_ORDER = (
    "type",
    "description",
    "enum",
    "const",
    "format",
    "anyOf",
    "oneOf",
    "allOf",
    "properties",
    "items",
    "required",
    "additionalProperties",
)
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "contains", "propertyNames", "if")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _ordered(schema: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: schema[k] for k in _KEY_ORDER if k in schema}
    out.update((k, v) for k, v in schema.items() if k not in out)
    return out


def clean_schema(schema: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """Make a pydantic JSON schema pleasant for a model to read; see the module docstring.

    ``strict`` adds ``additionalProperties: false`` at the top level; otherwise the top-level
    ``additionalProperties`` is dropped (validation still rejects unknown arguments).
    """
    defs: Mapping[str, Any] = schema.get("$defs", {})
    kept: dict[str, Any] = {}

    def walk(node: Any, stack: frozenset[str]) -> Any:
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref[len("#/$defs/") :]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if name in defs and name not in stack:
                inner = walk(defs[name], stack | {name})
                return _ordered({**inner, **walk(siblings, stack)})
            if name in defs and name not in kept:
                kept[name] = {}  # placeholder against infinite recursion
                kept[name] = walk(defs[name], stack | {name})
            return _ordered({"$ref": ref, **walk(siblings, stack)})
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "$defs"):
                continue
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                out[key] = {k: walk(v, stack) for k, v in value.items()}
            elif key in _SCHEMA_VALUES:
                out[key] = walk(value, stack)
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [walk(v, stack) for v in value]
            else:
                out[key] = value
        members = out.get("anyOf")
        if (
            isinstance(members, list)
            and "type" not in out
            and all(
                isinstance(m, Mapping) and set(m) == {"type"} and isinstance(m["type"], str)
                for m in members
            )
        ):
            del out["anyOf"]
            out["type"] = [m["type"] for m in members]
        return _ordered(out)

    cleaned: dict[str, Any] = walk(schema, frozenset())
    cleaned.pop("additionalProperties", None)
    cleaned.pop("description", None)
    cleaned.setdefault("type", "object")
    cleaned.setdefault("properties", {})
    if strict:
        cleaned["additionalProperties"] = False
    cleaned = _ordered(cleaned)
    if kept:
        cleaned["$defs"] = kept
    return cleaned


# --------------------------------------------------------------------------------------------
# Validation errors rendered for the model

_TYPE_ERRORS = {"literal_error", "enum", "none_required", "union_tag_invalid", "model_type"}


def _is_type_error(kind: str) -> bool:
    return (
        kind in _TYPE_ERRORS
        or kind.endswith("_type")
        or kind.endswith("_parsing")
        or kind.endswith("_from_float")
    )


def _deref(node: Any, root: Mapping[str, Any]) -> Any:
    if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        return resolve_ref(root, node["$ref"]) or node
    return node


def _walk_loc(
    root: Mapping[str, Any], loc: Sequence[str | int]
) -> tuple[list[str | int], Any, Any]:
    """Map a pydantic error location to (argument path, its schema, the parent's schema)."""
    path: list[str | int] = []
    node: Any = root
    parent: Any = None
    for part in loc:
        node = _deref(node, root)
        if not isinstance(node, Mapping):
            path.append(part)
            parent, node = None, None
            continue
        if isinstance(part, int):
            path.append(part)
            parent, node = node, node.get("items")
            continue
        props = node.get("properties")
        if isinstance(props, Mapping) and part in props:
            path.append(part)
            parent, node = node, props[part]
            continue
        members = node.get("anyOf") or node.get("oneOf")
        if isinstance(members, list):
            for member in members:
                member = _deref(member, root)
                if isinstance(member, Mapping) and part in member.get("properties", {}):
                    path.append(part)
                    parent, node = member, member["properties"][part]
                    break
            # otherwise ``part`` is pydantic's union-member tag (``int``, ``list[str]``...):
            # it is not part of what the model wrote, so skip it.
            continue
        path.append(part)
        parent, node = node, None
    return path, node, parent


def validation_error_lines(exc: ValidationError, schema: Mapping[str, Any]) -> list[str]:
    """One line per problem in ``exc``, phrased for the model, using the cleaned ``schema``."""
    lines: list[str] = []
    typed_paths: set[str] = set()
    for err in exc.errors(include_url=False):
        path, node, parent = _walk_loc(schema, err["loc"])
        where = format_argument_path(path)
        kind = err["type"]
        got = show_value(err.get("input"))
        if kind == "missing":
            lines.append(f"missing required argument '{where}'")
        elif kind == "extra_forbidden":
            props = parent.get("properties", {}) if isinstance(parent, Mapping) else {}
            accepted = ", ".join(props) or "none"
            lines.append(f"unexpected argument '{where}' (accepted: {accepted})")
        elif not path:
            lines.append(f"arguments must be a JSON object; got {got}")
        elif _is_type_error(kind) and node is not None:
            if where in typed_paths:
                continue
            typed_paths.add(where)
            lines.append(f"argument '{where}' must be {describe_expected(node, schema)}; got {got}")
        else:
            msg = str(err["msg"])
            msg = msg[:1].lower() + msg[1:]
            lines.append(f"argument '{where}': {msg}; got {got}")
    return list(dict.fromkeys(lines))


# --------------------------------------------------------------------------------------------
# FunctionTool


def _is_context_annotation(annotation: Any) -> bool:
    if annotation is RunContext:
        return True
    origin = get_origin(annotation)
    if origin is RunContext:
        return True
    if origin is Annotated:
        return _is_context_annotation(get_args(annotation)[0])
    return False


def _has_description(annotation: Any) -> bool:
    if get_origin(annotation) is not Annotated:
        return False
    return any(
        isinstance(m, FieldInfo) and m.description is not None for m in get_args(annotation)[1:]
    )


def _needs_alias(name: str) -> bool:
    return name.startswith("_") or name.startswith("model_") or hasattr(BaseModel, name)


def _is_async_callable(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    dunder_call = getattr(func, "__call__", None)  # noqa: B004 - a callable object's method
    return dunder_call is not None and inspect.iscoroutinefunction(dunder_call)


def _function_name(func: Callable[..., Any]) -> str | None:
    name = getattr(func, "__name__", None)
    if name is None and isinstance(func, functools.partial):
        name = getattr(func.func, "__name__", None)
    return name if isinstance(name, str) and name != "<lambda>" else None


@dataclass(frozen=True)
class FunctionSchema:
    """What a Python function's signature means as a tool; made by :func:`function_schema`.

    It holds what the model sees (:attr:`name`, :attr:`description`, :attr:`parameters`) and
    what calling the function needs: the pydantic model that validates the model's arguments
    and the mapping from its fields back to the function's parameters.
    """

    name: str
    """The tool name: the one given, else the function's ``__name__``."""
    description: str
    """The given description, else the docstring's free text."""
    parameters: dict[str, Any]
    """The JSON schema of the arguments, cleaned for the model (see :func:`clean_schema`)."""
    arguments_model: type[BaseModel]
    """Validates the model's arguments; one field per parameter except the context."""
    positional: tuple[tuple[str, str], ...] = ()
    """(parameter, field) pairs passed positionally (positional-only parameters)."""
    keyword: tuple[tuple[str, str], ...] = ()
    """(parameter, field) pairs passed by keyword."""
    context_param: tuple[str, bool] | None = None
    """The :class:`RunContext` parameter's name and whether it is positional-only."""
    is_async: bool = False
    """Whether calling the function returns an awaitable to await (async def or
    ``async __call__``)."""

    def call_arguments(
        self, arguments: BaseModel, ctx: RunContext[Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """The ``(args, kwargs)`` to call the function with, from validated ``arguments``."""
        args = [getattr(arguments, f) for _, f in self.positional]
        kwargs = {p: getattr(arguments, f) for p, f in self.keyword}
        if self.context_param is not None:
            ctx_name, ctx_positional = self.context_param
            if ctx_positional:
                args.insert(0, ctx)
            else:
                kwargs[ctx_name] = ctx
        return args, kwargs


def _check_callable(function: Callable[..., Any], name: str | None) -> str:
    """The tool's name, after refusing what cannot be a tool (generators, nameless callables)."""
    if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
        raise ToolDefinitionError(
            f"{function!r} is a generator; a tool must return its result (collect the "
            "items into a list or a string and return that)"
        )
    tool_name = name or _function_name(function)
    if not tool_name:
        raise ToolDefinitionError(
            f"cannot tell the name of {function!r}; pass one: tool(func, name='my_tool')"
        )
    return tool_name


def _signature(function: Callable[..., Any], tool_name: str) -> inspect.Signature:
    try:
        return inspect.signature(function, eval_str=True)
    except NameError as exc:
        raise ToolDefinitionError(
            f"cannot resolve the type hints of tool {tool_name!r}: {exc}. Define the types "
            "it uses at module level (not inside a function) so they can be resolved"
        ) from exc


def _field(
    index: int, param: inspect.Parameter, annotation: Any, doc: str | None
) -> tuple[str, tuple[Any, Any]]:
    """The pydantic field (name, (annotation, default)) for one parameter."""
    field_name = f"arg{index}" if _needs_alias(param.name) else param.name
    extra: dict[str, Any] = {}
    default = param.default
    field_has_description = isinstance(default, FieldInfo) and default.description
    if doc and not _has_description(annotation) and not field_has_description:
        extra["description"] = doc
    if field_name != param.name:
        extra["alias"] = param.name
    if extra:
        annotation = Annotated[annotation, Field(**extra)]
    return field_name, (annotation, ... if default is param.empty else default)


def function_schema(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
    docstring_style: DocstringStyle | None = None,
) -> FunctionSchema:
    """Read a function's signature and docstring into the :class:`FunctionSchema` of a tool.

    Each parameter becomes a property of :attr:`FunctionSchema.parameters`: required unless it
    has a default, described by ``Annotated[..., Field(description=...)]`` or else by the
    docstring (Google, NumPy or Sphinx style; ``docstring_style`` ``None`` detects it). A
    parameter annotated :class:`RunContext` is left out (the run context is passed to it).
    ``strict`` writes ``additionalProperties: false`` into the schema.

    Raises :class:`ToolDefinitionError` for what cannot be a tool: generators, ``*args`` /
    ``**kwargs``, two ``RunContext`` parameters, a callable without a name (pass ``name``),
    type hints that do not resolve, and parameter types with no JSON schema.
    """
    tool_name = _check_callable(function, name)
    doc_description, param_docs = parse_docstring(inspect.getdoc(function), docstring_style)
    fields: dict[str, Any] = {}
    positional: list[tuple[str, str]] = []
    keyword: list[tuple[str, str]] = []
    context_param: tuple[str, bool] | None = None
    for index, param in enumerate(_signature(function, tool_name).parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(
                f"tool {tool_name!r} takes *{param.name}: give each argument its own named, "
                "typed parameter so the model knows what to send"
            )
        is_positional = param.kind is param.POSITIONAL_ONLY
        annotation = Any if param.annotation is param.empty else param.annotation
        if _is_context_annotation(annotation):
            if context_param is not None:
                raise ToolDefinitionError(
                    f"tool {tool_name!r} has two RunContext parameters; keep one"
                )
            context_param = (param.name, is_positional)
            continue
        field_name, fields[field_name] = _field(
            index, param, annotation, param_docs.get(param.name)
        )
        (positional if is_positional else keyword).append((param.name, field_name))

    config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=False)
    try:
        model: type[BaseModel] = create_model(f"{tool_name}_arguments", __config__=config, **fields)
        raw_schema = model.model_json_schema()
    except Exception as exc:
        raise ToolDefinitionError(
            f"cannot build a JSON schema for tool {tool_name!r}: {exc}. Use JSON-friendly "
            "parameter types (str, int, float, bool, Literal, Enum, lists, dicts, pydantic "
            "models)"
        ) from exc
    return FunctionSchema(
        name=tool_name,
        description=description if description is not None else doc_description,
        parameters=clean_schema(raw_schema, strict=strict),
        arguments_model=model,
        positional=tuple(positional),
        keyword=tuple(keyword),
        context_param=context_param,
        is_async=_is_async_callable(function),
    )


class FunctionTool(Tool, Generic[P, R]):
    """A :class:`Tool` made from a Python function (sync or async); build it with :func:`tool`.

    Sync functions run in a worker thread (``anyio.to_thread.run_sync``) so they never block the
    event loop; async functions are awaited. A parameter annotated :class:`RunContext` receives
    the run context and is left out of the schema. Calling the FunctionTool object itself calls
    the original function, so a decorated function stays usable as a function. The schema comes
    from :func:`function_schema` (kept as :attr:`function_schema`).
    """

    def __init__(
        self,
        function: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
        timeout: float | None = None,
        max_retries: int = 2,
        strict: bool = False,
        docstring_style: DocstringStyle | None = None,
    ) -> None:
        self.function_schema = function_schema(
            function,
            name=name,
            description=description,
            strict=strict,
            docstring_style=docstring_style,
        )
        self.function: Callable[P, R] = function
        self.name = self.function_schema.name
        self.description = self.function_schema.description
        self.parameters = self.function_schema.parameters
        self.arguments_model: type[BaseModel] = self.function_schema.arguments_model
        self.requires_approval = requires_approval
        self.timeout = timeout
        self.max_retries = max_retries
        self.strict = strict

    @property
    def takes_context(self) -> bool:
        """Whether the function declares a ``RunContext`` parameter (only then can it report
        progress or read the run)."""
        return self.function_schema.context_param is not None

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        """Validate the model's arguments with the signature's pydantic model.

        Lax by default (``"3"`` is accepted for an int, as pydantic does); ``strict=True``
        tools validate JSON strictly (no coercion). Unknown arguments are rejected.
        """
        try:
            if self.strict:
                return self.arguments_model.model_validate_json(
                    json.dumps(arguments, ensure_ascii=False), strict=True
                )
            return self.arguments_model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentsError(validation_error_lines(exc, self.parameters)) from None

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        """Call the function with validated arguments (a dict is validated first)."""
        if not isinstance(arguments, self.arguments_model):
            arguments = self.validate(dict(arguments))
        args, kwargs = self.function_schema.call_arguments(arguments, ctx)
        function: Callable[..., Any] = self.function
        if self.function_schema.is_async:
            result = await function(*args, **kwargs)
        else:
            # abandon_on_cancel: a timeout or cancellation stops waiting for the thread, but
            # the thread itself runs on to completion (Python cannot interrupt it).
            result = await anyio.to_thread.run_sync(
                functools.partial(function, *args, **kwargs), abandon_on_cancel=True
            )
        if inspect.isawaitable(result):
            result = await result
        return result

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the original function directly (no validation, no thread)."""
        return self.function(*args, **kwargs)


class ToolOptions(TypedDict, total=False):
    """The keyword options of :func:`tool`, as :class:`FunctionTool` takes them."""

    name: str | None
    description: str | None
    requires_approval: bool
    timeout: float | None
    max_retries: int
    strict: bool
    docstring_style: DocstringStyle | None


@overload
def tool(func: Callable[P, R], /, **options: Unpack[ToolOptions]) -> FunctionTool[P, R]: ...


@overload
def tool(
    func: None = None, /, **options: Unpack[ToolOptions]
) -> Callable[[Callable[P, R]], FunctionTool[P, R]]: ...


def tool(
    func: Callable[P, R] | None = None, /, **options: Unpack[ToolOptions]
) -> FunctionTool[P, R] | Callable[[Callable[P, R]], FunctionTool[P, R]]:
    """Make a :class:`FunctionTool` from a function: ``@tool``, ``@tool(name=...)`` or
    ``tool(obj.method)``.

    Example::

        @tool
        def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
            '''Current weather in a city.

            Args:
                city: City name, e.g. "Paris".
                unit: Temperature unit.
            '''
            ...

    Args:
        func: The function (sync or async) or bound method to wrap.
        name: The tool's name; defaults to the function's name.
        description: Overrides the description taken from the docstring.
        requires_approval: Ask the executor's approval callback before each call.
        timeout: Seconds a call may take (``None``: the executor's default).
        max_retries: Failed calls in a row the model gets for this tool.
        strict: Validate without type coercion and say ``additionalProperties: false``.
        docstring_style: ``"google"``, ``"numpy"`` or ``"sphinx"``; detected when ``None``.
    """

    def wrap(f: Callable[P, R]) -> FunctionTool[P, R]:
        return FunctionTool(f, **options)

    if func is not None:
        return wrap(func)
    return wrap
