"""The agent loop end to end with scripted Qwen3 completions and the real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from q3agent import (
    Agent,
    AlwaysThink,
    NeverThink,
    PlanAct,
    RunContext,
    RunOptions,
    UsageLimits,
    tool,
)
from q3agent.events import (
    ContentDelta,
    FinalResult,
    ReasoningDelta,
    StepEnd,
    StepStart,
    ToolCallEvent,
    ToolResultEvent,
)
from q3agent.qwen3.thinking import EARLY_STOP_TEXT, budget_continuation
from q3agent.testing.runtimes import FunctionRuntime, ScriptedRuntime

pytestmark = pytest.mark.anyio


def call(name: str, **arguments: object) -> str:
    """A tool call exactly as Qwen3 writes it."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first addend.
        b: The second addend.
    """
    return a + b


@tool
def get_weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: City name, e.g. "Paris".
    """
    return f"{city}: 18°C, light rain"


async def test_multi_step_tool_use_reaches_an_answer() -> None:
    runtime = ScriptedRuntime(
        [
            call("add", a=2, b=3),
            call("add", a=5, b=10),
            "2 + 3 = 5, and 5 + 10 = 15.",
        ]
    )
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink())
    result = await agent.arun("Add 2 and 3, then add 10 to that.")

    assert result.status == "answer"
    assert result.answer == "2 + 3 = 5, and 5 + 10 = 15."
    assert [r.content for s in result.steps for r in s.tool_results] == ["5", "15"]
    assert [m.role for m in result.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert result.usage.requests == 3
    runtime.assert_complete()
    # the tool result reached the model inside <tool_response>, as the template renders it
    assert "<tool_response>\n5\n</tool_response>" in runtime.requests[1].prompt_text


async def test_every_prompt_extends_the_previous_prompt_and_completion() -> None:
    script = [call("add", a=i, b=1) for i in range(9)] + ["Done."]
    runtime = ScriptedRuntime(script)
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink(), max_steps=12)
    result = await agent.arun("Count up nine times.")

    assert result.status == "answer"
    assert len(runtime.requests) == 10
    for before, after in zip(runtime.requests, runtime.requests[1:], strict=False):
        assert after.prompt_ids[: len(before.prompt_ids)] == before.prompt_ids
    # from the second request on, everything but the new tool turn was a cache hit
    assert all(s.usage.cached_tokens > 0 for s in result.steps[1:])
    for before, step in zip(result.steps, result.steps[1:], strict=False):
        assert step.usage.cached_tokens == before.usage.total_tokens  # prompt + completion


async def test_the_test_runtime_prefix_cache_serves_what_tuple_prompts_share(
    tokenizer: Any,
) -> None:
    from q3agent.serving.base import GenerationRequest

    runtime = ScriptedRuntime(["One.", "Two.", "Three."], tokenizer=tokenizer)
    first = tuple(tokenizer.encode_trusted("<|im_start|>user\nhi<|im_end|>\n"))
    out = (await runtime.generate(GenerationRequest(prompt_ids=first))).token_ids
    grown = (*first, *out, *tokenizer.encode("more"))
    second = await runtime.generate(GenerationRequest(prompt_ids=grown))
    assert second.usage.cached_tokens == len(first) + len(out)
    changed = (*grown[:3], 0, *grown[4:])  # differs from the cached prompt at index 3
    third = await runtime.generate(GenerationRequest(prompt_ids=changed))
    assert third.usage.cached_tokens == 3


async def test_prompt_ids_are_previous_prompt_plus_returned_completion_ids() -> None:
    completions: list[tuple[int, ...]] = []
    script = [call("add", a=i, b=i) for i in range(9)] + ["All added."]
    inner = ScriptedRuntime(script)

    async def recording(request):  # type: ignore[no-untyped-def]
        generation = await inner.generate(request)
        completions.append(generation.token_ids)
        return generation

    runtime = FunctionRuntime(recording)
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink(), max_steps=12)
    result = await agent.arun("Double the numbers 0 to 8.")

    assert result.status == "answer"
    prompts = [r.prompt_ids for r in runtime.requests]
    assert len(prompts) == 10
    for k in range(9):
        assert prompts[k + 1][: len(prompts[k]) + len(completions[k])] == (
            prompts[k] + completions[k]
        )


