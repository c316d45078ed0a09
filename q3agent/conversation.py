"""A session's conversation: its typed messages and the append-only prompt ids kept in step.

The agent loop (:mod:`q3agent.loop`) asks a :class:`Conversation` to open a task, add the
model's turns and the tools' answers, and to take a compacted history; the conversation keeps
track of whether its prompt still ends at a clean turn boundary and where it last diverged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from q3agent.memory.context_window import ContextWindow
from q3agent.memory.recorder import SessionRecorder
from q3agent.qwen3.messages import AssistantMessage, Message, ToolMessage, UserMessage
from q3agent.qwen3.parsing import Parsed
from q3agent.qwen3.prompt import PromptBuilder
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import StepRecord


@dataclass
class Conversation:
    """A session's history: typed messages plus the append-only prompt ids.

    ``needs_render`` is set when the ids no longer end at a clean turn boundary (a run that
    stopped at a limit, an error or a cancellation, or a changed tool set): the next task then
    re-renders the conversation from its messages and records where the prefix diverged.
    """

    builder: PromptBuilder
    messages: list[Message] = field(default_factory=list)
    needs_render: bool = True
    previous_ids: Sequence[int] = ()
    """The last prompt of a builder that was replaced (to report the divergence)."""
    recorder: SessionRecorder | None = None
    """Persists the conversation as it happens (``Agent.session(store=...)``)."""
    context: ContextWindow | None = None
    """Summarises older turns when the prompt nears the model's window."""
    compact_floor: int = 0
    """Prompt length below which no new compaction is tried (after one that fell short)."""
    diverged_at: int | None = None
    """Where the prompt last stopped extending the previous one, until a step reports it."""

    def add(self, message: Message) -> None:
        """Append a message (and persist it)."""
        self.messages.append(message)
        if self.recorder is not None:
            self.recorder.messages([message])

    def add_assistant(
        self, parsed: Parsed, token_ids: Sequence[int], finish_reason: str | None
    ) -> AssistantMessage:
        """Append the model's turn to the messages and its sampled ids to the prompt."""
        message = assistant_message(parsed)
        self.builder.append_generation(token_ids, message=message, finish_reason=finish_reason)
        self.add(message)
        return message

    def close_step(
        self, tool_messages: Sequence[ToolMessage], record: StepRecord | Mapping[str, Any]
    ) -> None:
        """Add a step's tool messages and, when persisting, close the step atomically."""
        self.messages.extend(tool_messages)
        if self.recorder is not None:
            data = record.to_json() if isinstance(record, StepRecord) else record
            self.recorder.step(data, tool_messages)

    def set_tools(self, tokenizer: Qwen3Tokenizer, tools: Sequence[dict[str, Any]]) -> None:
        """Use a new tool set from the next task on (the system turn changes: re-render)."""
        self.previous_ids = self.builder.ids or self.previous_ids
        self.builder = PromptBuilder(tokenizer, tools)
        self.needs_render = True

    def begin(self, enable_thinking: bool | None) -> None:
        """Open the task's (or, after a compaction, the next step's) generation turn.

        The prompt counts as unfinished until :meth:`end_with_answer`: a run that stops any
        other way leaves the next task to re-render. Where the prompt diverged is kept for
        :meth:`take_divergence`.
        """
        self.diverged_at = self.open_task(enable_thinking)
        self.needs_render = True

    def take_divergence(self) -> int | None:
        """Where the prompt diverged, once: the step that saw it reports it."""
        diverged, self.diverged_at = self.diverged_at, None
        return diverged

    def end_with_answer(self, record: StepRecord) -> None:
        """Close the answering step: the prompt now ends at a clean turn boundary."""
        self.close_step([], record)
        self.needs_render = False

    def compacted(self, messages: Sequence[Message], floor: int) -> None:
        """Take a summarised history; the prompt is re-rendered from it."""
        self.messages[:] = messages
        self.needs_render = True
        self.compact_floor = floor
        if self.recorder is not None:
            self.recorder.replace(self.messages)

    def open_task(self, enable_thinking: bool | None) -> int | None:
        """Bring the prompt up to ``messages`` and open the next generation turn.

        At a clean turn boundary the newest user message is appended; otherwise (first task,
        a resumed or interrupted conversation, new tools, a compaction) the conversation is
        re-rendered. Returns the index where the prompt stopped being an extension of the
        previous one, or ``None`` when it only grew.
        """
        before = self.builder.ids or self.previous_ids
        if self.needs_render or self.builder.awaiting_generation or not self.builder.ids:
            self.builder.start(self.messages, enable_thinking=enable_thinking)
            self.needs_render = False
            self.previous_ids = ()
            if not before:
                return None
            return _first_difference(before, self.builder.ids)
        user = self.messages[-1]
        assert isinstance(user, UserMessage)
        return self.builder.append_user(user, enable_thinking=enable_thinking).diverged_at


def _first_difference(before: Sequence[int], after: Sequence[int]) -> int | None:
    """Where ``after`` stops extending ``before``; ``None`` when it only grew."""
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), None
    )
    if first_diff is None:
        return None if len(after) >= len(before) else len(after)
    return first_diff


def assistant_message(parsed: Parsed) -> AssistantMessage:
    """The assistant turn as a message; unparseable call blocks stay visible in the content."""
    broken = "\n".join(e.raw for e in parsed.errors)
    content = f"{parsed.content}\n{broken}".strip("\n") if broken else parsed.content
    return AssistantMessage(
        content=content, reasoning_content=parsed.reasoning, tool_calls=list(parsed.tool_calls)
    )
