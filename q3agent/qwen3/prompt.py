"""Append-only token prompts for one Qwen3 conversation: what the agent loop sends each step.

Step k+1's prompt is step k's prompt, plus the ids the model generated, plus the ids of what
came back (tool results, a new user message), so a prefix cache (SGLang's RadixAttention, the
transformers runtime's KV reuse) never re-prefills history. New text is encoded with
:func:`q3agent.qwen3.chat_format.encode_segments`: tool results and user text stay plain text
even when they contain control-token strings.

Where the ids agree with :func:`~q3agent.qwen3.chat_format.render_ids` of the same messages:
everywhere, as long as the model's ids are the canonical tokenization of its text, except

* after a non-thinking step (``enable_thinking=False``) inside a tool-calling run, the builder
  keeps the empty ``<think>\\n\\n</think>\\n\\n`` block the generation prompt carried, while
  the template drops it from assistant turns that are no longer last;
* a generation that stopped at ``<|endoftext|>`` has that id dropped and the turn closed with
  ``<|im_end|>`` (dropping a trailing id keeps the cached prefix valid);
* the template's last-query rule: a new user query drops the thinking of earlier turns. There
  the builder re-renders the whole conversation and reports where the ids diverged
  (:attr:`PromptUpdate.diverged_at`); nothing else is ever re-tokenized.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from typing import overload

from q3agent.qwen3.chat_format import (
    Segment,
    ToolLike,
    encode_segments,
    generation_prompt_segments,
    is_tool_response_wrapper,
    render_segments,
    tool_results_segments,
)
from q3agent.qwen3.messages import (
    AssistantMessage,
    Message,
    MessageLike,
    SystemMessage,
    ToolMessage,
    UserMessage,
    to_message,
)
from q3agent.qwen3.tokenizer import Qwen3Tokenizer

__all__ = ["PromptBuilder", "PromptIds", "PromptStateError", "PromptUpdate"]


class PromptIds(Sequence[int]):
    """A read-only prompt: the first ``len`` ids of a builder's append-only id list.

    Handing one out costs nothing (no copy of the history), which keeps the agent loop's
    per-step CPU independent of the prompt's length. It stays valid because the builder only
    ever appends to the list it shares; anything else (a re-render, a switched generation
    prompt) starts a new list. It behaves as a tuple of ints for reading: it compares and
    hashes equal to the tuple of the same ids, slicing and ``+`` give tuples, and ``tuple()``
    or ``list()`` make a copy where one is needed (a runtime sending JSON to a server).
    """

    __slots__ = ("_ids", "_len")

    def __init__(self, ids: list[int], length: int | None = None) -> None:
        """View ``ids[:length]`` (all of ``ids`` by default); the caller only ever appends."""
        self._ids = ids
        self._len = len(ids) if length is None else length

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[int, ...]: ...
    def __getitem__(self, index: int | slice) -> int | tuple[int, ...]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            return tuple(self._ids[start:stop:step])
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("prompt index out of range")
        return self._ids[index]

    def __iter__(self) -> Iterator[int]:
        return islice(self._ids, self._len)  # appends made while iterating are not seen

    def __reversed__(self) -> Iterator[int]:
        return islice(reversed(self._ids), len(self._ids) - self._len, None)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PromptIds):
            if other._ids is self._ids:
                return other._len == self._len
            return self._len == other._len and self._ids[: self._len] == other._ids[: other._len]
        if isinstance(other, tuple):
            return self._len == len(other) and self.to_tuple() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.to_tuple())

    def __add__(self, other: tuple[int, ...] | PromptIds) -> tuple[int, ...]:
        if isinstance(other, PromptIds):
            return self.to_tuple() + other.to_tuple()
        if not isinstance(other, tuple):
            return NotImplemented
        return self.to_tuple() + other

    def __radd__(self, other: tuple[int, ...]) -> tuple[int, ...]:
        if not isinstance(other, tuple):
            return NotImplemented
        return other + self.to_tuple()

    def extends(self, other: PromptIds) -> bool:
        """Whether ``other`` is a prefix of this prompt, known without comparing ids: both
        come from the same builder list (appended to since ``other`` was handed out)."""
        return other._ids is self._ids and other._len <= self._len

    def to_tuple(self) -> tuple[int, ...]:
        """The ids as a tuple: one copy, for keeping the prompt beyond the conversation."""
        if self._len == len(self._ids):
            return tuple(self._ids)
        return tuple(self._ids[: self._len])

    def __repr__(self) -> str:
        return f"PromptIds(<{self._len} ids>)"


class PromptStateError(RuntimeError):
    """A builder method was called out of order (say, tool results before any generation)."""


@dataclass(frozen=True)
class PromptUpdate:
    """The prompt after :meth:`PromptBuilder.append_user`.

    ``diverged_at`` is None when the previous prompt (with the generated ids) is a prefix of
    ``ids``; otherwise it is the first index that differs, i.e. how much of a prefix cache
    stays valid.
    """

    ids: PromptIds
    diverged_at: int | None
    rerendered: bool


@dataclass
class _OpenTurn:
    """The assistant turn the last generation prompt opened."""

    body_start: int  # index just after "<|im_start|>assistant\n"
    content_ids: list[int] = field(default_factory=list)  # generated/appended ids so far
    message: AssistantMessage | None = None
    closed: bool = False  # ended with <|im_end|>
    finish_reason: str | None = None


class PromptBuilder:
    """One conversation as growing token ids, plus the typed messages they came from.

    Typical loop::

        builder = PromptBuilder(tokenizer, tools, system="You are helpful.")
        prompt = builder.start([UserMessage(content=task)], enable_thinking=True)
        while True:
            out = runtime.generate(prompt)
            builder.append_generation(out.ids, message=parsed_assistant_message)
            if not parsed.tool_calls:
                break
            prompt = builder.append_tool_results(results, enable_thinking=True)
    """

    def __init__(
        self,
        tokenizer: Qwen3Tokenizer,
        tools: Sequence[ToolLike] | None = None,
        *,
        system: str | None = None,
    ) -> None:
        """``tools`` are rendered into the system turn; ``system`` is used when the messages
        given to :meth:`start` have no system message of their own."""
        self._tok = tokenizer
        self._tools = list(tools) if tools else None
        self._system = system
        self._ids: list[int] = []  # only ever appended to: PromptIds share it (see ids)
        self._messages: list[Message] = []
        self._model_output: set[int] = set()  # message indices holding raw decoded output
        self._turn: _OpenTurn | None = None
        self._query_start = 0

    # -- views ---------------------------------------------------------------------------------

    @property
    def ids(self) -> PromptIds:
        """The current prompt (including any ids generated in the open assistant turn).

        A read-only view that later appends do not change, handed out without copying the
        history: reading the prompt every step (for the request, the caller) costs O(1).
        """
        return PromptIds(self._ids)

    @property
    def messages(self) -> tuple[Message, ...]:
        """The completed messages; the open assistant turn joins them once it is closed."""
        return tuple(self._messages)

    @property
    def awaiting_generation(self) -> bool:
        """True when the prompt ends in an open assistant turn the model should continue."""
        return self._turn is not None and not self._turn.closed

    def __len__(self) -> int:
        return len(self._ids)

    # -- building ------------------------------------------------------------------------------

    def start(self, messages: Sequence[MessageLike], *, enable_thinking: bool | None) -> PromptIds:
        """Render the history and the generation prompt; returns the prompt ids.

        Calling it again starts over with a new history.
        """
        history = [to_message(m) for m in messages]
        if self._system is not None and (not history or history[0].role != "system"):
            history.insert(0, SystemMessage(content=self._system))
        if not history:
            raise ValueError("start() needs at least one message (or a system prompt)")
        self._messages = history
        self._model_output = set()
        self._ids = []
        self._rerender(enable_thinking)
        return self.ids

    def append_generation(
        self,
        ids: Sequence[int],
        *,
        message: AssistantMessage | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """Add what the model generated in the open assistant turn.

        ``message`` is the parsed turn (reasoning, content, tool calls); pass it on the last
        call for the turn so that re-rendering after a new user query is exact. Without it the
        builder keeps the decoded text and re-encodes it as model output. The turn is closed
        by ``<|im_end|>`` in ``ids``, or by the builder when the next thing is appended.
        ``finish_reason`` is recorded for the caller (``"length"`` leaves a thinking turn
        open for :meth:`append_text`).
        """
        turn = self._open_turn("append_generation")
        new = list(ids)
        if new and new[-1] == self._tok.eos_id:
            new.pop()  # <|endoftext|> ends a document, not a turn; the turn gets <|im_end|>.
            stopped = True
        else:
            stopped = False
        self._extend_turn(turn, new)
        if stopped and not turn.closed:
            self._extend_turn(turn, [self._tok.im_end_id])
        if message is not None:
            turn.message = message
        turn.finish_reason = finish_reason

    def append_text(self, text: str, *, trusted: bool = False) -> PromptIds:
        """Append text to the open assistant turn (say, the thinking-budget early stop).

        With ``trusted=True`` control-token strings (``</think>``) become control tokens.
        Returns the full prompt ids to continue generating from.
        """
        turn = self._open_turn("append_text")
        ids = self._tok.encode_trusted(text) if trusted else self._tok.encode(text)
        self._extend_turn(turn, ids)
        return self.ids

    def append_ids(self, ids: Sequence[int]) -> PromptIds:
        """Append ids to the open assistant turn; returns the full prompt ids."""
        turn = self._open_turn("append_ids")
        self._extend_turn(turn, list(ids))
        return self.ids

    def append_tool_results(
        self, results: Sequence[ToolMessage | MessageLike], *, enable_thinking: bool | None
    ) -> PromptIds:
        """Close the assistant turn, add one user turn of ``<tool_response>`` blocks (one per
        result, in order) and the next generation prompt. Returns the full prompt ids."""
        if not results:
            raise ValueError("append_tool_results() needs at least one tool result")
        messages = [to_message(r) for r in results]
        wrong = [m.role for m in messages if not isinstance(m, ToolMessage)]
        if wrong:
            raise ValueError(f"append_tool_results() takes tool messages, got roles {wrong}")
        self._close_turn()
        segments = tool_results_segments([m.content for m in messages])
        self._messages.extend(messages)
        self._append(segments, enable_thinking)
        return self.ids

    def append_user(
        self, message: UserMessage | MessageLike | str, *, enable_thinking: bool | None
    ) -> PromptUpdate:
        """Close the assistant turn and add a user message plus the next generation prompt.

        A new query makes the template drop the thinking of the turns since the previous
        query; when the prompt holds any, the conversation is re-rendered and the divergence
        reported. Otherwise the user turn is appended.
        """
        user = to_message(UserMessage(content=message) if isinstance(message, str) else message)
        if not isinstance(user, UserMessage):
            raise ValueError(f"append_user() takes a user message, got role {user.role!r}")
        self._close_turn()
        before = self.ids
        self._messages.append(user)
        new_query = not is_tool_response_wrapper(user.content)
        thinking_ids = {self._tok.think_id, self._tok.think_end_id}
        if new_query and any(i in thinking_ids for i in before[self._query_start :]):
            self._rerender(enable_thinking)
            diverged = next(
                (i for i, (a, b) in enumerate(zip(before, self._ids, strict=False)) if a != b),
                None if len(self._ids) >= len(before) else len(self._ids),
            )
            return PromptUpdate(self.ids, diverged, rerendered=True)
        start = len(self._ids)
        user_turn = [
            _USER_TURN_HEAD,
            Segment(user.content, False),
            Segment("<|im_end|>\n", True),
        ]
        self._append(user_turn, enable_thinking)
        if new_query:
            self._query_start = start
        return PromptUpdate(self.ids, None, rerendered=False)

    def reopen_generation(self, *, enable_thinking: bool | None) -> PromptIds:
        """Replace the open generation prompt's thinking switch before anything was generated.

        The agent uses it to regenerate a draft answer with thinking: the ids keep everything up
        to ``<|im_start|>assistant\\n`` and only the empty think block comes or goes, so a
        prefix cache keeps the whole history. Returns the full prompt ids.
        """
        turn = self._open_turn("reopen_generation")
        if turn.content_ids:
            raise PromptStateError(
                "reopen_generation(): the model already generated in this turn; only an "
                "untouched generation prompt can be switched"
            )
        self._ids = self._ids[: turn.body_start]  # a new list: views handed out stay valid
        _head, *tail = generation_prompt_segments(enable_thinking)
        self._ids.extend(encode_segments(self._tok, tail))
        return self.ids

    # -- internals -----------------------------------------------------------------------------

    def _open_turn(self, method: str) -> _OpenTurn:
        if self._turn is None:
            raise PromptStateError(f"{method}() needs a prompt: call start() first")
        if self._turn.closed:
            raise PromptStateError(
                f"{method}(): the assistant turn already ended with <|im_end|>; append tool "
                "results or a user message to open the next one"
            )
        return self._turn

    def _extend_turn(self, turn: _OpenTurn, ids: list[int]) -> None:
        if turn.closed and ids:
            raise PromptStateError("the assistant turn already ended with <|im_end|>")
        im_end = self._tok.im_end_id
        if im_end in ids:
            ids = ids[: ids.index(im_end) + 1]  # nothing after the end of the turn
            turn.closed = True
        turn.content_ids.extend(ids)
        self._ids.extend(ids)

    def _close_turn(self) -> None:
        """End the open assistant turn with ``<|im_end|>\\n`` and record its message."""
        if self._turn is None:
            raise PromptStateError("call start() before appending to the conversation")
        turn = self._turn
        if not turn.content_ids:
            raise PromptStateError(
                "the assistant turn opened by the last prompt has no generated ids yet; call "
                "append_generation() with the model's output first"
            )
        message = turn.message
        if message is None:
            # No parsed message: keep the decoded turn (think block, content, inline tool
            # calls) as model output, which re-renders to the same control tokens.
            body = self._ids[turn.body_start :]
            if turn.closed:
                body = body[:-1]
            message = AssistantMessage(content=self._tok.decode(body))
            self._model_output.add(len(self._messages))
        if not turn.closed:
            self._ids.append(self._tok.im_end_id)
        self._ids.extend(encode_segments(self._tok, [Segment("\n", False)]))
        self._messages.append(message)
        self._turn = None

    def _append(self, segments: list[Segment], enable_thinking: bool | None) -> None:
        self._ids.extend(encode_segments(self._tok, segments))
        self._open_generation(enable_thinking)

    def _open_generation(self, enable_thinking: bool | None) -> None:
        head, *tail = generation_prompt_segments(enable_thinking)
        self._ids.extend(encode_segments(self._tok, [head]))
        self._turn = _OpenTurn(body_start=len(self._ids))
        self._ids.extend(encode_segments(self._tok, tail))

    def _rerender(self, enable_thinking: bool | None) -> None:
        """Replace the ids with a full render of the messages plus a generation prompt."""
        segments = render_segments(
            self._messages,
            self._tools,
            add_generation_prompt=False,
            model_output=self._model_output,
        )
        # Encode once, in two halves split at the last query's turn head: it starts with a
        # control token, so the halves concatenate to exactly the full encoding.
        cut = self._last_query_segment(segments)
        before = _encode_head(self._tok, segments[:cut])
        self._ids = before + encode_segments(self._tok, segments[cut:])
        self._query_start = len(before)
        self._open_generation(enable_thinking)

    def _last_query_segment(self, segments: Sequence[Segment]) -> int:
        """Index of the segment opening the last real user query's turn (0 when none)."""
        users = [i for i, m in enumerate(self._messages) if isinstance(m, UserMessage)]
        queries = [i for i in users if not is_tool_response_wrapper(self._messages[i].content)]
        if not queries:
            return 0
        ordinal = users.index(queries[-1])  # user turns are the only "<|im_start|>user\n"
        turn_heads = [j for j, seg in enumerate(segments) if seg == _USER_TURN_HEAD]
        return turn_heads[ordinal]


_USER_TURN_HEAD = Segment("<|im_start|>user\n", True)

_CACHED_HEAD_CHARS = 32_768
"""Conversation heads up to this many characters (the system turn with its tool list, which
every task of an agent starts with) are encoded once per process and remembered."""


def _encode_head(tokenizer: Qwen3Tokenizer, segments: Sequence[Segment]) -> list[int]:
    """:func:`encode_segments` of the part before the last query, remembered when short."""
    if sum(len(text) for text, _ in segments) > _CACHED_HEAD_CHARS:
        return encode_segments(tokenizer, segments)
    return list(_encode_head_cached(tokenizer, tuple(segments)))


@lru_cache(maxsize=64)
def _encode_head_cached(
    tokenizer: Qwen3Tokenizer, segments: tuple[Segment, ...]
) -> tuple[int, ...]:
    return tuple(encode_segments(tokenizer, segments))
