"""The Qwen3 chat format: text byte-identical to the official template, and injection-safe ids.

:func:`render` produces exactly what the official Qwen3 chat template (April 2025 release)
produces through ``transformers``' ``apply_chat_template``. Internally the prompt is a list of
:class:`Segment` s, each marked trusted (template text such as ``<|im_start|>``) or untrusted
(message contents, reasoning, tool names, arguments and schemas). :func:`encode_segments` turns
control-token strings into control ids only in trusted segments, so a tool result or web page
containing ``<|im_start|>`` or ``</tool_response>`` stays plain text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from q3agent.qwen3.messages import AssistantMessage, MessageLike, ToolCall, to_message

if TYPE_CHECKING:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

__all__ = [
    "Segment",
    "ToolLike",
    "encode_segments",
    "generation_prompt_segments",
    "is_tool_response_wrapper",
    "render",
    "render_ids",
    "render_segments",
    "tojson",
    "tool_results_segments",
]

ToolLike = Mapping[str, Any] | Any
"""An OpenAI-style tool schema dict, or an object whose ``schema()`` returns one."""

_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


class Segment(NamedTuple):
    """A piece of prompt text; only ``trusted`` pieces may contain control tokens."""

    text: str
    trusted: bool


def tojson(value: Any) -> str:
    """JSON exactly as the template's ``tojson`` filter writes it in transformers.

    Non-ASCII kept, key order kept, default separators (``", "`` and ``": "``).
    """
    return json.dumps(value, ensure_ascii=False)


def is_tool_response_wrapper(content: str) -> bool:
    """Whether a user message is a ``<tool_response>`` wrapper, which the template skips when
    looking for the last real query."""
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


@dataclass(frozen=True)
class _Call:
    name: str
    arguments: str  # already the text the template writes


@dataclass(frozen=True)
class _Turn:
    role: str
    content: str
    reasoning: str | None = None
    calls: tuple[_Call, ...] = ()


def _call_from_raw(raw: Any) -> _Call:
    if isinstance(raw, ToolCall):
        return _Call(raw.name, raw.arguments_json())
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"tool call {raw!r} is neither a ToolCall nor an OpenAI-style dict "
            '({"type": "function", "function": {"name": ..., "arguments": ...}})'
        )
    fn = raw.get("function") or raw
    if isinstance(fn, ToolCall):
        return _Call(fn.name, fn.arguments_json())
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str):
        raise ValueError(f"tool call {raw!r} has no function name")
    arguments = fn.get("arguments", {})
    # The template writes string arguments verbatim and serialises anything else.
    return _Call(name, arguments if isinstance(arguments, str) else tojson(arguments))


def _turn(message: MessageLike) -> _Turn:
    if isinstance(message, Mapping) and message.get("role") == "assistant":
        data = dict(message)
        raw_calls = data.pop("tool_calls", None) or []
        reasoning = next((data[k] for k in _REASONING_KEYS if data.get(k) is not None), None)
        content = data.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str) or not (reasoning is None or isinstance(reasoning, str)):
            raise ValueError(
                f"assistant message {message!r} must have string 'content' and "
                "'reasoning_content' (or None)"
            )
        return _Turn("assistant", content, reasoning, tuple(_call_from_raw(c) for c in raw_calls))
    typed = to_message(message)
    if isinstance(typed, AssistantMessage):
        calls = tuple(_Call(c.name, c.arguments_json()) for c in typed.tool_calls)
        return _Turn("assistant", typed.content, typed.reasoning_content, calls)
    return _Turn(typed.role, typed.content)


def _tool_schema(tool: ToolLike) -> Any:
    if isinstance(tool, Mapping):
        return dict(tool)
    schema = getattr(tool, "schema", None)
    if callable(schema):
        return schema()
    raise ValueError(
        f"tool {tool!r} is not a JSON schema dict and has no schema() method; pass "
        '{"type": "function", "function": {"name": ..., "description": ..., "parameters": ...}}'
    )


def _last_query_index(turns: Sequence[_Turn]) -> int:
    for index in range(len(turns) - 1, -1, -1):
        turn = turns[index]
        if turn.role == "user" and not is_tool_response_wrapper(turn.content):
            return index
    return len(turns) - 1


def _split_inline_reasoning(content: str) -> tuple[str, str]:
    """The template's handling of ``<think>…</think>`` written inside content."""
    if "</think>" not in content:
        return content, ""
    visible = content.split("</think>")[-1].lstrip("\n")
    reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return visible, reasoning


def generation_prompt_segments(enable_thinking: bool | None) -> list[Segment]:
    """``<|im_start|>assistant\\n``, plus the empty think block when thinking is switched off."""
    segments = [Segment("<|im_start|>assistant\n", True)]
    if enable_thinking is False:
        segments.append(Segment("<think>\n\n</think>\n\n", True))
    return segments


def tool_results_segments(contents: Sequence[str]) -> list[Segment]:
    """One user turn holding consecutive tool results, as the template renders it."""
    segments = [Segment("<|im_start|>user", True)]
    for content in contents:
        segments.append(Segment("\n<tool_response>\n", True))
        segments.append(Segment(content, False))
        segments.append(Segment("\n</tool_response>", True))
    segments.append(Segment("<|im_end|>\n", True))
    return segments


