"""Tests for q3agent.qwen3.streaming: incremental parsing equals parsing the whole text."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q3agent.qwen3.messages import ToolCall, ToolCallError
from q3agent.qwen3.parsing import Parsed, parse, parse_ids
from q3agent.qwen3.streaming import (
    ContentDelta,
    ReasoningDelta,
    StreamEvent,
    StreamParser,
    ToolCallEvent,
)
from q3agent.qwen3.tokenizer import Qwen3Tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEATHER = '{"name": "get_weather", "arguments": {"location": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"timezone": "UTC"}}'

REALISTIC = [
    "<think>\nThe user wants the weather and the time.\nI will call both tools.\n</think>\n\n"
    f"Let me look that up.\n<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{TIME}\n"
    "</tool_call><|im_end|>",
    "<think>\n\n</think>\n\nSure! Here is a poem:\n\nRoses are red,\n  violets are blue.",
    "Thinking without an opening tag.\n</think>\n\nAnswer <|im_end|> in text.<|endoftext|>",
    f"<tool_call>{WEATHER}<tool_call>{{'name': 'get_time', 'arguments': {{'tz': 'UTC',}}}}",
    '<think>\nmaybe <tool_call>{"name": "x"}</tool_call>\n</think>\n\n<tool_call>\n[1, 2]\n',
    "<think>\nCut off while thinking about <tool_",
]


def normalise(parsed: Parsed) -> dict[str, Any]:
    """A parse result without the call ids (fresh per call)."""
    data = parsed.model_dump()
    for key in ("tool_calls", "errors"):
        for item in data[key]:
            item.pop("id")
    return data


def stream(pieces: list[str], *, thinking_started: bool = False) -> tuple[StreamParser, list[Any]]:
    parser = StreamParser(thinking_started=thinking_started)
    events: list[StreamEvent] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    events.extend(parser.close())
    return parser, events


def split_at(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def check_events_match(events: list[Any], parsed: Parsed) -> None:
    reclassified = any(isinstance(e, ReasoningDelta) and e.reclassified for e in events)
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    if not reclassified:
        assert content == parsed.content
        assert reasoning == (parsed.reasoning or "")
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert [(type(c), c.index, c.raw) for c in calls] == [
        (type(c), c.index, c.raw) for c in parsed.calls
    ]


@pytest.mark.parametrize("text", REALISTIC)
def test_char_by_char_stream_equals_parse(text: str) -> None:
    parser, events = stream(list(text))
    parsed = parse(text)
    assert normalise(parser.result()) == normalise(parsed)
    check_events_match(events, parsed)


def test_token_by_token_stream_with_the_real_tokenizer_equals_parse() -> None:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

    tokenizer = Qwen3Tokenizer.offline()
    for text in REALISTIC:
        ids = tokenizer.encode_trusted(text)
        decoder = tokenizer.decoder()
        pieces = [decoder.push([i]) for i in ids] + [decoder.flush()]
        assert "".join(pieces) == text
        parser, events = stream(pieces)
        assert normalise(parser.result()) == normalise(parse(text))
        check_events_match(events, parse(text))


def test_call_event_arrives_as_soon_as_the_block_closes() -> None:
    parser = StreamParser()
    assert parser.feed("<tool_call>\n" + WEATHER + "\n</tool_") == []
    events = parser.feed("call>\nmore text")
    assert isinstance(events[0], ToolCallEvent)
    assert isinstance(events[0].call, ToolCall)
    assert events[0].call.name == "get_weather"
    assert events[1:] == [ContentDelta(0, "more text")]


def test_call_event_at_next_call_and_at_close() -> None:
    parser = StreamParser()
    parser.feed("<tool_call>" + WEATHER)
    first = parser.feed("<tool_call>")
    assert [e.call.name for e in first if isinstance(e, ToolCallEvent)] == ["get_weather"]
    parser.feed(TIME)
    last = parser.close()
    assert [e.call.name for e in last if isinstance(e, ToolCallEvent)] == ["get_time"]


def test_broken_call_is_streamed_as_an_error_event() -> None:
    _, events = stream(["<tool_call>\nnot json\n</tool_call>"])
    assert [type(e) for e in events] == [ToolCallEvent]
    assert isinstance(events[0].call, ToolCallError)


def test_partial_tags_are_held_back_not_shown() -> None:
    parser = StreamParser()
    assert parser.feed("<th") == []
    assert parser.feed("ink>\nStep one") == [ReasoningDelta(0, "Step one")]
    assert parser.feed(".\n</thi") == [ReasoningDelta(0, ".")]
    assert parser.feed("nk>\n\nThe answer <tool") == [ContentDelta(0, "The answer ")]
    assert parser.feed("_call>") == []


def test_content_streams_before_the_completion_ends() -> None:
    parser = StreamParser(thinking_started=True)
    assert parser.feed("Reasoning here.") == [ReasoningDelta(0, "Reasoning here.")]
    parser.feed("\n</think>\n\n")
    assert parser.feed("Hello") == [ContentDelta(0, "Hello")]
    assert parser.feed(" world") == [ContentDelta(0, " world")]


def test_lone_close_tag_restates_streamed_content_as_reasoning() -> None:
    parser = StreamParser()
    assert parser.feed("I think") == [ContentDelta(0, "I think")]
    events = parser.feed(" so.\n</think>\n\nYes.")
    assert events[0] == ContentDelta(0, " so.")
    assert events[1] == ReasoningDelta(0, "I think so.", reclassified=True)
    assert events[2] == ContentDelta(0, "Yes.")
    parser.close()
    assert parser.result().reasoning == "I think so."
    assert parser.result().content == "Yes."


def test_feed_after_close_and_result_before_close_are_errors() -> None:
    parser = StreamParser()
    with pytest.raises(RuntimeError, match="close"):
        parser.result()
    parser.close()
    with pytest.raises(RuntimeError, match="new parser"):
        parser.feed("x")


FRAGMENTS = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<|im_end|>",
    "<|endoftext|>",
    "\n",
    "\n\n",
    " ",
    "  ",
    WEATHER,
    "{'name': 'f', 'arguments': {'a': 1,}}",
    '{"name": "f", "arguments": [1]}',
    "{",
    "}",
    '"',
    "text",
    "<",
    "<t",
    "</tool",
    "<|im",
    "f(a=1)",
    '{"name": "f", "arguments": {"t": "',
    '"wrap </tool_call> it"',
    '\\"',
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(FRAGMENTS), max_size=20),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.booleans(),
)
def test_random_splits_of_fragment_text_equal_parse(
    fragments: list[str], cuts: list[int], thinking_started: bool
) -> None:
    text = "".join(fragments)
    parser, events = stream(split_at(text, cuts), thinking_started=thinking_started)
    parsed = parse(text, thinking_started=thinking_started)
    assert normalise(parser.result()) == normalise(parsed)
    check_events_match(events, parsed)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_random_splits_of_arbitrary_text_equal_parse(
    text: str, cuts: list[int], thinking_started: bool
) -> None:
    parser, events = stream(split_at(text, cuts), thinking_started=thinking_started)
    parsed = parse(text, thinking_started=thinking_started)
    assert normalise(parser.result()) == normalise(parsed)
    check_events_match(events, parsed)


def test_call_with_a_close_tag_in_a_string_streams_as_one_call() -> None:
    body = '{"name": "echo", "arguments": {"text": "wrap it in </tool_call> please"}}'
    text = f"<tool_call>\n{body}\n</tool_call>\nDone."
    parser, events = stream(list(text))
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert [c.arguments for c in calls if isinstance(c, ToolCall)] == [
        {"text": "wrap it in </tool_call> please"}
    ]
    assert parser.result().content == "Done."


def test_ids_fed_one_at_a_time_equal_parse_ids(tokenizer: Qwen3Tokenizer) -> None:
    for text in REALISTIC:
        ids = tokenizer.encode_trusted(text)
        parser = StreamParser(tokenizer=tokenizer)
        events: list[StreamEvent] = []
        for token in ids:
            events.extend(parser.feed_ids([token]))
        events.extend(parser.close())
        parsed = parse_ids(ids, tokenizer)
        assert normalise(parser.result()) == normalise(parsed)
        check_events_match(events, parsed)


def test_feeding_text_and_ids_to_one_parser_is_refused(tokenizer: Qwen3Tokenizer) -> None:
    parser = StreamParser(tokenizer=tokenizer)
    parser.feed("a")
    with pytest.raises(RuntimeError, match="one parser per kind"):
        parser.feed_ids([1])
    with pytest.raises(RuntimeError, match="tokenizer"):
        StreamParser().feed_ids([1])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.booleans()), max_size=20),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.booleans(),
)
def test_random_splits_of_mixed_ids_equal_parse_ids(
    fragments: list[tuple[str, bool]], cuts: list[int], thinking_started: bool
) -> None:
    """Fragments as control tokens (trusted) or as ordinary tokens (quoted), split anywhere."""
    tokenizer = Qwen3Tokenizer.offline()
    ids: list[int] = []
    for fragment, trusted in fragments:
        ids += tokenizer.encode_trusted(fragment) if trusted else tokenizer.encode(fragment)
    bounds = [0, *sorted(c % (len(ids) + 1) for c in cuts), len(ids)]
    parser = StreamParser(thinking_started=thinking_started, tokenizer=tokenizer)
    events: list[StreamEvent] = []
    for a, b in itertools.pairwise(bounds):
        events.extend(parser.feed_ids(ids[a:b]))
    events.extend(parser.close())
    parsed = parse_ids(ids, tokenizer, thinking_started=thinking_started)
    assert normalise(parser.result()) == normalise(parsed)
    check_events_match(events, parsed)
    plain = [f for f, trusted in fragments if not trusted]
    if all("<tool_call>" not in f for f, trusted in fragments if trusted):
        assert not parsed.has_tool_calls, plain  # no control id, no call


def test_events_carry_the_step_and_are_the_agent_event_types() -> None:
    import q3agent.events

    parser = StreamParser(step=4)
    events = parser.feed(f"<think>\nHm.\n</think>\n\nOk.<tool_call>\n{WEATHER}\n</tool_call>")
    events += parser.close()
    assert [type(e) for e in events] == [ReasoningDelta, ContentDelta, ToolCallEvent]
    assert {e.step for e in events} == {4}
    assert [e.kind for e in events] == ["reasoning_delta", "content_delta", "tool_call"]
    assert q3agent.events.ReasoningDelta is ReasoningDelta
    assert q3agent.events.ContentDelta is ContentDelta
    assert q3agent.events.ToolCallEvent is ToolCallEvent
