"""Reading Python-syntax function calls (BFCL's prompting format) with ``ast``, never ``eval``.

:func:`parse_pythonic` reads ``[func_a(x=1, y="s"), func_b(z=[1, {"k": -2.5}])]`` and returns
one item per call, in source order: a :class:`ToolCall` (``raw`` = the call's source text) or a
:class:`ToolCallError` for a call it cannot accept (positional arguments, ``**kwargs``, or an
argument value that is not a literal, such as a variable or a nested call). Only literals are
read: strings, numbers (with a sign), ``True``/``False``/``None``, and lists, tuples and sets
(all become lists) and dicts of literals.

Where the calls are looked for, in order: reasoning is removed first (as
:func:`~q3agent.qwen3.parsing.parse` does; truncated reasoning gives no calls); code fences
(```` ```python ... ``` ````) are read if present; then the whole text, as one expression (a
call, or a list/tuple of calls) or as lines that are each a call; finally every bracketed
call list in the text (``[f(a=1)] and then [g(b=2)]``: calls wrapped in prose, several lists
with prose between them), in order. Text that yields no call, prose for example, gives an
empty list. Arguments nested deeper than :data:`~q3agent.qwen3.parsing.MAX_CALL_DEPTH`
levels are an error item. The work is bounded: brackets are matched in one linear pass and at
most a fixed number of candidate lists are compiled. Never raises.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from q3agent.qwen3.messages import ToolCall, ToolCallError
from q3agent.qwen3.parsing import MAX_CALL_DEPTH, json_depth_exceeds

__all__ = ["parse_pythonic"]

_FENCE = "```"
_LIST_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_BRACKETS = re.compile(r"""\"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[\[\]]""")
_MAX_CANDIDATES = 64


class _NotLiteral(Exception):
    """An argument value that is not a literal; the message says which."""


def parse_pythonic(text: str, *, thinking_started: bool = False) -> list[ToolCall | ToolCallError]:
    """Read BFCL-style Python calls from a completion; see the module docstring. Never raises.

    Items are numbered by ``index`` in source order. ``thinking_started`` is as for
    :func:`~q3agent.qwen3.parsing.parse`.
    """
    try:
        return _parse(text, thinking_started)
    except Exception as exc:  # a pathological input must not stop the caller
        return [
            ToolCallError(
                raw=text[:2000],
                error=f"could not read the function calls ({type(exc).__name__}). Write them "
                'as [func(arg=value, ...)] with literal values, e.g. [get_weather(city="Paris")].',
            )
        ]


def _parse(text: str, thinking_started: bool) -> list[ToolCall | ToolCallError]:
    answer = _after_reasoning(text, thinking_started)
    if answer is None:
        return []
    sources = _fenced_blocks(answer) if _FENCE in answer else [answer]
    items: list[ToolCall | ToolCallError] = []
    for source in sources:
        for item in _calls_in(source.strip()):
            items.append(item.model_copy(update={"index": len(items)}))
    return items


def _after_reasoning(text: str, thinking_started: bool) -> str | None:
    from q3agent.qwen3.parsing import parse

    parsed = parse(text, thinking_started=thinking_started)
    if not parsed.reasoning_complete:
        return None
    if parsed.reasoning is None:
        return _strip_end_tokens(text)
    close = text.find("</think>")
    return _strip_end_tokens(text[close + len("</think>") :])


def _strip_end_tokens(text: str) -> str:
    stripped = text.rstrip()
    changed = True
    while changed:
        changed = False
        for token in ("<|im_end|>", "<|endoftext|>"):
            if stripped.endswith(token):
                stripped = stripped[: -len(token)].rstrip()
                changed = True
    return stripped


def _fenced_blocks(text: str) -> list[str]:
    blocks: list[str] = []
    pos = 0
    while True:
        start = text.find(_FENCE, pos)
        if start == -1:
            break
        line_end = text.find("\n", start)
        if line_end == -1:
            break
        end = text.find(_FENCE, line_end)
        if end == -1:
            blocks.append(text[line_end + 1 :])
            break
        blocks.append(text[line_end + 1 : end])
        pos = end + len(_FENCE)
    return blocks or [text]


def _calls_in(source: str) -> list[ToolCall | ToolCallError]:
    if not source:
        return []
    nodes = _call_nodes(source)
    if nodes is not None:
        return [_convert_call(node, source) for node in nodes]
    items: list[ToolCall | ToolCallError] = []
    for span in _call_lists(source):
        found = _call_nodes(span)
        if found is not None:
            items.extend(_convert_call(node, span) for node in found)
    return items


