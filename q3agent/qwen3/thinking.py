"""Qwen3 thinking controls: the ``/think`` / ``/no_think`` soft switches and the thinking budget.

The budget follows the Qwen3 technical report: the reasoning gets at most ``budget`` tokens.
If it reaches them before ``</think>``, :data:`EARLY_STOP_TEXT` is appended (after a paragraph
break, see :func:`budget_continuation`) and the model answers from there, in one more request
whose prefix is cached; a reasoning that closes in time needs no second request
(:mod:`q3agent.serving.budget` runs the procedure). :func:`thinking_phase` and
:func:`thinking_continuation` serve callers that stop a first request at ``</think>``
themselves. Everything here is pure text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from q3agent.qwen3.messages import MessageLike

if TYPE_CHECKING:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

__all__ = [
    "EARLY_STOP_TEXT",
    "EMPTY_THINK",
    "THINK_CLOSE",
    "THINK_OPEN",
    "ThinkingPhase",
    "budget_continuation",
    "needs_budget_stop",
    "soft_switch",
    "strip_soft_switches",
    "thinking_continuation",
    "thinking_phase",
]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EARLY_STOP_TEXT = (
    "Considering the limited time by the user, I have to give the solution based on the "
    "thinking directly now.\n</think>\n\n"
)
"""The Qwen3 report's sentence that ends reasoning cut by the budget (closes the block)."""
EMPTY_THINK = "<think>\n\n</think>\n\n"
"""The empty think block the template appends when ``enable_thinking=False``."""

_SWITCH = re.compile(r"(?<![\w/])/(no_think|think)\b")
_SWITCH_WITH_SPACE = re.compile(r"[ \t]?(?<![\w/])/(?:no_think|think)\b")


def _role_and_content(message: MessageLike) -> tuple[str, str]:
    if isinstance(message, Mapping):
        role, content = message.get("role"), message.get("content")
    else:
        role, content = getattr(message, "role", None), getattr(message, "content", None)
    return (role if isinstance(role, str) else ""), (content if isinstance(content, str) else "")


def _is_tool_response(content: str) -> bool:
    stripped = content.strip()
    return stripped.startswith("<tool_response>") and stripped.endswith("</tool_response>")


def soft_switch(messages: Iterable[MessageLike]) -> bool | None:
    """The thinking mode the conversation asks for with Qwen3's soft switches.

    Returns ``True`` for ``/think``, ``False`` for ``/no_think``, ``None`` when no user or
    system message contains one. The most recent switch wins: messages are searched from the
    last backwards, and within a message the later switch in the text wins. Only user and
    system messages count (tool results and documents are untrusted and cannot flip the mode;
    user turns that only wrap ``<tool_response>`` are tool results too). A switch is a word of
    its own: ``/thinking`` or ``http://x/think`` are not switches.
    """
    for message in reversed(list(messages)):
        role, content = _role_and_content(message)
        if role not in ("user", "system") or not content or _is_tool_response(content):
            continue
        switches = _SWITCH.findall(content)
        if switches:
            return bool(switches[-1] == "think")
    return None


def strip_soft_switches(text: str) -> str:
    """``text`` without its ``/think`` / ``/no_think`` switches (for display, not prompts).

    The template sends switches to the model verbatim, so prompts keep them; this is for
    showing the user's words or using them as a search query.
    """
    return _SWITCH_WITH_SPACE.sub("", text).strip()


def budget_continuation(partial_thinking: str) -> str:
    """Text to append after reasoning that hit the thinking budget without ``</think>``.

    It is :data:`EARLY_STOP_TEXT`, which also closes the think block, after a paragraph break:
    the Qwen documentation's budget example prepends ``"\\n\\n"`` to the sentence, so the
    sentence starts its own paragraph rather than continuing the cut-off one. Newlines the
    partial reasoning already ends with count towards that break (the template strips the
    reasoning's newlines anyway, so no blank lines pile up).
    """
    if not partial_thinking or partial_thinking.endswith("\n\n"):
        separator = ""
    elif partial_thinking.endswith("\n"):
        separator = "\n"
    else:
        separator = "\n\n"
    return separator + EARLY_STOP_TEXT