async def test_parallel_calls_run_concurrently_and_answer_in_call_order() -> None:
    started = 0
    all_started = anyio.Event()

    @tool
    async def fetch(item: str) -> str:
        """Fetch one item.

        Args:
            item: Which item.
        """
        nonlocal started
        started += 1
        if started == 3:
            all_started.set()
        with anyio.fail_after(5):  # deadlocks (and fails) unless all three run at once
            await all_started.wait()
        return f"got {item}"

    runtime = ScriptedRuntime(
        [call("fetch", item="a") + call("fetch", item="b") + call("fetch", item="c"), "ok"]
    )
    agent = Agent(runtime=runtime, tools=[fetch], policy=NeverThink())
    result = await agent.arun("Fetch a, b and c.")

    assert result.status == "answer"
    assert [r.content for r in result.steps[0].tool_results] == ["got a", "got b", "got c"]
    prompt = runtime.requests[1].prompt_text
    assert prompt.index("got a") < prompt.index("got b") < prompt.index("got c")


async def test_invalid_arguments_go_back_to_the_model_which_then_succeeds() -> None:
    runtime = ScriptedRuntime([call("add", a="two", b=3), call("add", a=2, b=3), "5"])
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink())
    result = await agent.arun("Add two and three.")

    assert result.status == "answer"
    first = result.steps[0].tool_results[0]
    assert first.is_error and first.error_kind == "invalid_arguments"
    assert "a" in first.content  # names the argument that was wrong
    assert "<tool_response>" in runtime.requests[1].prompt_text
    assert result.steps[1].tool_results[0].content == "5"


async def test_unknown_tool_is_answered_with_the_available_tools() -> None:
    runtime = ScriptedRuntime(
        [
            call("get_wether", city="Paris"),
            call("get_weather", city="Paris"),
            "It is 18°C and raining in Paris.",
        ]
    )
    agent = Agent(runtime=runtime, tools=[get_weather, add], policy=NeverThink())
    result = await agent.arun("Weather in Paris?")

    error = result.steps[0].tool_results[0]
    assert error.error_kind == "unknown_tool"
    assert "get_weather" in error.content
    assert result.status == "answer"


async def test_unparseable_call_is_answered_not_raised() -> None:
    runtime = ScriptedRuntime(
        [
            '<tool_call>\n{"name": "add", "arguments": [1, 2]}\n</tool_call>',
            call("add", a=1, b=2),
            "3",
        ]
    )
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink())
    result = await agent.arun("1+2?")

    assert result.steps[0].tool_results[0].error_kind == "parse_error"
    assert result.status == "answer" and result.answer == "3"


async def test_tool_exception_and_timeout_become_tool_responses() -> None:
    @tool
    def explode() -> str:
        """Always fails."""
        raise ValueError("disk is full")

    @tool(timeout=0.05)
    async def slow() -> str:
        """Never finishes in time."""
        await anyio.sleep(10)
        return "late"

    runtime = ScriptedRuntime([call("explode") + call("slow"), "Both tools failed."])
    agent = Agent(runtime=runtime, tools=[explode, slow], policy=NeverThink())
    result = await agent.arun("Try both tools.")

    exc, timeout = result.steps[0].tool_results
    assert exc.error_kind == "exception" and "disk is full" in exc.content
    assert timeout.error_kind == "timeout"
    assert result.status == "answer"


async def test_retry_budget_ends_the_run_with_a_clear_status() -> None:
    @tool(max_retries=1)
    def flaky() -> str:
        """Always fails."""
        raise RuntimeError("backend down")

    runtime = ScriptedRuntime([call("flaky")] * 5)
    agent = Agent(runtime=runtime, tools=[flaky], policy=NeverThink())
    result = await agent.arun("Use flaky.")

    assert result.status == "error"
    assert "flaky" in result.detail and "max_retries" in result.detail
    assert len(result.steps) == 2


