"""Keeping a conversation inside the model's context window, counted in real Qwen3 tokens.

Counts come from rendering the conversation with the Qwen3 chat template and encoding it with
the Qwen3 tokenizer: exact, not estimated. When the prompt reaches ``summarize_at`` of the
window (75% by default), older turns are replaced by a summary written by a non-thinking
model call. Turns are cut only between units: an assistant message with tool calls stays
together with its tool results. Oversized tool outputs are truncated with a note first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from q3agent.qwen3.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolMessage,
    UserMessage,
    dump_messages,
)

if TYPE_CHECKING:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

NATIVE_CONTEXT = 32_768
"""Qwen3's native context length in tokens."""
YARN_CONTEXT = 131_072
"""Qwen3's context length with YaRN rope scaling (factor 4)."""

Summarize = Callable[[list[Message]], Awaitable[str]]
"""Writes a summary of messages (the agent loop builds one on a non-thinking model call)."""

SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation below for your own later use. Keep the user's goal and "
    "constraints, decisions made, facts learned from tools (with exact numbers, names and "
    "identifiers), and what remains to be done. Be concise; write plain prose or bullets."
)
SUMMARY_PREFIX = "[Summary of earlier conversation]\n"


def context_window(*, yarn: bool = False) -> int:
    """The usable context length: 32K natively, 128K with YaRN enabled on the server."""
    return YARN_CONTEXT if yarn else NATIVE_CONTEXT


def summary_request(messages: Sequence[Message]) -> list[Message]:
    """The messages for a summarisation call (send with thinking disabled): the instructions
    and a plain transcript of ``messages``."""
    lines = []
    for message in messages:
        if isinstance(message, AssistantMessage):
            text = message.content
            for call in message.tool_calls:
                text += f"\n[called {call.name}({call.arguments_json()})]"
            lines.append(f"assistant: {text.strip()}")
        elif isinstance(message, ToolMessage):
            lines.append(f"tool {message.name or ''} result: {message.content}")
        else:
            lines.append(f"{message.role}: {message.content}")
    transcript = "\n\n".join(lines)
    return [
        SystemMessage(content=SUMMARY_INSTRUCTIONS),
        UserMessage(content=f"<conversation>\n{transcript}\n</conversation>"),
    ]


class ContextOverflowError(RuntimeError):
    """The conversation cannot be brought under the window (recent turns alone are too big)."""


@dataclass
class FitResult:
    """What :meth:`ContextWindow.fit` did."""

    messages: list[Message]
    tokens_before: int
    tokens_after: int
    summarized: int = 0
    """How many messages were replaced by the summary (0: none)."""
    truncated: int = 0
    """How many tool outputs were truncated."""


def _units(messages: Sequence[Message]) -> list[list[Message]]:
    """Groups that must stay together: each tool message joins the assistant turn before it."""
    units: list[list[Message]] = []
    for message in messages:
        if isinstance(message, ToolMessage) and units:
            units[-1].append(message)
        else:
            units.append([message])
    return units


