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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from q3agent.qwen3.messages import ToolCall, ToolCallError
from q3agent.qwen3.parsing import (
    CALL_CLOSE,
    CALL_OPEN,
    END_TOKENS,
    CallItem,
    Parsed,
    parse_call_block,
)

__all__ = ["ContentDelta", "ReasoningDelta", "StreamEvent", "StreamParser", "ToolCallEvent"]

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_ALL_MARKERS = (_THINK_OPEN, _THINK_CLOSE, CALL_OPEN, CALL_CLOSE, *END_TOKENS)
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """New reasoning text.

    ``reclassified`` is ``True`` for the single event that restates, as reasoning, text that
    was already streamed as content (see the module docstring).
    """

    text: str
    reclassified: bool = False


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """New visible answer text (outside reasoning and outside call blocks)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """A call block has closed: a call to run, or an error to answer."""

    call: ToolCall | ToolCallError


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


class StreamParser:
    """Parse a Qwen3 completion delta by delta; see the module docstring for the guarantees.

    Use ``feed(delta)`` for each piece of text and ``close()`` at the end; both return the
    events the new text completed. ``result()`` gives the final :class:`Parsed` after
    ``close()``. Pass ``thinking_started=True`` when the prompt ended inside ``<think>``;
    ``events=False`` keeps no events (for callers that only want the result, like ``parse``).
    """

    def __init__(self, *, thinking_started: bool = False, events: bool = True) -> None:
        self._thinking_started = thinking_started
        self._record = events
        self._events: list[StreamEvent] = []
        self._state = _State.START
        self._buf = ""
        self._cache: dict[str, int] = {}
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
        self._items: list[CallItem] = []

    # ------------------------------------------------------------------ public API

    def feed(self, delta: str) -> list[StreamEvent]:
        """Consume the next piece of the completion; return the events it completed."""
        if self._closed:
            raise RuntimeError("StreamParser.feed() after close(); create a new parser")
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

    def close(self) -> list[StreamEvent]:
        """Mark the end of the completion; return the last events (open calls close here)."""
        if self._closed:
            return []
        self._closed = True
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

    def _take_events(self) -> list[StreamEvent]:
        events, self._events = self._events, []
        return events

    def _find(self, marker: str, pos: int) -> int:
        cached = self._cache.get(marker)
        if cached is None or (cached != -1 and cached < pos):
            cached = self._buf.find(marker, pos)
            self._cache[marker] = cached
        return cached

    def _run(self, final: bool) -> None:
        buf = self._buf
        self._cache = {}
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
            best, marker = -1, ""
            for candidate in _STATE_MARKERS[self._state]:
                found = self._find(candidate, pos)
                if found != -1 and (best == -1 or found < best):
                    best, marker = found, candidate
            if best == -1:
                stop = end if final else self._hold_point(buf, pos)
                if stop > pos:
                    self._text(buf[pos:stop])
                pos = stop
                break
            if best > pos:
                self._text(buf[pos:best])
            pos = best + len(marker)
            self._marker(marker)
        self._buf = buf[pos:]

    @staticmethod
    def _hold_point(buf: str, pos: int) -> int:
        """Where a possible partial marker starts at the end of ``buf`` (else ``len(buf)``)."""
        lt = buf.rfind("<", max(pos, len(buf) - 12))
        if lt == -1:
            return len(buf)
        tail = buf[lt:]
        if any(m.startswith(tail) and m != tail for m in _ALL_MARKERS):
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
            self._state = _State.REASONING
            self._has_reasoning = True
            self._lead = ""
            return first + len(_THINK_OPEN), False
        tail = buf[first:]
        if not final and len(tail) < len(_THINK_OPEN) and _THINK_OPEN.startswith(tail):
            return first, True
        lead, self._lead = self._lead, ""
        if self._thinking_started:
            self._state = _State.REASONING
        else:
            self._state = _State.UNDECIDED
        if lead:
            self._text(lead)
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
            self._events.append(ReasoningDelta(piece))

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
            self._events.append(ContentDelta(piece))

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
            self._events.append(ReasoningDelta(reasoning, reclassified=True))

    def _finish_block(self, cut_off: bool) -> None:
        body, self._body = "".join(self._body), []
        for item in parse_call_block(body, len(self._items), cut_off=cut_off):
            self._items.append(item)
            if self._record:
                self._events.append(ToolCallEvent(item))