async def test_max_retries_counts_failures_in_a_row_and_a_success_resets_it() -> None:
    @tool(max_retries=1)
    def flaky(n: int) -> str:
        """Fails on odd attempts.

        Args:
            n: The attempt.
        """
        if n % 2:
            raise RuntimeError("backend down")
        return "ok"

    # fail, ok, fail, ok, fail, fail: only the last two are two failures in a row
    script = [call("flaky", n=n) for n in (1, 2, 3, 4, 5, 7)] + ["Done."]
    agent = Agent(runtime=ScriptedRuntime(script), tools=[flaky], policy=NeverThink())
    result = await agent.arun("Use flaky.")

    assert result.status == "error"
    assert "'flaky' failed 2 times in a row" in result.detail
    assert "max_retries=1" in result.detail
    assert len(result.steps) == 6


async def test_step_limit() -> None:
    runtime = ScriptedRuntime([call("add", a=1, b=1)] * 3)
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink(), max_steps=3)
    result = await agent.arun("Loop forever.")

    assert result.status == "step_limit"
    assert len(result.steps) == 3
    assert "max_steps=3" in result.detail


async def test_usage_limit() -> None:
    runtime = ScriptedRuntime([call("add", a=1, b=1)] * 5)
    agent = Agent(
        runtime=runtime,
        tools=[add],
        policy=NeverThink(),
        options=RunOptions(usage_limits=UsageLimits(max_requests=2)),
    )
    result = await agent.arun("Loop.")

    assert result.status == "usage_limit"
    assert result.usage.requests == 2
    assert "2 model requests" in result.detail


async def test_cancelling_the_driving_task_stops_tools_and_returns_what_was_done() -> None:
    tool_started = anyio.Event()
    tool_cancelled = False

    @tool
    async def long_job() -> str:
        """Takes forever."""
        nonlocal tool_cancelled
        tool_started.set()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            tool_cancelled = True
            raise
        return "done"

    runtime = ScriptedRuntime([call("add", a=1, b=2), call("long_job"), "never"])
    agent = Agent(runtime=runtime, tools=[add, long_job], policy=NeverThink())
    results = []

    async def drive() -> None:
        results.append(await agent.arun("Do the long job."))

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive)
        with anyio.fail_after(5):
            await tool_started.wait()
        tg.cancel_scope.cancel()

    assert tool_cancelled
    if results:  # asyncio hands back the partial result; a cancelled scope may swallow it
        result = results[0]
        assert result.status == "cancelled"
        assert result.steps[0].tool_results[0].content == "3"


async def test_cancelled_run_returns_partial_result_to_the_awaiting_task() -> None:
    import asyncio

    tool_started = asyncio.Event()

    @tool
    async def long_job() -> str:
        """Takes forever."""
        tool_started.set()
        await asyncio.sleep(60)
        return "done"

    runtime = ScriptedRuntime([call("add", a=1, b=2), call("long_job"), "never"])
    agent = Agent(runtime=runtime, tools=[add, long_job], policy=NeverThink())
    task = asyncio.ensure_future(agent.arun("Do the long job."))
    await asyncio.wait_for(tool_started.wait(), 5)
    task.cancel()
    result = await task

    assert result.status == "cancelled"
    assert len(result.steps) == 1 and result.steps[0].tool_results[0].content == "3"


async def test_approval_denied_reaches_the_model() -> None:
    deleted: list[str] = []

    @tool(requires_approval=True)
    def delete_file(path: str) -> str:
        """Delete a file.

        Args:
            path: The file to delete.
        """
        deleted.append(path)
        return "deleted"

    def approve(call, tool):  # type: ignore[no-untyped-def]
        return "deleting files under /etc is not allowed"

    runtime = ScriptedRuntime([call("delete_file", path="/etc/passwd"), "I was not allowed."])
    agent = Agent(
        runtime=runtime,
        tools=[delete_file],
        policy=NeverThink(),
        options=RunOptions(approve=approve),
    )
    result = await agent.arun("Delete /etc/passwd")

    assert deleted == []
    denial = result.steps[0].tool_results[0]
    assert denial.error_kind == "denied" and "not allowed" in denial.content
    assert "not allowed" in runtime.requests[1].prompt_text


