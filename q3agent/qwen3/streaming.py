"""Incremental parsing of a streamed Qwen3 completion into reasoning, content and call events.

:class:`StreamParser` takes text deltas as they arrive and emits :class:`ReasoningDelta`,
:class:`ContentDelta` and :class:`ToolCallEvent` (one per call, as soon as its block closes).
It holds back only what could still become a tag (a partial ``<think>``, ``</think>``,
``<tool_call>``, ``</tool_call>`` or end token at the end of the text seen so far) and the
newlines that the parsing rules may strip, so the total work is linear in the text length.

The same machine implements :func:`q3agent.qwen3.parsing.parse`, so after :meth:`close`,
:meth:`StreamParser.result` equals ``parse(full_text, thinking_started=...)`` (call ids are
fresh per call and differ). The concatenated reasoning deltas equal ``result().reasoning`` and
the concatenated content deltas equal ``result().content``, with one exception: when the
completion had no opening ``<think>`` but a later ``</think>`` shows that the prompt had opened
one (pass ``thinking_started=True`` to avoid this), the text streamed so far as content was
reasoning. The parser then emits one ``ReasoningDelta(reclassified=True)`` holding all of that
reasoning, and content starts over after the ``</think>``.

Text or ids. :meth:`StreamParser.feed` takes text (text-only servers: tags are recognised by
their characters). :meth:`StreamParser.feed_ids` takes the ids the model sampled (needs
``tokenizer=``): then only the control ids ``<think>``, ``</think>``, ``<tool_call>``,
``</tool_call>``, ``<|im_end|>`` and ``<|endoftext|>`` are tags, and ordinary tokens are text
even when they spell a tag, so a page the model quotes cannot become a call. Inside a JSON call
body, a tag (either kind) that falls inside a double-quoted string is part of the string.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal

from q3agent.qwen3.messages import ToolCall, ToolCallError
from q3agent.qwen3.parsing import (
    CALL_CLOSE,
    CALL_OPEN,
    END_TOKENS,
    CallItem,
    Parsed,
    parse_call_block,
)

if TYPE_CHECKING:
    from q3agent.qwen3.tokenizer import IncrementalDecoder, Qwen3Tokenizer

__all__ = ["ContentDelta", "ReasoningDelta", "StreamEvent", "StreamParser", "ToolCallEvent"]

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_ALL_MARKERS = (_THINK_OPEN, _THINK_CLOSE, CALL_OPEN, CALL_CLOSE, *END_TOKENS)
_NON_SPACE = re.compile(r"\S")
_PARTIAL_MARKERS = frozenset(m[:i] for m in _ALL_MARKERS for i in range(1, len(m)))
_STRING_BODY = re.compile(r'(?:[^"\\]+|\\.)*', re.DOTALL)


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """More of the model's thinking, in agent step ``step``.

    ``reclassified`` is ``True`` for the single event that restates, as reasoning, text that
    was already streamed as content (see the module docstring).
    """

    step: int
    text: str
    reclassified: bool = False
    kind: Literal["reasoning_delta"] = "reasoning_delta"


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """More of the model's visible answer text (outside reasoning and call blocks)."""

    step: int
    text: str
    kind: Literal["content_delta"] = "content_delta"


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """The model finished writing a tool call block: a call to run, or an error to answer."""

    step: int
    call: ToolCall | ToolCallError
    kind: Literal["tool_call"] = "tool_call"


StreamEvent = ReasoningDelta | ContentDelta | ToolCallEvent
"""Anything :class:`StreamParser` emits."""


class _State(Enum):
    START = "start"  # only whitespace seen so far; a <think> may still open the text
    REASONING = "reasoning"
    UNDECIDED = "undecided"  # content, unless a lone </think> shows it was reasoning
    CONTENT = "content"
    CALL = "call"


_STATE_MARKERS: dict[_State, tuple[str, ...]] = {
    _State.REASONING: (_THINK_CLOSE, *END_TOKENS),
    _State.UNDECIDED: (_THINK_CLOSE, CALL_OPEN, *END_TOKENS),
    _State.CONTENT: (CALL_OPEN, *END_TOKENS),
    _State.CALL: (CALL_CLOSE, CALL_OPEN, *END_TOKENS),
}


