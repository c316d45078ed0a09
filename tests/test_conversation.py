"""Conversation: when the prompt is re-rendered, and where it is reported to have diverged."""

from __future__ import annotations

from q3agent.conversation import Conversation
from q3agent.qwen3.messages import AssistantMessage, UserMessage
from q3agent.qwen3.parsing import parse
from q3agent.qwen3.prompt import PromptBuilder
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import StepRecord
from q3agent.types import Usage


def _record() -> StepRecord:
    return StepRecord(
        index=0,
        thinking=False,
        budget=None,
        reason="test",
        usage=Usage(),
        latency_s=0.0,
        reasoning=None,
        content="Hi.",
        tool_calls=(),
        tool_results=(),
        hit_budget=False,
        finish_reason="stop",
        prompt_diverged_at=None,
    )


def _answer(conv: Conversation, tokenizer: Qwen3Tokenizer, text: str) -> None:
    ids = [*tokenizer.encode(text), tokenizer.im_end_id]
    conv.add_assistant(parse(text), ids, "stop")
    conv.end_with_answer(_record())


def test_an_answered_task_leaves_a_clean_prompt_for_the_next_one(tokenizer: Qwen3Tokenizer) -> None:
    conv = Conversation(PromptBuilder(tokenizer, []))
    conv.add(UserMessage(content="Hello"))
    conv.begin(False)
    assert conv.needs_render  # until the task ends with an answer
    assert conv.take_divergence() is None  # the first prompt diverges from nothing
    _answer(conv, tokenizer, "Hi.")
    assert not conv.needs_render
    assert isinstance(conv.messages[-1], AssistantMessage)

    before = conv.builder.ids.to_tuple()
    conv.add(UserMessage(content="And again"))
    conv.begin(False)
    after = conv.builder.ids.to_tuple()
    diverged = conv.take_divergence()  # the template rewrites the answered turn's head
    assert diverged is not None and after[:diverged] == before[:diverged]
    assert len(after) > len(before) and conv.take_divergence() is None


def test_an_unfinished_task_is_rerendered_and_its_divergence_reported_once(
    tokenizer: Qwen3Tokenizer,
) -> None:
    conv = Conversation(PromptBuilder(tokenizer, []))
    conv.add(UserMessage(content="Hello"))
    conv.begin(False)  # the task stops before an answer: the prompt stays open
    conv.compacted([UserMessage(content="Summary: the user said hello.")], floor=10)
    assert conv.needs_render and conv.compact_floor == 10
    conv.add(UserMessage(content="Hello again"))
    conv.begin(False)
    diverged = conv.take_divergence()
    assert diverged is not None and diverged > 0  # the system/head tokens still match
    assert conv.take_divergence() is None  # reported by one step only


def test_new_tools_force_a_rerender(tokenizer: Qwen3Tokenizer) -> None:
    conv = Conversation(PromptBuilder(tokenizer, []))
    conv.add(UserMessage(content="Hello"))
    conv.begin(False)
    _answer(conv, tokenizer, "Hi.")
    tool = {"type": "function", "function": {"name": "f", "description": "F.", "parameters": {}}}
    conv.set_tools(tokenizer, [tool])
    assert conv.needs_render
    conv.add(UserMessage(content="Use f"))
    conv.begin(False)
    assert conv.take_divergence() is not None  # the tools block changed the system turn
