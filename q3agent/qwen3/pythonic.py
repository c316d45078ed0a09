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
with prose between them), in order. Prose is prose: quote characters in it (apostrophes,
quoted words, an unclosed quotation) never hide a list that follows, because quotes are read
as strings only inside a call list, and there only where a string can start (not in a word,
as in ``it's``). Text that yields no call, prose for example, gives an empty list; calls with
more than :data:`MAX_ELEMENTS` elements are one error item. Arguments
nested deeper than :data:`~q3agent.qwen3.parsing.MAX_CALL_DEPTH` levels are an error item.
The work is bounded: brackets are matched in one linear pass and at most a fixed number of
candidate lists are compiled. Never raises.
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
# a string runs to its closing quote or, unclosed, to the end of its line: linear, no retries
_STRINGS = re.compile(r"""\"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?""")
# inside a call list: a string starts only where Python allows one (not after a letter, as in
# "it's", except after a string prefix such as r or b); brackets outside strings
_IN_LIST = re.compile(
    r"""(?<![\w])[rRbBuUfF]{0,2}(?:"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)|[\[\]]"""
)
_LIST_STRINGS = re.compile(
    r"""(?<![\w])[rRbBuUfF]{0,2}(?:"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)"""
)
_CALL_LIKE = re.compile(r"[A-Za-z_][\w.]*\s*\(")
_MAX_CANDIDATES = 64
MAX_ELEMENTS = 4096
"""Most call elements (commas, parentheses, brackets, braces outside strings) read at once;
more is an error item (compiling them would take longer than a reply's parse should)."""


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

    if not thinking_started and "think>" not in text:
        return _strip_end_tokens(text)  # no reasoning: no need to parse the calls twice
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


def _elements(code: str) -> int:
    return sum(code.count(c) for c in ",([{")


def _too_many(source: str, elements: int) -> list[ToolCall | ToolCallError]:
    return [
        ToolCallError(
            raw=source[:2000],
            error=f"the reply holds {elements:,} or more call elements, more than the "
            f"{MAX_ELEMENTS:,} read at once; write fewer or smaller calls.",
        )
    ]


def _calls_in(source: str) -> list[ToolCall | ToolCallError]:
    if not source or _CALL_LIKE.search(source) is None:
        return []  # prose: nothing that could be a call
    whole = _elements(_STRINGS.sub('""', source))
    if whole <= MAX_ELEMENTS:  # the whole text as calls (it fails fast when it is prose)
        nodes = _call_nodes(source)
        if nodes is not None:
            text = _Source(source)
            return [_convert_call(node, text) for node in nodes]
    closing = _closing_brackets(source)
    if closing is None:
        return _too_many(source, max(whole, MAX_ELEMENTS + 1))
    spans = _outermost_lists(source, closing)
    if not spans and whole > MAX_ELEMENTS:
        return _too_many(source, whole)
    elements = _elements(_LIST_STRINGS.sub('""', "\n".join(span for _, span in spans)))
    if elements > MAX_ELEMENTS:
        return _too_many(source, elements)
    items: list[ToolCall | ToolCallError] = []
    sources: dict[str, _Source] = {}  # one _Source per text (the lists may share one)
    for span, found in _call_lists(source, spans, closing):
        text = sources.get(span) or sources.setdefault(span, _Source(span))
        items.extend(_convert_call(node, text) for node in found)
    return items


class _Source:
    """Source text with its lines encoded once, so each node's segment costs only its length.

    (``ast.get_source_segment`` splits the whole source again for every node.)
    """

    _LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: list[bytes] = [str(line).encode() for line in self._LINE.findall(text)]

    def segment(self, node: ast.AST) -> str:
        """The source of ``node`` (as ``ast.get_source_segment``), or ``""``."""
        end_line: int | None = getattr(node, "end_lineno", None)
        end_col: int | None = getattr(node, "end_col_offset", None)
        if end_line is None or end_col is None:
            return ""
        line: int = getattr(node, "lineno", 1) - 1
        col: int = getattr(node, "col_offset", 0)
        lines = self._lines
        if line == end_line - 1:
            return lines[line][col:end_col].decode(errors="replace")
        parts = [lines[line][col:], *lines[line + 1 : end_line - 1], lines[end_line - 1][:end_col]]
        return b"".join(parts).decode(errors="replace")


def _closing_brackets(source: str) -> dict[int, int] | None:
    """Where each ``[`` of a call list closes, matched in one linear pass over the text.

    Outside call lists the text is prose and only the next ``[name(`` matters: its quote
    characters are not strings. Inside a list, strings are skipped (brackets in them do not
    count) and every ``[`` opens a nested pair. ``None`` when call lists hold more than
    :data:`MAX_ELEMENTS` brackets (more than is read at once).
    """
    closing: dict[int, int] = {}
    brackets = 0
    pos, size = 0, len(source)
    while pos < size:
        start = _LIST_START.search(source, pos)
        if start is None:
            break
        opened = [start.start()]
        brackets += 1
        if brackets > MAX_ELEMENTS:
            return None
        pos = size  # unless the list closes, the rest of the text is inside it
        for token in _IN_LIST.finditer(source, start.start() + 1):
            char = source[token.start()]
            if char == "[":
                opened.append(token.start())
                brackets += 1
                if brackets > MAX_ELEMENTS:
                    return None
            elif char == "]":
                closing[opened.pop()] = token.start()
                if not opened:
                    pos = token.end()
                    break
    return closing


def _outermost_lists(source: str, closing: dict[int, int]) -> list[tuple[int, str]]:
    """The outermost closed ``[name(...) ...]`` spans of the text (``closing`` from
    :func:`_closing_brackets`), in order, with their start."""
    spans: list[tuple[int, str]] = []
    after = 0
    for match in _LIST_START.finditer(source):
        start, end = match.start(), closing.get(match.start())
        if start >= after and end is not None:
            spans.append((start, source[start : end + 1]))
            after = end + 1
    return spans


def _call_lists(
    source: str, spans: list[tuple[int, str]], closing: dict[int, int]
) -> list[tuple[str, list[ast.expr]]]:
    """Bracketed call lists in prose (``[f(...)] and [g(...)]``), outermost first, in order.

    ``spans`` are :func:`_outermost_lists` of ``source`` and ``closing`` its brackets. A
    candidate that does not compile is skipped, and the lists inside it are tried (at most
    ``_MAX_CANDIDATES`` failures), so the work stays linear in the text.
    """
    together = _each_call_list("\n".join(span for _, span in spans), len(spans))
    if together is not None:  # the usual case: every list compiles, in one compile
        return together
    lists: list[tuple[str, list[ast.expr]]] = []
    after = 0
    failed = 0
    for match in _LIST_START.finditer(source):
        start, end = match.start(), closing.get(match.start())
        if start < after or end is None:
            continue
        span = source[start : end + 1]
        nodes = _call_nodes(span)
        if nodes is None:
            failed += 1
            if failed > _MAX_CANDIDATES:
                break
            continue
        lists.append((span, nodes))
        after = end + 1
    return lists


def _each_call_list(joined: str, count: int) -> list[tuple[str, list[ast.expr]]] | None:
    """``count`` call lists joined by newlines, compiled at once; None unless all are calls."""
    if not count:
        return []
    try:
        module = ast.parse(joined, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if len(module.body) != count:
        return None
    lists: list[tuple[str, list[ast.expr]]] = []
    for statement in module.body:
        if not isinstance(statement, ast.Expr) or not isinstance(statement.value, ast.List):
            return None
        elements = statement.value.elts
        if not any(isinstance(node, ast.Call) for node in elements):
            return None
        lists.append((joined, elements))
    return lists


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


def _convert_call(node: ast.expr, source: _Source) -> ToolCall | ToolCallError:
    raw = source.segment(node)
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


def _literal(node: ast.expr, source: _Source) -> Any:
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
    segment = source.segment(node) or type(node).__name__
    if isinstance(node, ast.Name):
        raise _NotLiteral(f"the variable {segment!r}")
    if isinstance(node, ast.Call):
        raise _NotLiteral(f"the call {segment!r}")
    raise _NotLiteral(f"the expression {segment!r}")
