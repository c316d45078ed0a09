"""Tests for q3agent.qwen3.pythonic: BFCL-style Python call syntax read with ``ast``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q3agent.qwen3.messages import ToolCall, ToolCallError
from q3agent.qwen3.pythonic import parse_pythonic


def calls(text: str) -> list[tuple[str, dict[str, Any]]]:
    items = parse_pythonic(text)
    assert all(isinstance(item, ToolCall) for item in items), items
    return [(item.name, item.arguments) for item in items if isinstance(item, ToolCall)]


def test_bfcl_parallel_calls_with_nested_literals() -> None:
    text = '[func_a(x=1, y="s"), func_b(z=[1, {"k": -2.5}])]'
    assert calls(text) == [("func_a", {"x": 1, "y": "s"}), ("func_b", {"z": [1, {"k": -2.5}]})]


def test_raw_is_the_source_of_each_call_and_indexes_follow_order() -> None:
    items = parse_pythonic('[a(x=1), b(y="two")]')
    assert [item.raw for item in items] == ["a(x=1)", 'b(y="two")']
    assert [item.index for item in items] == [0, 1]


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("(1, 2)", [1, 2]),
        ("{3}", [3]),
        ("-7", -7),
        ("+1.5", 1.5),
        ("1e-3", 0.001),
        ("True", True),
        ("False", False),
        ("None", None),
        ("'single'", "single"),
        ('"double"', "double"),
        ("[[1, 2], {'a': (3,)}]", [[1, 2], {"a": [3]}]),
        ("{1: 'one'}", {1: "one"}),
    ],
)
def test_literal_values(source: str, value: Any) -> None:
    assert calls(f"[f(v={source})]") == [("f", {"v": value})]


def test_dotted_function_names() -> None:
    assert calls("[math.sqrt(x=4), a.b.c(d=1)]") == [("math.sqrt", {"x": 4}), ("a.b.c", {"d": 1})]


def test_single_call_without_brackets() -> None:
    assert calls('calculate_area(base=10, height=5, unit="cm")') == [
        ("calculate_area", {"base": 10, "height": 5, "unit": "cm"})
    ]


def test_call_without_arguments() -> None:
    assert calls("[get_time()]") == [("get_time", {})]


def test_code_fence() -> None:
    text = "Here are the calls:\n```python\n[get_weather(city='Paris')]\n```\nDone."
    assert calls(text) == [("get_weather", {"city": "Paris"})]


def test_calls_after_a_think_block() -> None:
    text = "<think>\nMaybe [wrong(x=1)] first?\n</think>\n\n[right(x=2)]<|im_end|>"
    assert calls(text) == [("right", {"x": 2})]


def test_truncated_reasoning_gives_no_calls() -> None:
    assert parse_pythonic("<think>\nI will call [f(x=1)]") == []


def test_calls_one_per_line() -> None:
    assert calls("f(a=1)\ng(b='x')") == [("f", {"a": 1}), ("g", {"b": "x"})]


def test_calls_wrapped_in_prose() -> None:
    assert calls("Sure, I will run [f(a=1)] now.") == [("f", {"a": 1})]


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 42.",
        "I cannot help with that request because no function fits.",
        "[1, 2, 3]",
        "",
        "x = 1",
        "hello",
    ],
)
def test_prose_gives_no_calls_and_no_error(text: str) -> None:
    assert parse_pythonic(text) == []


def test_positional_arguments_are_errors_not_dropped() -> None:
    items = parse_pythonic("[f(1, b=2), g(c=3)]")
    assert isinstance(items[0], ToolCallError)
    assert items[0].name == "f"
    assert items[0].raw == "f(1, b=2)"
    assert "positional" in items[0].error
    assert isinstance(items[1], ToolCall)
    assert [item.index for item in items] == [0, 1]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[f(a=x)]", "variable 'x'"),
        ("[f(a=g(1))]", "call 'g(1)'"),
        ("[f(a=1 + 2)]", "expression '1 + 2'"),
        ("[f(**kw)]", "**kwargs"),
        ("[f(a=1j)]", "complex"),
    ],
)
def test_non_literal_arguments_are_errors(text: str, fragment: str) -> None:
    items = parse_pythonic(text)
    assert len(items) == 1
    assert isinstance(items[0], ToolCallError)
    assert fragment in items[0].error
    assert items[0].name == "f"


def test_non_call_item_among_calls_is_an_error() -> None:
    items = parse_pythonic("[f(a=1), 3]")
    assert isinstance(items[0], ToolCall)
    assert isinstance(items[1], ToolCallError)


def test_never_uses_eval() -> None:
    # A call with side effects must come back as data, not run.
    items = parse_pythonic('[__import__(name="os")]')
    assert isinstance(items[0], ToolCall)
    assert items[0].name == "__import__"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    assert isinstance(parse_pythonic(text), list)


PIECES = ["[", "]", "(", ")", "f", "g.h", "=", "x", "1", "-2.5", '"s"', "'", ",", "{", "}", ":"]
PIECES += ["True", "None", "<think>", "</think>", "```", "\n", " ", "*", "**"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_never_raises_on_call_fragments(pieces: list[str]) -> None:
    items = parse_pythonic("".join(pieces))
    assert [item.index for item in items] == list(range(len(items)))


def test_several_call_lists_with_prose_between() -> None:
    items = parse_pythonic('[get_weather(location="Berlin")] and [search(query="restaurants")]')
    assert [(i.name, i.arguments) for i in items if isinstance(i, ToolCall)] == [
        ("get_weather", {"location": "Berlin"}),
        ("search", {"query": "restaurants"}),
    ]
    assert [i.index for i in items] == [0, 1]


def test_brackets_inside_strings_do_not_end_a_call_list() -> None:
    items = parse_pythonic('I will run [note(text="a ] b"), note(text="[c")] now, then [done()].')
    assert [i.arguments for i in items if isinstance(i, ToolCall)] == [
        {"text": "a ] b"},
        {"text": "[c"},
        {},
    ]


def test_deeply_nested_literal_arguments_are_an_error() -> None:
    items = parse_pythonic("[f(x=" + "[" * 150 + "]" * 150 + ")]")
    assert len(items) == 1
    assert isinstance(items[0], ToolCallError)
    assert "deeper than" in items[0].error


def test_more_calls_than_can_be_read_at_once_is_one_error() -> None:
    text = " and ".join(['[f(a="x")]'] * 3000)
    (error,) = parse_pythonic(text)
    assert isinstance(error, ToolCallError)
    assert "fewer or smaller calls" in error.error


# Prose before (and after) a call list may hold any quote characters: apostrophes, quoted
# words, quotations left open, typographic quotes, escaped quotes.
PROSE_BEFORE = [
    "I'll check that for you. ",
    "Let's see what's available: ",
    "It's the user's request, so ",
    'He said "call it" and so ',
    'He said "call it and so ',
    "The '90s were great. ",
    "Rock 'n' roll: ",
    "The students' grades: ",
    "She replied: 'sure, ",
    "\u2018Curly\u2019 quotes and \u201csmart\u201d ones: ",
    "Here's the call (it's a 'quick' one): ",
    "Don't worry, I won't forget:\n",
    "O'Brien's file:\n",
    "Using `f` with 'single' and \"double\" quotes:\n",
    "Escaped \\' and \\\" quotes: ",
    "Two lines.\nIt's on the second one, isn't it? ",
    "'",
    '"',
    "It's 5 o'clock; I'd say [this] fits: ",
    'The tool "get_weather(city)" looks right, so: ',
]
PROSE_AFTER = ["", " That's all I'll need.", ' Then I\'ll say "done".', "\nLet's wait: 'ok"]
CALL_LISTS = [
    ('[get_weather(city="Paris")]', [("get_weather", {"city": "Paris"})]),
    (
        "[get_weather(city='Paris'), search(query=\"it's raining\", tags=['a', \"b's\"])]",
        [
            ("get_weather", {"city": "Paris"}),
            ("search", {"query": "it's raining", "tags": ["a", "b's"]}),
        ],
    ),
]


@pytest.mark.parametrize("before", PROSE_BEFORE)
@pytest.mark.parametrize("after", PROSE_AFTER)
@pytest.mark.parametrize(("listed", "expected"), CALL_LISTS)
def test_call_lists_after_prose_with_quotes(
    before: str, after: str, listed: str, expected: list[tuple[str, dict[str, Any]]]
) -> None:
    assert calls(before + listed + after) == expected


@pytest.mark.parametrize("between", ["I'll also ", ' and "then" ', " and 'then ", "\nIt's: "])
def test_prose_with_quotes_between_two_call_lists(between: str) -> None:
    text = f"First [f(a='x')]{between}[g(b=\"it's\")] done."
    assert calls(text) == [("f", {"a": "x"}), ("g", {"b": "it's"})]


def test_a_long_essay_with_many_commas_before_the_list_is_not_too_many_elements() -> None:
    essay = "It's long, isn't it, " * 3000
    assert calls(essay + '[f(a="x")]') == [("f", {"a": "x"})]