async def test_tools_receive_the_run_context() -> None:
    seen = []

    @tool
    def whoami(ctx: RunContext[dict[str, str]]) -> str:
        """Name of the current user."""
        seen.append((ctx.step, ctx.deps))
        return ctx.deps["user"]

    runtime = ScriptedRuntime([call("whoami"), "You are ada."])
    agent = Agent(runtime=runtime, tools=[whoami], policy=NeverThink(), deps={"user": "ada"})
    result = await agent.arun("Who am I?")

    assert result.answer == "You are ada."
    assert seen == [(0, {"user": "ada"})]


async def test_budget_continuation_prompt_is_prompt_plus_partial_thinking_plus_early_stop() -> None:
    long_thinking = "<think>\n" + "I should weigh every option carefully. " * 60 + "\n</think>\n\n"
    runtime = ScriptedRuntime([long_thinking + "The answer is 42."])
    agent = Agent(runtime=runtime, policy=AlwaysThink(budget=32))
    result = await agent.arun("What is the answer?")

    assert result.status == "answer"
    assert result.answer == "The answer is 42."
    phase1, phase2 = runtime.requests
    tok = runtime.tokenizer
    added = phase2.prompt_ids[len(phase1.prompt_ids) :]
    thinking_ids = added[:33]  # <think> + exactly the budget of 32 reasoning tokens
    assert thinking_ids[0] == tok.think_id
    continuation = tok.encode_trusted(budget_continuation(tok.decode(thinking_ids)))
    assert added == thinking_ids + tuple(continuation)
    assert tok.decode(continuation).endswith(EARLY_STOP_TEXT)
    step = result.steps[0]
    assert step.hit_budget
    assert step.usage.reasoning_tokens <= 32
    assert step.usage.requests == 2
    assert "Considering the limited time by the user" in (step.reasoning or "")


async def test_thinking_within_budget_continues_after_the_models_own_close() -> None:
    runtime = ScriptedRuntime(["<think>\nShort plan.\n</think>\n\n" + call("add", a=1, b=2), "3"])
    agent = Agent(runtime=runtime, tools=[add], policy=PlanAct())
    result = await agent.arun("1+2?")

    first = result.steps[0]
    assert first.thinking and not first.hit_budget
    assert first.reasoning == "Short plan."
    assert result.steps[1].thinking is False
    assert result.answer == "3"


async def test_stream_yields_deltas_calls_results_and_final() -> None:
    runtime = ScriptedRuntime(
        [
            "<think>\nI will check the weather.\n</think>\n\n" + call("get_weather", city="Oslo"),
            "Oslo: 18°C with light rain.",
        ]
    )
    agent = Agent(runtime=runtime, tools=[get_weather], policy=PlanAct())
    events = [event async for event in agent.stream("Weather in Oslo?")]

    kinds = [e.kind for e in events]
    assert kinds[0] == "step_start" and kinds[-1] == "final"
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    assert "I will check the weather." in reasoning
    assert content.endswith("Oslo: 18°C with light rain.")
    assert [e.call.name for e in events if isinstance(e, ToolCallEvent)] == ["get_weather"]
    assert [e.result.content for e in events if isinstance(e, ToolResultEvent)] == [
        "Oslo: 18°C, light rain"
    ]
    assert sum(isinstance(e, StepStart) for e in events) == 2
    assert sum(isinstance(e, StepEnd) for e in events) == 2
    final = events[-1]
    assert isinstance(final, FinalResult) and final.result.status == "answer"