def _call_lists(source: str) -> list[str]:
    """Bracketed call lists in prose (``[f(...)] and [g(...)]``), outermost first, in order."""
    closing: dict[int, int] = {}
    opened: list[int] = []
    for match in _BRACKETS.finditer(source):
        bracket = match.group()
        if bracket == "[":
            opened.append(match.start())
        elif bracket == "]" and opened:
            closing[opened.pop()] = match.start()
    spans: list[str] = []
    after = 0
    tried = 0
    for match in _LIST_START.finditer(source):
        start = match.start()
        end = closing.get(start)
        if start < after or end is None:
            continue
        tried += 1
        if tried > _MAX_CANDIDATES:
            break
        span = source[start : end + 1]
        if _call_nodes(span) is not None:
            spans.append(span)
            after = end + 1
    return spans


def _call_nodes(source: str) -> list[ast.expr] | None:
    """The call expressions ``source`` consists of, or ``None`` if it is not calls."""
    try:
        tree: ast.AST = ast.parse(source, mode="eval")
        exprs = [tree.body] if isinstance(tree, ast.Expression) else []
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        try:
            module = ast.parse(source, mode="exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        if not module.body or not all(isinstance(s, ast.Expr) for s in module.body):
            return None
        exprs = [s.value for s in module.body if isinstance(s, ast.Expr)]
    nodes: list[ast.expr] = []
    for expr in exprs:
        if isinstance(expr, ast.Call):
            nodes.append(expr)
        elif isinstance(expr, ast.List | ast.Tuple):
            nodes.extend(expr.elts)
        else:
            return None
    if not any(isinstance(node, ast.Call) for node in nodes):
        return None
    return nodes


def _convert_call(node: ast.expr, source: str) -> ToolCall | ToolCallError:
    raw = ast.get_source_segment(source, node) or ""
    if not isinstance(node, ast.Call):
        return ToolCallError(
            raw=raw,
            error=f"{raw!r} is not a function call; write each item as func(arg=value).",
        )
    name = _dotted_name(node.func)
    if name is None:
        return ToolCallError(
            raw=raw,
            error="the called function must be a plain or dotted name, e.g. math.sqrt(x=4).",
        )
    if node.args:
        return ToolCallError(
            raw=raw,
            name=name,
            error=f"{name} was called with {len(node.args)} positional argument(s); name every "
            f"argument, e.g. {name}(param=value).",
        )
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            return ToolCallError(
                raw=raw,
                name=name,
                error=f"{name} uses **kwargs; write each argument as param=value.",
            )
        try:
            arguments[keyword.arg] = _literal(keyword.value, source)
        except _NotLiteral as exc:
            return ToolCallError(
                raw=raw,
                name=name,
                error=f"argument {keyword.arg!r} of {name} is {exc}, not a literal value; "
                "give the value itself (a string, number, boolean, None, list or dict).",
            )
    if json_depth_exceeds(arguments, MAX_CALL_DEPTH - 1):
        return ToolCallError(
            raw=raw,
            name=name,
            error=f"the arguments of {name} nest deeper than {MAX_CALL_DEPTH} levels, more than "
            "any tool accepts; pass flatter arguments.",
        )
    return ToolCall(name=name, arguments=arguments, raw=raw)


def _dotted_name(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _literal(node: ast.expr, source: str) -> Any:
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise _NotLiteral(f"a {type(value).__name__} constant")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _literal(node.operand, source)
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
        raise _NotLiteral("a signed non-number")
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_literal(element, source) for element in node.elts]
    if isinstance(node, ast.Dict):
        result: dict[Any, Any] = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                raise _NotLiteral("a dict with ** unpacking")
            key = _literal(key_node, source)
            if isinstance(key, list | dict):
                raise _NotLiteral("a dict with a list, tuple or dict key")
            result[key] = _literal(value_node, source)
        return result
    segment = ast.get_source_segment(source, node) or type(node).__name__
    if isinstance(node, ast.Name):
        raise _NotLiteral(f"the variable {segment!r}")
    if isinstance(node, ast.Call):
        raise _NotLiteral(f"the call {segment!r}")
    raise _NotLiteral(f"the expression {segment!r}")
