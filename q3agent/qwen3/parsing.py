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

The block parser accepts what real Qwen3 output contains: JSON with or without surrounding
newlines, ``arguments`` given as a JSON string, ``parameters`` instead of ``arguments``, an
OpenAI-style ``{"function": {...}}`` wrapper, a missing ``arguments`` (no-argument call), and
broken JSON (single quotes, trailing commas, unquoted keys, an extra or missing closing brace)
repaired by ``json_repair``. A repair is only accepted when the result has the call shape and
its name and argument keys occur in the text, so prose is never turned into a call. A block
that ends the text while its JSON is still open was cut off (max tokens) and is reported, not
guessed. :func:`parse` never raises.

The same state machine drives :class:`q3agent.qwen3.streaming.StreamParser`, so a streamed
completion and the whole text parse to the same :class:`Parsed` (up to the fresh call ids).
"""

from __future__ import annotations

import json
import re
from typing import Any

import json_repair
from pydantic import BaseModel, ConfigDict, Field

from q3agent.qwen3.messages import AssistantMessage, ToolCall, ToolCallError

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "END_TOKENS",
    "CallItem",
    "Parsed",
    "join_content",
    "parse",
    "parse_call_block",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
END_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Special tokens a runtime may leave at the end of a completion; dropped there."""

CallItem = ToolCall | ToolCallError
"""One parsed call block item: a valid call or an error to send back to the model."""

_FORMAT_HINT = (
    'Write each call as <tool_call>\n{"name": "<function-name>", "arguments": {<args>}}\n'
    "</tool_call> with valid JSON."
)
_CALL_KEYS = frozenset({"name", "arguments", "parameters", "id", "type", "function"})
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
    """Split a Qwen3 completion into reasoning, content and tool calls (never raises).

    Pass ``thinking_started=True`` when the prompt already opened the think block (it ends with
    ``<think>\\n``), so the completion starts inside the reasoning. See the module docstring
    for the exact rules.
    """
    from q3agent.qwen3.streaming import StreamParser

    try:
        parser = StreamParser(thinking_started=thinking_started, events=False)
        parser.feed(text)
        parser.close()
        return parser.result()
    except Exception as exc:  # a parser bug must not stop the agent, nor hide a call
        if CALL_OPEN not in text:
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


def _open_at_end(text: str) -> bool:
    """Whether JSON-ish text ends inside a string or with brackets still open (cut off)."""
    depth = 0
    in_string = False
    quote = ""
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                in_string = False
        elif ch in "\"'":
            in_string, quote = True, ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return in_string or depth > 0


def _parse_block(raw: str, index: int, cut_off: bool) -> list[CallItem]:
    text = _strip_fence(raw)
    if not text:
        return [_error(raw, f"the <tool_call> block is empty. {_FORMAT_HINT}", index)]
    if text[0] not in "{[":
        return _parse_non_json(raw, text, index)
    try:
        value: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:
        problem = str(exc) if isinstance(exc, ValueError) else "too deeply nested"
        if cut_off and _open_at_end(text):
            return [
                _error(
                    raw,
                    "the tool call was cut off before its JSON was complete (the output "
                    "probably hit its token limit). Write the whole call again, and keep "
                    "long arguments short.",
                    index,
                )
            ]
        return _parse_repaired(raw, text, index, problem)
    return _items_from_value(value, raw, index, text=None)


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


def _parse_repaired(raw: str, text: str, index: int, problem: str) -> list[CallItem]:
    failure = f"the tool call is not valid JSON ({problem}) and could not be repaired safely."
    try:
        value: Any = json_repair.loads(text)
    except Exception:
        return [_error(raw, f"{failure} {_FORMAT_HINT}", index)]
    if not isinstance(value, dict | list) or not value:
        return [_error(raw, f"{failure} {_FORMAT_HINT}", index)]
    items = _items_from_value(value, raw, index, text=text)
    for item in items:
        if isinstance(item, ToolCall) and not _plausible(item, text):
            return [_error(raw, f"{failure} {_FORMAT_HINT}", index)]
    return items


def _plausible(call: ToolCall, text: str) -> bool:
    """A repaired call is trusted only if its name and argument keys are in the model's text."""
    return call.name in text and all(str(key) in text for key in call.arguments)


def _items_from_value(value: Any, raw: str, index: int, text: str | None) -> list[CallItem]:
    if isinstance(value, list):
        if not value:
            return [
                _error(raw, f"the <tool_call> block holds an empty list. {_FORMAT_HINT}", index)
            ]
        return [_call_from_object(item, raw, index + i, text) for i, item in enumerate(value)]
    return [_call_from_object(value, raw, index, text)]


def _call_from_object(obj: Any, raw: str, index: int, text: str | None) -> CallItem:
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
    if text is not None and any(not isinstance(k, str) or k not in _CALL_KEYS for k in obj):
        # A repair that invented keys ('arguments" {"a' from a missing colon) is not trusted.
        unknown = [k for k in obj if k not in _CALL_KEYS]
        return _error(
            raw,
            f"the tool call is not valid JSON and repairing it gave unexpected keys {unknown}. "
            f"{_FORMAT_HINT}",
            index,
            name,
        )
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
        if decoded is None:
            return _error(
                raw,
                f"the arguments of {name!r} are a string that is not a JSON object: "
                f"{args[:80]!r}. Give arguments as a JSON object.",
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


def _decode_arguments_string(args: str) -> dict[str, Any] | None:
    stripped = args.strip()
    if not stripped:
        return {}
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        if not stripped.startswith("{"):
            return None
        try:
            value = json_repair.loads(stripped)
        except Exception:
            return None
        if not isinstance(value, dict) or not all(str(k) in stripped for k in value):
            return None
    return value if isinstance(value, dict) else None