class ContextWindow:
    """Counts prompt tokens exactly and compacts conversations that grow too long.

    Args:
        tokenizer: The Qwen3 tokenizer (default: built offline).
        max_tokens: The window (:data:`NATIVE_CONTEXT`, or :data:`YARN_CONTEXT` with YaRN).
        summarize_at: Share of the window at which older turns are summarised.
        keep_recent: Share of the window kept verbatim from the most recent turns.
        max_tool_output_tokens: Tool outputs longer than this are truncated with a note.
    """

    def __init__(
        self,
        tokenizer: Qwen3Tokenizer | None = None,
        *,
        max_tokens: int = NATIVE_CONTEXT,
        summarize_at: float = 0.75,
        keep_recent: float = 0.35,
        max_tool_output_tokens: int | None = None,
    ) -> None:
        if tokenizer is None:
            from q3agent.qwen3.tokenizer import Qwen3Tokenizer

            tokenizer = Qwen3Tokenizer.offline()
        if not 0 < keep_recent < summarize_at <= 1:
            raise ValueError("need 0 < keep_recent < summarize_at <= 1")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.summarize_at = summarize_at
        self.keep_recent = keep_recent
        self.max_tool_output_tokens = max_tool_output_tokens or max(256, max_tokens // 8)

    def count(self, messages: Sequence[Message], tools: Sequence[Any] | None = None) -> int:
        """Exact prompt length in tokens (chat template rendered, generation prompt included)."""
        from q3agent.qwen3.chat_format import render_ids

        if not messages:
            return 0
        return len(render_ids(self.tokenizer, messages, tools))

    @property
    def threshold(self) -> int:
        """Token count at which :meth:`fit` summarises."""
        return int(self.max_tokens * self.summarize_at)

    def needs_compaction(
        self, messages: Sequence[Message], tools: Sequence[Any] | None = None
    ) -> bool:
        """Whether the prompt has reached the summarisation threshold."""
        return self.count(messages, tools) >= self.threshold

    def truncate_tool_output(self, text: str, max_tokens: int | None = None) -> str:
        """``text`` cut to ``max_tokens`` (head and tail kept) with a note saying how much went."""
        limit = max_tokens or self.max_tool_output_tokens
        ids = self.tokenizer.encode(text)
        if len(ids) <= limit:
            return text
        head = self.tokenizer.decode(ids[: limit * 2 // 3])
        tail = self.tokenizer.decode(ids[-(limit // 3) :])
        dropped = len(ids) - limit * 2 // 3 - limit // 3
        note = (
            f"\n[… {dropped} of {len(ids)} tokens of this tool output were truncated to fit "
            "the context window; ask for a narrower result if the middle matters …]\n"
        )
        return head + note + tail

    def _truncate_tools(self, messages: Sequence[Message]) -> tuple[list[Message], int]:
        out: list[Message] = []
        truncated = 0
        for message in messages:
            if isinstance(message, ToolMessage):
                cut = self.truncate_tool_output(message.content)
                if cut != message.content:
                    truncated += 1
                    message = message.model_copy(update={"content": cut})
            out.append(message)
        return out, truncated

    def _unit_tokens(self, unit: Sequence[Message]) -> int:
        # Content tokens plus a small per-message allowance for the template's markup.
        import json

        return sum(self.tokenizer.count(json.dumps(m)) for m in dump_messages(unit))

    async def fit(
        self,
        messages: Sequence[Message],
        summarize: Summarize,
        tools: Sequence[Any] | None = None,
    ) -> FitResult:
        """Return messages that fit: tool outputs truncated, and at the threshold, older
        turns replaced by one summary message.

        Kept verbatim: the system message, the first user message (the task), and the most
        recent turns up to ``keep_recent`` of the window. Raises :class:`ContextOverflowError`
        when even that does not fit in the window.
        """
        current, truncated = self._truncate_tools(messages)
        before = self.count(messages, tools)
        tokens = self.count(current, tools) if truncated else before
        if tokens < self.threshold:
            return FitResult(current, before, tokens, 0, truncated)

        head: list[Message] = []
        rest = list(current)
        if rest and isinstance(rest[0], SystemMessage):
            head.append(rest.pop(0))
        if rest and isinstance(rest[0], UserMessage):
            head.append(rest.pop(0))
        units = _units(rest)
        budget = int(self.max_tokens * self.keep_recent)
        kept: list[list[Message]] = []
        used = 0
        for unit in reversed(units):
            size = self._unit_tokens(unit)
            if kept and used + size > budget:
                break
            kept.insert(0, unit)
            used += size
        old = [m for unit in units[: len(units) - len(kept)] for m in unit]
        if not old:
            if tokens >= self.max_tokens:
                raise ContextOverflowError(
                    f"the conversation needs {tokens} tokens but the window is "
                    f"{self.max_tokens}, and its most recent turn alone is too large to "
                    "summarise away. Lower max_tool_output_tokens, or enable YaRN "
                    "(max_tokens=YARN_CONTEXT) on a server that supports it."
                )
            return FitResult(current, before, tokens, 0, truncated)
        summary = (await summarize(old)).strip()
        compacted = [
            *head,
            UserMessage(content=SUMMARY_PREFIX + summary),
            *(m for unit in kept for m in unit),
        ]
        after = self.count(compacted, tools)
        if after >= self.max_tokens:
            raise ContextOverflowError(
                f"after summarising, the prompt still needs {after} tokens (window "
                f"{self.max_tokens}): the recent turns or the summary are too long. Lower "
                "keep_recent or max_tool_output_tokens."
            )
        return FitResult(compacted, before, after, len(old), truncated)