class _JsonStrings:
    """Whether a call body's JSON is inside a double-quoted string, fed piece by piece.

    Active only for bodies that start (after whitespace) like JSON (``{``, ``[`` or a code
    fence), and only until that first JSON value closes: a quote after it is stray text, not
    the start of a string. Linear in the body length.
    """

    __slots__ = ("active", "depth", "escaped", "in_string", "opened")

    def __init__(self) -> None:
        self.active: bool | None = None
        self.in_string = False
        self.escaped = False
        self.depth = 0
        self.opened = False

    def feed(self, text: str) -> None:
        pos, end = 0, len(text)
        if self.active is None:
            match = _NON_SPACE.search(text)
            if match is None:
                return
            self.active = text[match.start()] in "{[`"
            pos = match.start()
        if not self.active:
            return
        while pos < end:
            if self.escaped:
                self.escaped = False
                pos += 1
            elif self.in_string:
                body = _STRING_BODY.match(text, pos)
                pos = body.end() if body is not None else pos
                if pos >= end:
                    return
                if text[pos] == "\\":  # a backslash ending this piece escapes the next one
                    self.escaped = True
                else:
                    self.in_string = False
                pos += 1
            else:
                found = _JSON_SYNTAX.search(text, pos)
                if found is None:
                    return
                char, pos = found.group(), found.end()
                if char == '"':
                    self.in_string = True
                elif char in "{[":
                    self.depth += 1
                    self.opened = True
                else:
                    self.depth -= 1
                    if self.opened and self.depth <= 0:
                        self.active = False  # the value is complete: what follows is text
                        return


_JSON_SYNTAX = re.compile(r'["{}\[\]]')
"""What changes a JSON scan's state outside strings: a quote or a bracket."""


_STATE_PATTERNS = {
    state: re.compile("|".join(re.escape(m) for m in markers))
    for state, markers in _STATE_MARKERS.items()
}
"""One search per step finds the earliest tag the state recognises."""


