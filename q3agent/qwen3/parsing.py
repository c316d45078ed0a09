"""Reading a Qwen3 completion: reasoning, visible content and ``<tool_call>`` blocks.

:func:`parse` splits one completion into a :class:`Parsed`. The rules, in order:

1. **Reasoning.** With ``thinking_started=True`` (the prompt already ends in ``<think>``, as
   Qwen3-Thinking-2507's template does) the text starts inside the reasoning. Otherwise a
   ``<think>`` opening the text (after whitespace) starts it. Otherwise a ``</think>`` that comes
   before any ``<tool_call>`` is taken as the end of reasoning that the prompt opened (a
   Thinking-2507 model whose caller did not say so). Reasoning runs to the first ``</think>``;
   without one it is truncated (``reasoning_complete=False``) and there is no content and no
   call. The reasoning is ``.strip("\\n")``-ed, exactly as the official template re-renders it.
   Anything inside reasoning, ``<tool_call>`` included, is reasoning.
2. **Calls.** After the reasoning, every ``<tool_call>`` opens a call block that runs to
   ``</tool_call>``, to the next ``<tool_call>``, or to the end of the text. Each block becomes
   one :class:`ToolCall` or :class:`ToolCallError` (a block holding a JSON list gives one per
   element), numbered by ``index`` in order; no block is ever dropped.
3. **Content.** The text outside reasoning and outside call blocks, cut by the blocks into
   segments (before the first call, between calls, after the last). Each segment is
   ``.strip("\\n")``-ed (only newlines, which the template puts around ``</think>`` and every
   ``<tool_call>``; spaces and indentation are kept) and the non-empty segments are joined
   with ``"\\n"``. A completion without calls therefore has ``content == after.strip("\\n")``.
4. **End tokens.** ``<|im_end|>`` / ``<|endoftext|>`` at the end of the text (possibly several,
   with whitespace between) are dropped; elsewhere they are kept as text.

**Repair is cosmetic only.** The block parser accepts what real Qwen3 output contains and
fixes only what does not change meaning: quoting (single quotes, unquoted keys, a bare word
value, Python's ``True``/``False``/``None``), trailing commas, brackets left unbalanced at the
end of the JSON, missing newlines around it, a missing ``</tool_call>`` at the end of the
output, ``arguments`` given as a JSON string, ``parameters`` for ``arguments``, an OpenAI-style
``{"function": {...}}`` wrapper and a missing ``arguments`` (a no-argument call). It never fills
a missing value (``{"amount": }``), never truncates a string and never drops text (prose after
the JSON, or after the JSON of an ``arguments`` string): anything else becomes a
:class:`ToolCallError` holding the raw text, so the model is asked again rather than a tool
running with arguments the model never wrote. A block that ends the output while its JSON is
still open was cut off (max tokens) and is reported, not guessed.

**Strings are scanned, not searched.** Inside a call block whose body is JSON, a
``</tool_call>`` (or ``<tool_call>``) inside a double-quoted JSON string is part of the string
and does not end the block.

**Bounded work.** Repair is a single linear pass of our own (no backtracking repair library);
a call nested deeper than :data:`MAX_CALL_DEPTH` levels is an error item, so arguments no
tool could use never reach the tools or the step records. :func:`parse` never raises.

**Where structure comes from.** :func:`parse` reads text, where ``<tool_call>`` and the other
tags are recognised by their characters. That is right only for text-only servers. When a
runtime returns the ids the model sampled (``Generation.ids_exact``), use :func:`parse_ids`:
reasoning boundaries and calls then come from the control ids ``<think>`` (151667),
``</think>`` (151668), ``<tool_call>`` (151657), ``</tool_call>`` (151658) and the end ids,
and the same characters spelled as ordinary tokens (a web page the model quotes) are content.

The same state machine drives :class:`q3agent.qwen3.streaming.StreamParser`, so a streamed
completion and the whole text (or ids) parse to the same :class:`Parsed` (up to the fresh call
ids).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from q3agent.qwen3.messages import AssistantMessage, ToolCall, ToolCallError

if TYPE_CHECKING:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "END_TOKENS",
    "MAX_CALL_DEPTH",
    "CallItem",
    "Parsed",
    "join_content",
    "json_depth_exceeds",
    "parse",
    "parse_call_block",
    "parse_ids",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
END_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Special tokens a runtime may leave at the end of a completion; dropped there."""

MAX_CALL_DEPTH = 64
"""Deepest nesting of a call's JSON (the call object counts as one level); deeper is an error."""

CallItem = ToolCall | ToolCallError
"""One parsed call block item: a valid call or an error to send back to the model."""

