"""Context window: exact Qwen3 token counts, summarisation at 75%, tool calls kept whole."""

from __future__ import annotations

import json

import pytest

from q3agent.memory.context_window import (
    SUMMARY_PREFIX,
    ContextOverflowError,
    ContextWindow,
    summary_request,
)
from q3agent.qwen3.chat_format import render
from q3agent.qwen3.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from q3agent.qwen3.tokenizer import Qwen3Tokenizer


def _conversation(turns: int) -> list[Message]:
    messages: list[Message] = [
        SystemMessage(content="You are a careful research assistant."),
        UserMessage(content="Compare the populations of European capitals."),
    ]
    for i in range(turns):
        call = ToolCall(name="lookup", arguments={"city": f"city-{i}"}, id=f"call_{i}")
        messages.append(AssistantMessage(content=f"Looking up city {i}.", tool_calls=[call]))
        result = {"city": f"city-{i}", "population": 100_000 + i, "notes": "census data " * 20}
        messages.append(
            ToolMessage(content=json.dumps(result), tool_call_id=call.id, name="lookup")
        )
    return messages


def test_count_is_the_exact_length_of_the_rendered_prompt(tokenizer: Qwen3Tokenizer) -> None:
    window = ContextWindow(tokenizer)
    messages = _conversation(3)
    assert window.count(messages) == len(tokenizer.encode_trusted(render(messages)))


@pytest.mark.anyio
async def test_summarises_old_turns_at_75_percent_keeping_tool_calls_with_results(
    tokenizer: Qwen3Tokenizer,
) -> None:
    messages = _conversation(12)
    total = ContextWindow(tokenizer).count(messages)
    # A window the conversation fills to ~90%: above the 75% threshold, below the limit.
    window = ContextWindow(tokenizer, max_tokens=int(total / 0.9), keep_recent=0.3)
    assert window.needs_compaction(messages)
    seen: list[list[Message]] = []

    async def summarize(old: list[Message]) -> str:
        seen.append(old)
        return f"Looked up {sum(isinstance(m, ToolMessage) for m in old)} cities so far."

    result = await window.fit(messages, summarize)
    assert len(seen) == 1 and result.summarized == len(seen[0])
    assert result.tokens_before == total
    assert result.tokens_after == window.count(result.messages) < window.threshold
    kept = result.messages
    assert kept[0] == messages[0] and kept[1] == messages[1]
    assert isinstance(kept[2], UserMessage) and kept[2].content.startswith(SUMMARY_PREFIX)
    assert kept[-1] == messages[-1]
    for part in (seen[0], kept[3:]):
        calls = {c.id for m in part if isinstance(m, AssistantMessage) for c in m.tool_calls}
        results = {m.tool_call_id for m in part if isinstance(m, ToolMessage)}
        assert calls == results  # no call separated from its result
    assert not isinstance(kept[3], ToolMessage)


@pytest.mark.anyio
async def test_below_the_threshold_nothing_is_summarised(tokenizer: Qwen3Tokenizer) -> None:
    messages = _conversation(2)

    async def summarize(old: list[Message]) -> str:
        raise AssertionError("must not be called")

    result = await ContextWindow(tokenizer).fit(messages, summarize)
    assert result.messages == messages and result.summarized == 0


@pytest.mark.anyio
async def test_oversized_tool_output_is_truncated_with_a_note(tokenizer: Qwen3Tokenizer) -> None:
    window = ContextWindow(tokenizer, max_tool_output_tokens=300)
    big = "\n".join(f"row {i}: value {i * 7}" for i in range(2000))
    messages: list[Message] = [
        UserMessage(content="dump the table"),
        AssistantMessage(tool_calls=[ToolCall(name="dump", id="c1")]),
        ToolMessage(content=big, tool_call_id="c1", name="dump"),
    ]

    async def summarize(old: list[Message]) -> str:
        return "unused"

    result = await window.fit(messages, summarize)
    output = result.messages[2].content
    assert result.truncated == 1
    assert output.startswith("row 0: value 0") and output.endswith("row 1999: value 13993")
    assert "tokens of this tool output were truncated" in output
    assert tokenizer.count(output) < 400


@pytest.mark.anyio
async def test_a_single_turn_larger_than_the_window_is_a_clear_error(
    tokenizer: Qwen3Tokenizer,
) -> None:
    window = ContextWindow(tokenizer, max_tokens=200)
    messages: list[Message] = [UserMessage(content="word " * 400)]

    async def summarize(old: list[Message]) -> str:
        return "unused"

    with pytest.raises(ContextOverflowError, match="YaRN"):
        await window.fit(messages, summarize)


def test_summary_request_is_a_plain_transcript() -> None:
    request = summary_request(_conversation(1))
    assert isinstance(request[0], SystemMessage)
    assert '[called lookup({"city": "city-0"})]' in request[1].content
    assert "tool lookup result:" in request[1].content