def needs_budget_stop(generated_thinking_tokens: int, budget: int, reached_close: bool) -> bool:
    """Whether phase 1 ended because the budget ran out (so the early-stop text is needed).

    ``reached_close`` says the model wrote ``</think>`` (or the runtime stopped on it).
    """
    return not reached_close and generated_thinking_tokens >= budget


def thinking_continuation(generated: str, *, reached_close: bool) -> str:
    """What to append to a phase-1 completion so the prompt ends after ``</think>\\n\\n``.

    ``generated`` is the phase-1 text; ``reached_close`` says the model ended its reasoning
    itself (the runtime stopped on ``</think>``, whether or not it kept that stop string in
    the text). When it did not, the budget ran out and :func:`budget_continuation` applies.
    """
    if not reached_close:
        return budget_continuation(generated)
    close = generated.rfind(THINK_CLOSE)
    if close == -1:  # the runtime trimmed the stop string
        return ("" if generated.endswith("\n") else "\n") + THINK_CLOSE + "\n\n"
    after = generated[close + len(THINK_CLOSE) :]
    if after.strip("\n"):
        return ""  # the answer has already started
    return "\n\n"[len(after) :] if after in ("", "\n") else ""


@dataclass(frozen=True, slots=True)
class ThinkingPhase:
    """The outcome of phase 1 of a budgeted generation.

    ``continuation`` is the text to append to prompt + phase-1 completion before phase 2;
    ``budget_hit`` says the early-stop text was needed (record it in the step's reason).
    """

    continuation: str
    budget_hit: bool


def thinking_phase(
    generated: str, *, generated_tokens: int, budget: int, reached_close: bool
) -> ThinkingPhase:
    """Decide phase 2 of a budgeted generation from phase 1's text and token count.

    A phase 1 that stopped short of the budget without ``</think>`` (the runtime ended for
    another reason, e.g. an end token) is treated like one that reached ``</think>``: the
    block is closed without the early-stop sentence.
    """
    hit = needs_budget_stop(generated_tokens, budget, reached_close)
    if hit:
        return ThinkingPhase(budget_continuation(generated), budget_hit=True)
    return ThinkingPhase(thinking_continuation(generated, reached_close=True), budget_hit=False)


ReasoningMode = Literal["disabled", "open", "required", "optional"]
"""How a completion of a prompt relates to thinking (see :func:`reasoning_mode`)."""


def reasoning_mode(
    prompt_ids: Sequence[int], tokenizer: Qwen3Tokenizer, enable_thinking: bool | None
) -> ReasoningMode:
    """Whether the completion of ``prompt_ids`` continues, starts, may start or skips thinking.

    Only the current assistant turn counts (after the last ``<|im_start|>``): a ``</think>``
    there means thinking is over (non-thinking mode's empty block, a closed budget) —
    ``disabled``; a bare ``<think>`` means the prompt opened it (a budget phase, a Thinking-2507
    generation prompt) — ``open``. Otherwise the model writes its own block or not, as
    ``enable_thinking`` says: ``True`` — ``required``, ``False`` — ``disabled``, unknown —
    ``optional``. Runtimes use it to count reasoning tokens and to shape tool-call grammars.
    """
    for tid in reversed(prompt_ids):
        if tid == tokenizer.think_end_id:
            return "disabled"
        if tid == tokenizer.think_id:
            return "open"
        if tid == tokenizer.im_start_id:
            break
    if enable_thinking is None:
        return "optional"
    return "required" if enable_thinking else "disabled"


def count_reasoning_tokens(
    completion_ids: Sequence[int], tokenizer: Qwen3Tokenizer, *, prompt_open: bool
) -> int:
    """Completion tokens inside a ``<think>`` block (the tag ids themselves not counted).

    ``prompt_open``: the prompt already opened ``<think>`` (``reasoning_mode(...) == "open"``),
    so every token up to ``</think>`` counts, or all of them when it never comes. Otherwise
    only tokens between a ``<think>`` the model writes and its ``</think>`` (or the end) count.
    """
    count = 0
    inside = prompt_open
    for tid in completion_ids:
        if tid == tokenizer.think_id:
            inside = True
        elif tid == tokenizer.think_end_id:
            if inside:
                return count
        elif inside:
            count += 1
    return count