_FORMAT_HINT = (
    'Write each call as <tool_call>\n{"name": "<function-name>", "arguments": {<args>}}\n'
    "</tool_call> with valid JSON."
)
_CALL_KEYS = frozenset({"name", "arguments", "parameters", "id", "type", "function"})
_DECODER = json.JSONDecoder(strict=False)  # a raw newline inside a string is kept, not refused
_NAME_RE = re.compile(r"""["']?name["']?\s{0,20}:\s{0,20}["']([^"'\n]{1,200})["']""")


class Parsed(BaseModel):
    """One Qwen3 completion split into reasoning, visible content and tool calls.

    ``reasoning`` is ``None`` when the completion had no think block (``""`` for an empty one);
    ``reasoning_complete`` is ``False`` only when the think block was never closed (the
    completion was cut off while thinking). ``tool_calls`` and ``errors`` together hold one
    item per call (see :attr:`calls` for both in order).
    """

    model_config = ConfigDict(frozen=True)

    reasoning: str | None = None
    reasoning_complete: bool = True
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    errors: list[ToolCallError] = Field(default_factory=list)

    @property
    def calls(self) -> list[CallItem]:
        """Valid calls and errors together, in the order the model wrote them (by ``index``)."""
        items: list[CallItem] = [*self.tool_calls, *self.errors]
        items.sort(key=lambda item: item.index)
        return items

    @property
    def has_tool_calls(self) -> bool:
        """Whether the model wrote any call block, valid or not (each needs a tool response)."""
        return bool(self.tool_calls or self.errors)

    def to_assistant_message(self) -> AssistantMessage:
        """The assistant message to store in a session (broken calls are not part of it)."""
        return AssistantMessage(
            content=self.content,
            reasoning_content=self.reasoning,
            tool_calls=list(self.tool_calls),
        )


def join_content(segments: list[str]) -> str:
    """Join content segments by the documented rule: strip newlines, drop empties, join "\\n"."""
    return "\n".join(s for s in (seg.strip("\n") for seg in segments) if s)


def parse(text: str, *, thinking_started: bool = False) -> Parsed:
    """Split a Qwen3 completion's text into reasoning, content and tool calls (never raises).

    For text-only servers: tags are recognised by their characters. Where the runtime returned
    the sampled ids, use :func:`parse_ids`. Pass ``thinking_started=True`` when the prompt
    already opened the think block (it ends with ``<think>\\n``), so the completion starts
    inside the reasoning. See the module docstring for the exact rules.
    """
    from q3agent.qwen3.streaming import StreamParser

    try:
        parser = StreamParser(thinking_started=thinking_started, events=False)
        parser.feed(text)
        parser.close()
        return parser.result()
    except Exception as exc:  # a parser bug must not stop the agent, nor hide a call
        return _failed(text, exc)


def parse_ids(
    token_ids: Iterable[int], tokenizer: Qwen3Tokenizer, *, thinking_started: bool = False
) -> Parsed:
    """Split a completion given as the ids the model sampled (never raises).

    Structure comes from control ids only: ``<think>``/``</think>``/``<tool_call>``/
    ``</tool_call>`` and the end ids are tags where the model emitted them as control tokens;
    the same characters made of ordinary tokens (a quoted web page, a document) are text.
    Otherwise the rules are those of :func:`parse`.
    """
    from q3agent.qwen3.streaming import StreamParser

    ids = list(token_ids)
    try:
        parser = StreamParser(thinking_started=thinking_started, events=False, tokenizer=tokenizer)
        parser.feed_ids(ids)
        parser.close()
        return parser.result()
    except Exception as exc:  # a parser bug must not stop the agent, nor hide a call
        return _failed(tokenizer.decode(ids), exc, tokenizer.tool_call_id in ids)


def _failed(text: str, exc: Exception, has_call: bool | None = None) -> Parsed:
    if not (CALL_OPEN in text if has_call is None else has_call):
        return Parsed(content=text)
    error = ToolCallError(
        raw=text[-2000:],
        error=f"the tool calls in this reply could not be read ({type(exc).__name__}). "
        f"{_FORMAT_HINT}",
    )
    return Parsed(content=text, errors=[error])


# --------------------------------------------------------------------------- call blocks