class StreamParser:
    """Parse a Qwen3 completion delta by delta; see the module docstring for the guarantees.

    Use ``feed(delta)`` for each piece of text and ``close()`` at the end; both return the
    events the new text completed. ``result()`` gives the final :class:`Parsed` after
    ``close()``. Pass ``thinking_started=True`` when the prompt ended inside ``<think>``;
    ``events=False`` keeps no events (for callers that only want the result, like ``parse``).
    With ``tokenizer=`` the parser also takes ids (:meth:`feed_ids`); one parser takes either
    text or ids, not both. ``step`` is the agent step stamped on every event.

    The events are the agent's own (:mod:`q3agent.events` re-exports them), so an agent loop
    yields them as they come.
    """

    def __init__(
        self,
        *,
        thinking_started: bool = False,
        events: bool = True,
        tokenizer: Qwen3Tokenizer | None = None,
        step: int = 0,
    ) -> None:
        self._thinking_started = thinking_started
        self._step = step
        self._mode = ""  # "text" or "ids" once fed
        self._controls: dict[int, str] = {}
        self._decoder: IncrementalDecoder | None = None
        if tokenizer is not None:
            self._controls = {tokenizer.special_tokens[tag]: tag for tag in _ALL_MARKERS}
            self._decoder = tokenizer.decoder()
        self._record = events
        self._events: list[StreamEvent] = []
        self._state = _State.START
        self._buf = ""
        self._closed = False
        self._lead = ""  # whitespace held in START
        self._end_pending = ""  # an end token (+ whitespace) that is dropped if the text ends
        # reasoning
        self._has_reasoning = thinking_started
        self._reasoning_done = False
        self._reasoning: list[str] = []
        self._r_started = False
        self._r_newlines = ""
        self._undecided: list[str] = []
        # content
        self._content: list[str] = []
        self._seg_started = False
        self._seg_newlines = ""
        # calls
        self._body: list[str] = []
        self._in_string_opens: list[int] = []  # where in _body a <tool_call> sat inside a string
        self._strings = _JsonStrings()
        self._items: list[CallItem] = []

    # ------------------------------------------------------------------ public API

    def feed(self, delta: str) -> list[StreamEvent]:
        """Consume the next piece of the completion; return the events it completed."""
        if self._closed:
            raise RuntimeError("StreamParser.feed() after close(); create a new parser")
        self._set_mode("text")
        if not delta:
            return []
        if (
            "<" not in delta
            and not self._buf
            and not self._end_pending
            and self._state
            in (
                _State.REASONING,
                _State.CONTENT,
                _State.CALL,
            )
        ):
            self._text(delta)  # fast path: no marker can start in this delta
        else:
            self._buf += delta
            self._run(final=False)
        return self._take_events()

    @property
    def mode(self) -> str:
        """``"text"`` or ``"ids"`` once fed (see :meth:`feed` and :meth:`feed_ids`), else ``""``."""
        return self._mode

    def feed_ids(self, ids: Iterable[int]) -> list[StreamEvent]:
        """Consume the next sampled ids; control ids are tags, other ids are text."""
        if self._closed:
            raise RuntimeError("StreamParser.feed_ids() after close(); create a new parser")
        decoder = self._decoder
        if decoder is None:
            raise RuntimeError("StreamParser.feed_ids() needs StreamParser(tokenizer=...)")
        self._set_mode("ids")
        controls = self._controls
        run: list[int] = []
        for token in ids:
            tag = controls.get(token)
            if tag is None:
                run.append(token)
                continue
            if run:
                self._plain(decoder.push(run))
                run = []
            self._plain(decoder.flush())
            self._control(tag)
        if run:
            self._plain(decoder.push(run))
        return self._take_events()

    def close(self) -> list[StreamEvent]:
        """Mark the end of the completion; return the last events (open calls close here)."""
        if self._closed:
            return []
        self._closed = True
        if self._decoder is not None and self._mode == "ids":
            self._plain(self._decoder.flush())
        self._run(final=True)
        self._end_pending = ""  # end tokens at the very end are dropped
        if self._state is _State.START:
            self._state = _State.UNDECIDED
            self._text(self._lead)
            self._lead = ""
        if self._state is _State.CALL:
            self._finish_block(cut_off=True)
        return self._take_events()

    def result(self) -> Parsed:
        """The whole completion parsed; equal to :func:`~q3agent.qwen3.parsing.parse` of it."""
        if not self._closed:
            raise RuntimeError("StreamParser.result() needs close() first")
        reasoning_complete = not self._has_reasoning or self._reasoning_done
        return Parsed(
            reasoning="".join(self._reasoning) if self._has_reasoning else None,
            reasoning_complete=reasoning_complete,
            content="".join(self._content),
            tool_calls=[item for item in self._items if isinstance(item, ToolCall)],
            errors=[item for item in self._items if isinstance(item, ToolCallError)],
        )

    # ------------------------------------------------------------------ machinery

    def _set_mode(self, mode: str) -> None:
        if self._mode != mode:
            if self._mode:
                raise RuntimeError(
                    f"StreamParser was fed {self._mode} and now {mode}; use one parser per kind"
                )
            self._mode = mode

    def _plain(self, text: str) -> None:
        """Text that holds no tag (ids mode): whitespace rules at the start and after an end."""
        pos, end = 0, len(text)
        while pos < end:
            if self._end_pending or self._state is _State.START:
                match = _NON_SPACE.search(text, pos)
                stop = end if match is None else match.start()
                if self._end_pending:
                    self._end_pending += text[pos:stop]
                    if match is not None:
                        self._flush_end_pending()
                else:
                    self._lead += text[pos:stop]
                    if match is not None:
                        self._leave_start()
                pos = stop
            else:
                self._text(text[pos:])
                return

    def _control(self, tag: str) -> None:
        """A control id (ids mode): a tag where the state expects it, else its text."""
        if self._end_pending:
            if tag in END_TOKENS:
                self._end_pending += tag
                return
            self._flush_end_pending()
        if self._state is _State.START:
            if tag == _THINK_OPEN:
                self._open_reasoning()
                return
            self._leave_start()
        if tag in _STATE_MARKERS[self._state]:
            self._marker(tag)
        else:
            self._text(tag)

    def _open_reasoning(self) -> None:
        self._state = _State.REASONING
        self._has_reasoning = True
        self._lead = ""

    def _leave_start(self) -> None:
        lead, self._lead = self._lead, ""
        self._state = _State.REASONING if self._thinking_started else _State.UNDECIDED
        if lead:
            self._text(lead)

    def _take_events(self) -> list[StreamEvent]:
        events, self._events = self._events, []
        return events

    def _run(self, final: bool) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        while pos < end:
            if self._end_pending:
                pos, held = self._after_end_token(buf, pos, final)
                if held:
                    break
                continue
            if self._state is _State.START:
                pos, held = self._start(buf, pos, final)
                if held:
                    break
                continue
            found = _STATE_PATTERNS[self._state].search(buf, pos)
            if found is None:
                stop = end if final else self._hold_point(buf, pos)
                if stop > pos:
                    self._text(buf[pos:stop])
                pos = stop
                break
            best, marker = found.start(), found.group()
            if best > pos:
                self._text(buf[pos:best])
            pos = found.end()
            self._marker(marker)
        self._buf = buf[pos:]

    @staticmethod
    def _hold_point(buf: str, pos: int) -> int:
        """Where a possible partial marker starts at the end of ``buf`` (else ``len(buf)``)."""
        lt = buf.rfind("<", max(pos, len(buf) - 12))
        if lt == -1:
            return len(buf)
        tail = buf[lt:]
        if tail in _PARTIAL_MARKERS:
            return lt
        return len(buf)

    def _start(self, buf: str, pos: int, final: bool) -> tuple[int, bool]:
        match = _NON_SPACE.search(buf, pos)
        if match is None:
            self._lead += buf[pos:]
            return len(buf), False
        first = match.start()
        self._lead += buf[pos:first]
        if buf.startswith(_THINK_OPEN, first):
            self._open_reasoning()
            return first + len(_THINK_OPEN), False
        tail = buf[first:]
        if not final and len(tail) < len(_THINK_OPEN) and _THINK_OPEN.startswith(tail):
            return first, True
        self._leave_start()
        return first, False

    def _after_end_token(self, buf: str, pos: int, final: bool) -> tuple[int, bool]:
        match = _NON_SPACE.search(buf, pos)
        if match is None:
            self._end_pending += buf[pos:]
            return len(buf), False
        first = match.start()
        for token in END_TOKENS:
            if buf.startswith(token, first):
                self._end_pending += buf[pos : first + len(token)]
                return first + len(token), False
        tail = buf[first:]
        if not final and any(t.startswith(tail) and t != tail for t in END_TOKENS):
            self._end_pending += buf[pos:first]
            return first, True
        self._end_pending += buf[pos:first]
        self._flush_end_pending()
        return first, False

    def _flush_end_pending(self) -> None:
        pending, self._end_pending = self._end_pending, ""
        self._text(pending)

    def _marker(self, marker: str) -> None:
        if marker in END_TOKENS:
            self._end_pending = marker
            return
        state = self._state
        if state is _State.CALL and self._strings.in_string and marker in (CALL_OPEN, CALL_CLOSE):
            if marker == CALL_OPEN:
                self._in_string_opens.append(len(self._body))
            self._text(marker)  # a tag inside a JSON string is part of the string
            return
        if marker == _THINK_CLOSE:
            if state is _State.UNDECIDED:
                self._reclassify()
            self._reasoning_done = True
            self._r_newlines = ""
            self._state = _State.CONTENT
        elif marker == CALL_OPEN:
            self._undecided = []  # a call settles it: no reasoning after this point
            if state is _State.CALL:
                self._finish_block(cut_off=False)
            else:
                self._end_segment()
            self._state = _State.CALL
        elif marker == CALL_CLOSE:
            self._finish_block(cut_off=False)
            self._state = _State.CONTENT

    def _text(self, text: str) -> None:
        state = self._state
        if state is _State.REASONING:
            self._reasoning_text(text)
        elif state is _State.CALL:
            self._body.append(text)
            self._strings.feed(text)
        else:
            if state is _State.UNDECIDED:
                self._undecided.append(text)
            self._content_text(text)

    def _reasoning_text(self, text: str) -> None:
        if not self._r_started:
            text = text.lstrip("\n")
            if not text:
                return
            self._r_started = True
        body = text.rstrip("\n")
        if not body:
            self._r_newlines += text
            return
        piece = self._r_newlines + body if self._r_newlines else body
        self._r_newlines = text[len(body) :]
        self._reasoning.append(piece)
        if self._record:
            self._events.append(ReasoningDelta(self._step, piece))

    def _content_text(self, text: str) -> None:
        if not self._seg_started:
            text = text.lstrip("\n")
            if not text:
                return
            self._seg_started = True
            if self._content:
                self._seg_newlines = "\n"  # the separator between non-empty segments
        body = text.rstrip("\n")
        if not body:
            self._seg_newlines += text
            return
        piece = self._seg_newlines + body if self._seg_newlines else body
        self._seg_newlines = text[len(body) :]
        self._content.append(piece)
        if self._record:
            self._events.append(ContentDelta(self._step, piece))

    def _end_segment(self) -> None:
        self._seg_started = False
        self._seg_newlines = ""

    def _reclassify(self) -> None:
        """A lone ``</think>``: everything so far was reasoning the prompt had opened."""
        self._has_reasoning = True
        self._state = _State.REASONING
        raw, self._undecided = "".join(self._undecided), []
        self._content = []
        self._end_segment()
        reasoning = raw.strip("\n")
        self._reasoning = [reasoning] if reasoning else []
        self._r_started = bool(reasoning)
        if self._record and reasoning:
            self._events.append(ReasoningDelta(self._step, reasoning, reclassified=True))

    def _finish_block(self, cut_off: bool) -> None:
        pieces, self._body = self._body, []
        opens, self._in_string_opens = self._in_string_opens, []
        self._strings = _JsonStrings()
        bodies = ["".join(pieces)]
        if cut_off and opens:
            # The completion ended inside a string that swallowed a <tool_call>: the string
            # never closed, so each swallowed tag really began a new call. Every part is cut off.
            bounds = [-1, *opens, len(pieces)]
            bodies = ["".join(pieces[a + 1 : b]) for a, b in itertools.pairwise(bounds)]
        for body in bodies:
            for item in parse_call_block(body, len(self._items), cut_off=cut_off):
                self._items.append(item)
                if self._record:
                    self._events.append(ToolCallEvent(self._step, item))