async def test_session_keeps_history_for_follow_up_tasks() -> None:
    runtime = ScriptedRuntime([call("add", a=2, b=2), "4", "Doubled, that is 8."])
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink())
    session = agent.session()
    first = await session.arun("What is 2+2?")
    second = await session.arun("Double it.")

    assert first.answer == "4" and second.answer == "Doubled, that is 8."
    assert [m.role for m in session.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    follow_up = runtime.requests[-1]
    assert "What is 2+2?" in follow_up.prompt_text and "Double it." in follow_up.prompt_text
    # A new query makes Qwen3's template drop earlier turns' (here empty) think blocks, so the
    # prompt is re-rendered; the step record says where the prefix diverged, and everything
    # before it (system turn with the tools block, the first query) stays cached.
    previous = runtime.requests[1].prompt_ids
    diverged = second.steps[0].prompt_diverged_at
    assert diverged is not None
    assert follow_up.prompt_ids[:diverged] == previous[:diverged]
    assert follow_up.prompt_ids[diverged] != previous[diverged]
    assert runtime.tokenizer.decode(previous[:diverged]).endswith(
        "What is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_sync_run_and_trace(tmp_path: Path) -> None:
    runtime = ScriptedRuntime([call("add", a=1, b=1), "2"])
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink())
    result = agent.run("1+1?")
    trace = result.write_trace(tmp_path / "trace.jsonl")

    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["step", "step", "run"]
    assert lines[0]["tool_calls"][0]["name"] == "add"
    assert lines[-1]["answer"] == "2" and lines[-1]["status"] == "answer"


async def test_sync_run_inside_an_event_loop_says_to_await() -> None:
    agent = Agent(runtime=ScriptedRuntime(["x"]))
    with pytest.raises(RuntimeError, match=r"await agent\.arun"):
        agent.run("hi")


async def test_system_prompt_and_tools_block_render_as_qwen3_expects() -> None:
    runtime = ScriptedRuntime(["Hello!"])
    agent = Agent(runtime=runtime, tools=[add], system_prompt="Be terse.", policy=NeverThink())
    await agent.arun("Hi")

    prompt = runtime.requests[0].prompt_text
    assert prompt.startswith("<|im_start|>system\nBe terse.\n\n# Tools\n")
    assert '"name": "add"' in prompt
    assert prompt.endswith(
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


async def test_tool_choice_required_constrains_the_first_step_only() -> None:
    runtime = ScriptedRuntime([call("add", a=1, b=2), "3"])
    agent = Agent(
        runtime=runtime,
        tools=[add, get_weather],
        policy=NeverThink(),
        options=RunOptions(tool_choice="add"),
    )
    await agent.arun("1+2?")

    first, second = (r.request.constraint for r in runtime.requests)
    assert first is not None and first.required
    assert [t["function"]["name"] for t in first.tools] == ["add"]
    assert second is None


def test_tool_choice_must_name_a_tool() -> None:
    with pytest.raises(ValueError, match="names no tool"):
        Agent(runtime=ScriptedRuntime([]), tools=[add], options=RunOptions(tool_choice="multiply"))


async def test_tools_added_between_tasks_rerender_the_tools_block() -> None:
    runtime = ScriptedRuntime(["Hi.", call("get_weather", city="Rome"), "Sunny in Rome."])
    agent = Agent(runtime=runtime, tools=[add], policy=NeverThink())
    session = agent.session()
    await session.arun("Hello")
    session.add_tools([get_weather])
    result = await session.arun("Weather in Rome?")

    assert result.answer == "Sunny in Rome."
    assert '"name": "get_weather"' in runtime.requests[1].prompt_text
    assert '"name": "get_weather"' not in runtime.requests[0].prompt_text
    # the system turn changed, so the prompt diverged inside the tools block
    diverged = result.steps[0].prompt_diverged_at
    assert diverged is not None
    assert diverged < len(runtime.tokenizer.encode_trusted(runtime.requests[0].prompt_text))


async def test_parallel_tool_calls_off_runs_a_steps_calls_in_order() -> None:
    log: list[str] = []

    @tool
    async def step(label: str, delay: float) -> str:
        """Record a step.

        Args:
            label: Step name.
            delay: Seconds to wait first.
        """
        log.append(f"start {label}")
        await anyio.sleep(delay)
        log.append(f"end {label}")
        return label

    completion = call("step", label="cd", delay=0.05) + call("step", label="mv", delay=0.0)
    for parallel, expected in (
        (True, ["start cd", "start mv", "end mv", "end cd"]),
        (False, ["start cd", "end cd", "start mv", "end mv"]),
    ):
        log.clear()
        agent = Agent(
            runtime=ScriptedRuntime([completion, "done"]),
            tools=[step],
            policy=NeverThink(),
            options=RunOptions(parallel_tool_calls=parallel),
        )
        result = await agent.arun("cd then mv")
        assert log == expected
        assert [r.content for r in result.steps[0].tool_results] == ["cd", "mv"]


async def test_a_model_that_skips_thinking_is_continued_without_early_stop_text() -> None:
    answer = "Paris is the capital of France, and it has been for a very long time indeed."
    runtime = ScriptedRuntime([answer])
    result = await Agent(runtime=runtime, policy=AlwaysThink(budget=4)).arun("Capital?")

    assert result.answer == answer
    assert not result.steps[0].hit_budget
    assert EARLY_STOP_TEXT not in runtime.requests[-1].prompt_text


async def test_the_registry_model_decides_thinking_not_the_served_name() -> None:
    # a 2507 Instruct model behind a server that calls it something else
    runtime = ScriptedRuntime(["Paris."], model_name="prod-chat")
    agent = Agent("Qwen3-30B-A3B-Instruct-2507", runtime=runtime, policy=AlwaysThink())
    assert agent.capability == "non_thinking"
    result = await agent.arun("Capital of France?")
    assert result.steps[0].thinking is False
    assert "<think>" not in runtime.requests[0].prompt_text


def test_an_unknown_model_name_is_an_error_unless_its_capability_is_given() -> None:
    from q3agent.qwen3.models import UnknownModelError

    with pytest.raises(UnknownModelError) as info:
        Agent("my-finetune", runtime=ScriptedRuntime([]))
    message = str(info.value)
    assert "Qwen3-8B" in message and "capability=" in message and "--capability" in message
    assert Agent("my-finetune", runtime=ScriptedRuntime([]), capability="hybrid").capability == (
        "hybrid"
    )


async def test_a_function_tool_taking_the_run_context_streams_its_progress() -> None:
    from q3agent.events import ToolProgress

    @tool
    def crawl(ctx: RunContext[None], pages: int) -> str:
        """Crawl some pages.

        Args:
            pages: How many.
        """
        for page in range(1, pages + 1):
            ctx.report_progress(page, pages, f"page {page}")
        return f"crawled {pages}"

    runtime = ScriptedRuntime([call("crawl", pages=3), call("add", a=1, b=2), "Done."])
    agent = Agent(runtime=runtime, tools=[crawl, add], policy=NeverThink())
    events = [e async for e in agent.stream("Crawl three pages, then add.")]

    progress = [e for e in events if isinstance(e, ToolProgress)]
    assert [(p.step, p.name, p.progress, p.total) for p in progress] == [
        (0, "crawl", 1, 3),
        (0, "crawl", 2, 3),
        (0, "crawl", 3, 3),
    ]
    assert crawl.takes_context and not add.takes_context
    assert events[-1].result.answer == "Done."  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Output caps, truncated answers, usage of a cancelled request


LONG_ANSWER = "The harbour opens at six, " + "and then it stays open all day, " * 40 + "end."


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_cut_at_max_tokens_has_status_truncated(stream: bool) -> None:
    agent = Agent(runtime=ScriptedRuntime([LONG_ANSWER]), policy=NeverThink(), max_tokens=12)
    session = agent.session()
    if stream:
        result = [e async for e in session.stream("When does the harbour open?")][-1].result  # type: ignore[union-attr]
    else:
        result = await session.arun("When does the harbour open?")
    assert result.status == "truncated"
    assert result.truncated and not result.ok
    assert result.answer.startswith("The harbour opens at six")
    assert "end." not in result.answer
    assert "max_tokens=12" in result.detail and "cut off" in result.detail
    assert result.steps[-1].finish_reason == "length"
    assert result.to_json()["status"] == "truncated"


async def test_a_whole_answer_is_not_truncated() -> None:
    result = await Agent(runtime=ScriptedRuntime([LONG_ANSWER]), policy=NeverThink()).arun("q")
    assert result.status == "answer" and not result.truncated and result.ok


async def test_the_completion_limit_reaches_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from q3agent.agent import DEFAULT_MAX_TOKENS
    from q3agent.serving.settings import LimitedRuntime

    monkeypatch.delenv("Q3AGENT_MAX_TOKENS", raising=False)

    async def asked(agent: Agent) -> int:
        await agent.arun("What is 1 + 2?")
        runtime = agent.runtime
        inner = getattr(runtime, "inner", runtime)
        return int(inner.requests[-1].request.sampling.max_tokens)

    def scripted() -> ScriptedRuntime:
        return ScriptedRuntime(["3"])

    # the default for interactive use, not the model cards' 32,768
    assert await asked(Agent(runtime=scripted(), policy=NeverThink())) == DEFAULT_MAX_TOKENS
    assert DEFAULT_MAX_TOKENS < 32_768
    # the argument
    assert await asked(Agent(runtime=scripted(), policy=NeverThink(), max_tokens=300)) == 300
    # a runtime built with a limit (the CLI's --max-tokens)
    limited = LimitedRuntime(scripted(), max_tokens=700)
    assert await asked(Agent(runtime=limited, policy=NeverThink())) == 700
    # the environment variable, also with runtime=...
    monkeypatch.setenv("Q3AGENT_MAX_TOKENS", "500")
    assert await asked(Agent(runtime=scripted(), policy=NeverThink())) == 500
    assert await asked(Agent(runtime=scripted(), policy=NeverThink(), max_tokens=64)) == 64
    monkeypatch.setenv("Q3AGENT_MAX_TOKENS", "lots")
    from q3agent.errors import UsageError

    with pytest.raises(UsageError, match="Q3AGENT_MAX_TOKENS"):
        await Agent(runtime=scripted(), policy=NeverThink()).arun("q")
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        Agent(runtime=scripted(), max_tokens=0)


async def test_a_request_cancelled_while_generating_is_counted_in_usage() -> None:
    import asyncio

    started = asyncio.Event()

    async def never_answers(request: Any) -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    runtime = FunctionRuntime(never_answers)
    agent = Agent(runtime=runtime, policy=NeverThink())
    task = asyncio.ensure_future(agent.arun("Write a long story."))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    result = await task

    assert result.status == "cancelled"
    assert result.usage.requests == 1
    assert result.usage.prompt_tokens == len(runtime.requests[0].prompt_ids) > 0


async def test_streamed_tokens_of_a_cancelled_request_are_counted() -> None:
    import asyncio

    from q3agent.serving.base import RuntimeWrapper

    class Paced(RuntimeWrapper):
        """The scripted stream with a pause between chunks, as a real engine has."""

        async def stream(self, request: Any) -> Any:  # type: ignore[override]
            async for chunk in self.inner.stream(request):
                yield chunk
                await asyncio.sleep(0)

    agent = Agent(runtime=Paced(ScriptedRuntime([LONG_ANSWER])), policy=NeverThink())
    seen = 0

    async def drive() -> Any:
        nonlocal seen
        async for event in agent.session().stream("Tell me about the harbour."):
            if isinstance(event, ContentDelta):
                seen += 1
                if seen == 3:  # three pieces in: stop the run
                    asyncio.current_task().cancel()  # type: ignore[union-attr]
            if isinstance(event, FinalResult):
                return event.result
        return None

    result = await drive()
    assert result is not None and result.status == "cancelled"
    assert result.usage.requests == 1
    assert result.usage.completion_tokens >= 3
    assert result.usage.prompt_tokens > 0