def parse_call_block(body: str, first_index: int = 0, *, cut_off: bool = False) -> list[CallItem]:
    """Parse the text between ``<tool_call>`` and ``</tool_call>`` into call items.

    Returns at least one item; items are numbered from ``first_index``. ``cut_off`` says the
    block ran to the end of the completion without ``</tool_call>``: JSON still open there is
    reported as cut off rather than repaired. Never raises.
    """
    raw = body.strip()
    try:
        items = _parse_block(raw, first_index, cut_off)
    except Exception as exc:  # a parser bug or a pathological input must not stop the agent
        items = [
            ToolCallError(
                raw=raw,
                error=f"could not read this tool call ({type(exc).__name__}). {_FORMAT_HINT}",
                name=_guess_name(raw),
                index=first_index,
            )
        ]
    return items


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` (dicts and lists) nests deeper than ``limit`` levels; iterative."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _error(raw: str, message: str, index: int, name: str | None = None) -> ToolCallError:
    return ToolCallError(
        raw=raw, error=message, name=name if name is not None else _guess_name(raw), index=index
    )


def _guess_name(raw: str) -> str | None:
    match = _NAME_RE.search(raw, 0, 2000)
    return match.group(1) if match else None


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _strip_fence(text: str) -> str:
    if text.startswith("```"):
        newline = text.find("\n")
        text = text[newline + 1 :] if newline >= 0 else text[3:]
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
        text = text.strip()
    return text


_CUT_OFF = (
    "the tool call was cut off before its JSON was complete (the output probably hit its "
    "token limit). Write the whole call again, and keep long arguments short."
)
_TOO_DEEP = (
    f"the tool call nests deeper than {MAX_CALL_DEPTH} levels, more than any tool accepts. "
    "Pass flatter arguments."
)


def _parse_block(raw: str, index: int, cut_off: bool) -> list[CallItem]:
    text = _strip_fence(raw)
    if not text:
        return [_error(raw, f"the <tool_call> block is empty. {_FORMAT_HINT}", index)]
    if text[0] not in "{[":
        return _parse_non_json(raw, text, index)
    try:
        value: Any = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        problem = str(exc) if isinstance(exc, ValueError) else "too deeply nested"
        repaired = _cosmetic_repair(text)
        if isinstance(repaired, _Unrepairable):
            if repaired.open_at_end and cut_off:
                return [_error(raw, _CUT_OFF, index)]
            why = repaired.why or problem
            return [_error(raw, f"the tool call is not valid JSON ({why}). {_FORMAT_HINT}", index)]
        value = repaired.value
    if json_depth_exceeds(value, MAX_CALL_DEPTH):
        return [_error(raw, _TOO_DEEP, index)]
    return _items_from_value(value, raw, index)


def _parse_non_json(raw: str, text: str, index: int) -> list[CallItem]:
    # A python-style call such as get_weather(city="Paris") inside the block.
    from q3agent.qwen3.pythonic import parse_pythonic

    items = parse_pythonic(text)
    if items:
        renumbered: list[CallItem] = []
        for offset, item in enumerate(items):
            renumbered.append(item.model_copy(update={"index": index + offset, "raw": raw}))
        return renumbered
    snippet = text[:60] + ("…" if len(text) > 60 else "")
    return [
        _error(
            raw,
            f"the <tool_call> block does not contain a JSON object (it starts with "
            f"{snippet!r}). {_FORMAT_HINT}",
            index,
        )
    ]


# --------------------------------------------------------------------------- cosmetic repair

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<dq>"(?:[^"\\]|\\.)*")
    | (?P<sq>'(?:[^'\\]|\\.)*')
    | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<word>[A-Za-z_$][\w$\-]*)
    | (?P<punct>[{}\[\],:])
    """,
    re.VERBOSE | re.DOTALL,
)
_LITERALS = {"true": "true", "false": "false", "null": "null", "True": "true"}
_LITERALS |= {"False": "false", "None": "null", "NaN": "NaN", "Infinity": "Infinity"}
_CLOSER = {"{": "}", "[": "]"}
_SQ_ESCAPE = re.compile(r"""\\'|\\.|\"""", re.DOTALL)


