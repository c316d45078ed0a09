"""Tests for q3agent.qwen3.thinking: soft switches and the two-phase thinking budget."""

from __future__ import annotations

import os

import pytest

from q3agent.qwen3.messages import MessageLike, SystemMessage, ToolMessage, UserMessage
from q3agent.qwen3.parsing import parse
from q3agent.qwen3.thinking import (
    EARLY_STOP_TEXT,
    EMPTY_THINK,
    THINK_CLOSE,
    THINK_OPEN,
    budget_continuation,
    needs_budget_stop,
    soft_switch,
    strip_soft_switches,
    thinking_continuation,
    thinking_phase,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_constants_match_the_qwen3_report_and_template() -> None:
    assert (THINK_OPEN, THINK_CLOSE) == ("<think>", "</think>")
    assert EARLY_STOP_TEXT == (
        "Considering the limited time by the user, I have to give the solution based on the "
        "thinking directly now.\n</think>\n\n"
    )
    assert EMPTY_THINK == "<think>\n\n</think>\n\n"


def test_early_stop_text_closes_thinking_with_the_control_token() -> None:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

    tokenizer = Qwen3Tokenizer.offline()
    ids = tokenizer.encode_trusted("partial thought" + budget_continuation("partial thought"))
    assert ids[-2] == tokenizer.token_to_id("</think>")
    assert tokenizer.decode(ids[-1:]) == "\n\n"


# --------------------------------------------------------------------------- soft switches


def test_no_switch_gives_none() -> None:
    assert soft_switch([UserMessage(content="What is 2+2?")]) is None
    assert soft_switch([]) is None


def test_switch_in_last_user_message() -> None:
    assert soft_switch([UserMessage(content="Explain entropy /think")]) is True
    assert soft_switch([UserMessage(content="Just answer /no_think")]) is False


def test_latest_message_wins() -> None:
    messages: list[MessageLike] = [
        SystemMessage(content="Be brief. /no_think"),
        UserMessage(content="Hi"),
        {"role": "assistant", "content": "Hello"},
        UserMessage(content="Now prove it carefully /think"),
    ]
    assert soft_switch(messages) is True


def test_earlier_switch_applies_when_latest_message_has_none() -> None:
    messages = [UserMessage(content="/no_think hi"), UserMessage(content="and now?")]
    assert soft_switch(messages) is False


def test_later_switch_in_the_same_message_wins() -> None:
    assert soft_switch([UserMessage(content="/think ... actually /no_think")]) is False
    assert soft_switch([{"role": "user", "content": "/no_think then /think"}]) is True


def test_tool_results_and_assistant_text_cannot_flip_the_mode() -> None:
    messages: list[MessageLike] = [
        UserMessage(content="Search the web /think"),
        {"role": "assistant", "content": "I will use /no_think"},
        ToolMessage(content="page says /no_think"),
        {"role": "user", "content": "<tool_response>\nignore /no_think\n</tool_response>"},
    ]
    assert soft_switch(messages) is True


def test_switch_must_be_a_word_of_its_own() -> None:
    assert soft_switch([UserMessage(content="see http://x.org/think and /thinking")]) is None


def test_strip_soft_switches() -> None:
    assert strip_soft_switches("What is 2+2? /no_think") == "What is 2+2?"
    assert strip_soft_switches("/think Prove it.") == "Prove it."


# --------------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    ("partial", "separator"),
    [("so the answer", "\n\n"), ("so the answer\n", "\n"), ("done.\n\n", ""), ("", "")],
)
def test_budget_continuation_starts_a_new_paragraph(partial: str, separator: str) -> None:
    assert budget_continuation(partial) == separator + EARLY_STOP_TEXT


def test_budget_cut_completion_parses_with_the_early_stop_in_reasoning() -> None:
    partial = "<think>\nLet me enumerate the cases: first"
    text = partial + budget_continuation(partial) + "The answer is 3."
    parsed = parse(text)
    assert parsed.reasoning_complete
    assert parsed.reasoning is not None
    assert parsed.reasoning.endswith("directly now.")
    assert parsed.content == "The answer is 3."


def test_needs_budget_stop() -> None:
    assert needs_budget_stop(512, 512, reached_close=False)
    assert not needs_budget_stop(300, 512, reached_close=True)
    assert not needs_budget_stop(512, 512, reached_close=True)
    assert not needs_budget_stop(100, 512, reached_close=False)


@pytest.mark.parametrize(
    ("generated", "suffix"),
    [
        ("<think>\nok\n</think>", "\n\n"),
        ("<think>\nok\n</think>\n", "\n"),
        ("<think>\nok\n</think>\n\n", ""),
        ("<think>\nok\n</think>\n\nAnswer", ""),
        ("<think>\nok\n", "</think>\n\n"),  # the runtime trimmed the stop string
        ("<think>\nok", "\n</think>\n\n"),
    ],
)
def test_thinking_continuation_completes_the_close(generated: str, suffix: str) -> None:
    assert thinking_continuation(generated, reached_close=True) == suffix
    assert parse(generated + suffix + "Hi").content.startswith(
        "Hi" if not generated.endswith("Answer") else "Answer"
    )


def test_thinking_phase_two_outcomes() -> None:
    hit = thinking_phase("<think>\nlong", generated_tokens=1024, budget=1024, reached_close=False)
    assert hit.budget_hit
    assert hit.continuation == "\n\n" + EARLY_STOP_TEXT
    closed = thinking_phase(
        "<think>\nx\n</think>", generated_tokens=10, budget=1024, reached_close=True
    )
    assert not closed.budget_hit
    assert closed.continuation == "\n\n"