def render_segments(
    messages: Sequence[MessageLike],
    tools: Sequence[ToolLike] | None = None,
    *,
    enable_thinking: bool | None = None,
    add_generation_prompt: bool = True,
    model_output: Container[int] = (),
) -> list[Segment]:
    """The prompt as trusted template text and untrusted data, in order.

    ``"".join(s.text for s in segments)`` is :func:`render`'s output. ``model_output`` lists
    indices of assistant messages whose content is raw decoded model output (control tokens
    written as strings, tool calls inline); their text is trusted so it re-encodes to the ids
    the model generated. Everything else a message carries is untrusted.
    """
    if not messages:
        raise ValueError("the Qwen3 chat template needs at least one message")
    turns = [_turn(m) for m in messages]
    out: list[Segment] = []

    def lit(text: str) -> None:
        out.append(Segment(text, True))

    def data(text: str, trusted: bool = False) -> None:
        if text:
            out.append(Segment(text, trusted))

    first = turns[0]
    if tools:
        lit("<|im_start|>system\n")
        if first.role == "system":
            data(first.content)
            lit("\n\n")
        lit(_TOOLS_HEADER)
        for tool in tools:
            lit("\n")
            data(tojson(_tool_schema(tool)))
        lit(_TOOLS_FOOTER)
    elif first.role == "system":
        lit("<|im_start|>system\n")
        data(first.content)
        lit("<|im_end|>\n")

    last_query = _last_query_index(turns)
    for index, turn in enumerate(turns):
        is_last = index == len(turns) - 1
        if turn.role == "user" or (turn.role == "system" and index > 0):
            lit(f"<|im_start|>{turn.role}\n")
            data(turn.content)
            lit("<|im_end|>\n")
        elif turn.role == "assistant":
            trusted = index in model_output
            content, reasoning = turn.content, ""
            if turn.reasoning is not None:
                reasoning = turn.reasoning
            else:
                content, reasoning = _split_inline_reasoning(turn.content)
            if index > last_query and (is_last or reasoning):
                lit("<|im_start|>assistant\n<think>\n")
                data(reasoning.strip("\n"), trusted)
                lit("\n</think>\n\n")
                data(content.lstrip("\n"), trusted)
            else:
                lit("<|im_start|>assistant\n")
                data(content, trusted)
            for call_index, call in enumerate(turn.calls):
                if call_index > 0 or content:
                    lit("\n")
                lit('<tool_call>\n{"name": "')
                data(call.name)
                lit('", "arguments": ')
                data(call.arguments)
                lit("}\n</tool_call>")
            lit("<|im_end|>\n")
        elif turn.role == "tool":
            if index == 0 or turns[index - 1].role != "tool":
                lit("<|im_start|>user")
            lit("\n<tool_response>\n")
            data(turn.content)
            lit("\n</tool_response>")
            if is_last or turns[index + 1].role != "tool":
                lit("<|im_end|>\n")
    if add_generation_prompt:
        out.extend(generation_prompt_segments(enable_thinking))
    return out


def render(
    messages: Sequence[MessageLike],
    tools: Sequence[ToolLike] | None = None,
    *,
    enable_thinking: bool | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text, byte-identical to the official Qwen3 chat template.

    ``enable_thinking=False`` appends the empty think block after the generation prompt, as
    ``apply_chat_template(..., enable_thinking=False)`` does; True and None render the same.
    Messages may be q3agent messages or OpenAI-style dicts; string tool-call arguments are
    written verbatim, dict arguments as ``tojson``.
    """
    segments = render_segments(
        messages,
        tools,
        enable_thinking=enable_thinking,
        add_generation_prompt=add_generation_prompt,
    )
    return "".join(s.text for s in segments)


@lru_cache(maxsize=8)
def _control_pattern(tokens: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so the leftmost match is also the longest, as the tokenizer matches.
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


_CACHED_TEXT = 48
"""Texts up to this length between control tokens (``user\n``, ``assistant\n``, ``\n\n``:
the template's own pieces, every step) are encoded once and remembered."""


@lru_cache(maxsize=4096)
def _encode_short(tokenizer: Qwen3Tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(text))


def encode_segments(tokenizer: Qwen3Tokenizer, segments: Sequence[Segment]) -> list[int]:
    """Token ids for ``segments``: control ids only where trusted text names them.

    Text between two control tokens is encoded as one string with the plain encoder, so the
    ids equal ``tokenizer.encode_trusted(text)`` whenever the untrusted text holds no
    control-token strings (segment boundaries never split a BPE word).
    """
    specials = tokenizer.special_tokens
    pattern = _control_pattern(frozenset(specials))
    ids: list[int] = []
    pending: list[str] = []

    def flush() -> None:
        text = "".join(pending)
        pending.clear()
        if len(text) <= _CACHED_TEXT:
            if text:
                ids.extend(_encode_short(tokenizer, text))
        else:
            ids.extend(tokenizer.encode(text))

    for text, trusted in segments:
        if not trusted:
            pending.append(text)
            continue
        position = 0
        for match in pattern.finditer(text):
            pending.append(text[position : match.start()])
            flush()
            ids.append(specials[match.group()])
            position = match.end()
        pending.append(text[position:])
    flush()
    return ids


def render_ids(
    tokenizer: Qwen3Tokenizer,
    messages: Sequence[MessageLike],
    tools: Sequence[ToolLike] | None = None,
    *,
    enable_thinking: bool | None = None,
    add_generation_prompt: bool = True,
    model_output: Container[int] = (),
) -> list[int]:
    """The prompt's token ids: :func:`render`'s text, with untrusted text kept plain."""
    segments = render_segments(
        messages,
        tools,
        enable_thinking=enable_thinking,
        add_generation_prompt=add_generation_prompt,
        model_output=model_output,
    )
    return encode_segments(tokenizer, segments)