class _Repaired:
    """A cosmetic repair that parsed."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Unrepairable:
    """Why a repair was refused; ``open_at_end``: a string or bracket is still open at the end."""

    __slots__ = ("open_at_end", "why")

    def __init__(self, why: str, open_at_end: bool = False) -> None:
        self.why = why
        self.open_at_end = open_at_end


def _requote(single_quoted: str) -> str:
    """A single-quoted string as a double-quoted JSON string with the same characters."""

    def fix(match: re.Match[str]) -> str:
        found = match.group()
        return "'" if found == "\\'" else '\\"' if found == '"' else found

    return '"' + _SQ_ESCAPE.sub(fix, single_quoted[1:-1]) + '"'


def _cosmetic_repair(text: str) -> _Repaired | _Unrepairable:
    """Fix quoting, trailing commas and unbalanced end brackets; refuse anything else.

    One linear pass over the JSON-ish tokens: every string, number and word of the model's
    text is kept, in order, so the repaired value can differ only in punctuation. Prose after
    the value, a missing value or comma, and nesting deeper than :data:`MAX_CALL_DEPTH` are
    refused with the reason.
    """
    out: list[str] = []
    stack: list[str] = []
    pos, end = 0, len(text)
    done = False  # the top-level value has closed
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            if char in "\"'":
                return _Unrepairable("a string is never closed", open_at_end=True)
            if done:
                return _Unrepairable(f"text after the JSON: {text[pos : pos + 40]!r}")
            return _Unrepairable(f"unexpected {char!r} at character {pos}")
        kind, token = match.lastgroup, match.group()
        start, pos = pos, match.end()
        if kind == "space":
            continue
        if done:
            if token in "}]":
                continue  # an extra closing bracket after the value: punctuation only
            return _Unrepairable(f"text after the JSON: {text[start : start + 40]!r}")
        if kind == "punct":
            if token in "{[":
                stack.append(token)
                if len(stack) > MAX_CALL_DEPTH:
                    return _Unrepairable(f"nested deeper than {MAX_CALL_DEPTH} levels")
            elif token in "}]":
                if not stack or _CLOSER[stack[-1]] != token:
                    return _Unrepairable(f"a {token!r} at character {start} closes nothing open")
                if out and out[-1] == ",":
                    out.pop()  # trailing comma
                stack.pop()
                done = not stack
            out.append(token)
        elif kind == "sq":
            out.append(_requote(token))
        elif kind == "word":
            out.append(_LITERALS.get(token) or json.dumps(token))
        else:
            out.append(token)
        if not stack and not done:
            return _Unrepairable("the call is not a JSON object")
    if stack:
        if out and out[-1] in ",:":
            return _Unrepairable("a value is missing at the end", open_at_end=True)
        out.extend(_CLOSER[bracket] for bracket in reversed(stack))
        open_at_end = True
    else:
        open_at_end = False
    try:
        return _Repaired(_DECODER.decode(" ".join(out)))
    except (ValueError, RecursionError) as exc:
        why = "a value, comma or colon is missing" if isinstance(exc, ValueError) else ""
        return _Unrepairable(why or "too deeply nested", open_at_end=open_at_end)


# --------------------------------------------------------------------------- call objects


def _items_from_value(value: Any, raw: str, index: int) -> list[CallItem]:
    if isinstance(value, list):
        if not value:
            return [
                _error(raw, f"the <tool_call> block holds an empty list. {_FORMAT_HINT}", index)
            ]
        return [_call_from_object(item, raw, index + i) for i, item in enumerate(value)]
    return [_call_from_object(value, raw, index)]


def _call_from_object(obj: Any, raw: str, index: int) -> CallItem:
    if not isinstance(obj, dict):
        return _error(
            raw,
            f"a tool call must be a JSON object with 'name' and 'arguments', got "
            f"{_json_type(obj)}. {_FORMAT_HINT}",
            index,
        )
    function = obj.get("function")
    if isinstance(function, dict) and "name" not in obj:
        obj = function
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return _error(
            raw,
            f"the tool call has no function name (a string 'name' field is required). "
            f"{_FORMAT_HINT}",
            index,
        )
    name = name.strip()
    if "arguments" in obj:
        args: Any = obj["arguments"]
    elif "parameters" in obj:
        args = obj["parameters"]
    else:
        extra = sorted(str(k) for k in obj if k not in _CALL_KEYS)
        if extra:
            return _error(
                raw,
                f"the call to {name!r} has fields {extra} next to 'name'; put the function's "
                f'parameters inside "arguments": {{...}}.',
                index,
                name,
            )
        args = {}
    if args is None:
        args = {}
    if isinstance(args, str):
        decoded = _decode_arguments_string(args)
        if isinstance(decoded, str):
            return _error(
                raw,
                f"the arguments of {name!r} are a string that is not a JSON object "
                f"({decoded}): {args[:80]!r}. Give arguments as a JSON object.",
                index,
                name,
            )
        args = decoded
    if not isinstance(args, dict):
        return _error(
            raw,
            f"arguments must be a JSON object, got {_json_type(args)} (in the call to "
            f'{name!r}). Give each parameter by name: {{"param": value}}.',
            index,
            name,
        )
    return ToolCall(name=name, arguments=args, raw=raw, index=index)


def _decode_arguments_string(args: str) -> dict[str, Any] | str:
    """The object an ``arguments`` string holds, or why it holds none."""
    stripped = args.strip()
    if not stripped:
        return {}
    if not stripped.startswith("{"):
        return "it does not start with '{'"
    try:
        value = _DECODER.decode(stripped)
    except (ValueError, RecursionError):
        repaired = _cosmetic_repair(stripped)
        if isinstance(repaired, _Unrepairable):
            return repaired.why
        value = repaired.value
    if not isinstance(value, dict):
        return f"it holds {_json_type(value)}"
    if json_depth_exceeds(value, MAX_CALL_DEPTH):
        return f"nested deeper than {MAX_CALL_DEPTH} levels"
    return value
