"""The agent on an in-process ``sglang.Engine`` (SGLangRuntime): run by ``test_embedded.py``
under the SGLang venv's Python (``python embedded_agent.py DENSE_DIR MOE_DIR PORT``), not
collected itself.

The dense engine is started by q3agent's own ``SGLangRuntime(context_length=4096)`` on a model
whose native window is 2,048 with YaRN in its config, so the YaRN override q3agent computes
must be accepted for the engine to start at all, and the prompts near the limit run at
positions only YaRN covers. That one engine serves every dense scenario: a forced tool call
executed and fed back (whole and streamed); thinking within and over its budget (whole and
streamed); a three-task session whose every task finds the earlier conversation in
RadixAttention's cache; ``tool_choice="required"`` with the random model left unforced under
q3agent's grammar; a prompt near the window, one at SGLang's own limits and one over it; two
sync ``run()`` calls after the async ones (the engine's requests must keep working from another
event loop). Then the engine is shut down and the tiny MoE model gets its own engine for a tool
round and a budget cut.

The tiny random model follows one script (:class:`~q3agent.testing.sglang_server.ScriptedTokens`)
whose turns fit both modes (with thinking off the prompt's empty think block skips the scripted
reasoning): a single task's turns are the first two, the session's six, and the required
scenario's own turn is the seventh, a :data:`~q3agent.testing.vllm_server.FREE_TURN`. Each
scenario asserts its own outcome; the last line printed is ``EMBEDDED-OK`` and a JSON summary.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import defaultdict

from q3agent import Agent, RunOptions, tool
from q3agent.events import ContentDelta, FinalResult, ReasoningDelta
from q3agent.policy.base import StepMode
from q3agent.qwen3.messages import ToolCall
from q3agent.qwen3.models import NON_THINKING_SAMPLING, THINKING_SAMPLING
from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.result import RunResult
from q3agent.serving.base import ContextLengthError, GenerationRequest
from q3agent.serving.sglang_runtime import SGLangRequestOptions, SGLangRuntime
from q3agent.testing.sglang_server import ENGINE_KWARGS, script_params, scripted_processor_str
from q3agent.testing.vllm_server import FREE_TURN
from q3agent.types import SamplingParams

NATIVE = 2048
"""The dense model's native window (its ``max_position_embeddings``)."""
CONTEXT = 4096
"""The window q3agent asks the embedded engine for: YaRN factor 2."""
REASONING = "I need the sum of two and three, so I will call the add tool with a=2 and b=3."
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>'
ANSWER = "The sum is 5."
FIRST = f"<think>\n{REASONING}\n</think>\n\nLet me add them.\n{CALL}"
LAST = f"<think>\nThe tool said 5.\n</think>\n\n{ANSWER}<|im_end|>"
REQUIRED_ANSWER = "Done."
TOK = Qwen3Tokenizer.offline()
SCRIPT: list[tuple[int, ...]] = [
    *(tuple(TOK.encode_trusted(t)) for t in [FIRST, LAST] * 3),
    FREE_TURN,  # the required call: the random model's own, under the grammar
    tuple(TOK.encode_trusted(f"<think>\nOK.\n</think>\n\n{REQUIRED_ANSWER}<|im_end|>")),
]


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First addend.
        b: Second addend.
    """
    return a + b


class Fixed:
    """One step mode for every step (the scripted model ends its turns itself)."""

    def __init__(self, thinking: bool, budget: int | None = None, max_tokens: int = 400) -> None:
        preset = THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING
        self.mode = StepMode(thinking, budget, preset.with_(max_tokens=max_tokens), "test")

    def decide(self, state: object) -> StepMode:
        """The fixed mode."""
        return self.mode


def ok(result: RunResult) -> None:
    """The run ended with an answer."""
    assert result.status == "answer", f"{result.status}: {result.detail}"


def check_tool_round(result: RunResult) -> None:
    """The call was executed, its result fed back, and the answer written after it."""
    ok(result)
    first = result.steps[0]
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert [r.content for r in first.tool_results] == ["5"]
    assert result.answer == ANSWER, result.answer


async def streamed(agent: Agent, task: str) -> RunResult:
    """Run ``task`` streaming; the deltas must add up to each step's record."""
    final = None
    reasoning: dict[int, str] = defaultdict(str)
    content: dict[int, str] = defaultdict(str)
    async for event in agent.stream(task):
        if isinstance(event, ReasoningDelta):
            reasoning[event.step] += event.text
        elif isinstance(event, ContentDelta):
            content[event.step] += event.text
        elif isinstance(event, FinalResult):
            final = event.result
    assert final is not None
    for step in final.steps:
        assert reasoning[step.index].strip() == (step.reasoning or "").strip()
        assert content[step.index].strip() == step.content.strip()
    return final


def reasoning_tokens() -> int:
    """Tokens of the first turn's thinking block."""
    return len(TOK.encode_trusted(f"<think>\n{REASONING}\n</think>"))


async def tool_rounds(runtime: SGLangRuntime, summary: dict[str, object]) -> None:
    """Tool round whole and streamed (no thinking); the second step finds the first's prompt
    and reply in RadixAttention's cache."""
    plain = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=False))
    whole = await plain.arun("What is 2 + 3? Use the tool.")
    check_tool_round(whole)
    assert whole.steps[1].usage.cached_tokens >= whole.steps[0].usage.prompt_tokens
    summary["tool_round_cached_tokens"] = whole.steps[1].usage.cached_tokens
    check_tool_round(await streamed(plain, "What is 2 + 3? Use the tool, please."))


async def budgets(runtime: SGLangRuntime, summary: dict[str, object]) -> None:
    """Thinking over its budget (early-stop text, a second request), whole and streamed; and
    within it (one request, the whole reasoning)."""
    cut = Agent(None, runtime=runtime, tools=[add], policy=Fixed(True, reasoning_tokens() // 2))
    for label, result in (
        ("budget_whole", await cut.arun("What is 2 + 3? Think, then use the tool.")),
        ("budget_stream", await streamed(cut, "What is 2 + 3? Think first.")),
    ):
        check_tool_round(result)
        first = result.steps[0]
        assert first.hit_budget and first.usage.requests == 2, (first.hit_budget, first.usage)
        early_stop = EARLY_STOP_TEXT.split("\n")[0]
        assert first.reasoning is not None and first.reasoning.rstrip().endswith(early_stop)
        kept = first.reasoning.rstrip().removesuffix(early_stop).strip()
        assert kept and REASONING.startswith(kept), kept
        summary[f"{label}_reprefilled"] = first.usage.prompt_tokens - first.usage.cached_tokens
    within = Agent(None, runtime=runtime, tools=[add], policy=Fixed(True, reasoning_tokens() + 40))
    for result in (
        await within.arun("What is 2 + 3? Think, then use the tool."),
        await streamed(within, "What is 2 + 3? Think it over."),
    ):
        check_tool_round(result)
        first = result.steps[0]
        assert not first.hit_budget and first.usage.requests == 1, first.usage
        assert (first.reasoning or "").strip() == REASONING


async def session_then_required(runtime: SGLangRuntime, summary: dict[str, object]) -> None:
    """Three tool tasks in one session with thinking off, each finding the conversation in
    RadixAttention's cache up to where the chat template changed it; then an agent with
    ``tool_choice="required"`` takes the conversation over and the random model, unforced,
    writes a complete schema-valid call under q3agent's grammar.

    A new user query makes the official template drop the earlier turns' think blocks, the
    empty ones of thinking-off steps too, so each task's prompt is re-rendered from the
    previous task's first answer on (``prompt_diverged_at``): everything before it is cached.
    """
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=False))
    session = agent.session()
    results = [await session.arun(f"Task {k}: what is 2 + 3? Use the tool.") for k in (1, 2, 3)]
    for result in results:
        check_tool_round(result)
    empty_think = len(TOK.encode_trusted("<think>\n\n</think>\n\n"))
    cached = []
    for before, after in itertools.pairwise(results):
        first = after.steps[0]
        diverged = first.prompt_diverged_at
        # the earlier task's first prompt, less the empty think block the template drops
        assert diverged == before.steps[0].usage.prompt_tokens - empty_think, (diverged, before)
        assert first.usage.cached_tokens >= diverged, (first.usage, diverged)
        cached.append(first.usage.cached_tokens)
        for later in after.steps[1:]:  # within a task, prompts only grow
            assert later.prompt_diverged_at is None
    summary["session_cached_tokens"] = cached
    required = Agent(
        None,
        runtime=runtime,
        tools=[add],
        policy=Fixed(thinking=False, max_tokens=64),
        options=RunOptions(tool_choice="required"),
    )
    result = await required.session(session.messages).arun("Now add any two numbers.")
    ok(result)
    first = result.steps[0]
    call = first.tool_calls[0] if first.tool_calls else None
    # the grammar's first call is complete and schema-valid (a random model may go on with
    # more calls, which the grammar allows, until its cap cuts one: that one gets an error)
    assert isinstance(call, ToolCall) and call.name == "add", first
    arguments = call.arguments
    assert set(arguments) == {"a", "b"} and all(type(v) is int for v in arguments.values())
    assert first.tool_results[0].content == str(arguments["a"] + arguments["b"])
    call_tokens = len(TOK.encode_trusted(f"<tool_call>\n{call.raw}\n</tool_call>"))
    assert call_tokens <= 48, call.raw
    assert result.answer == REQUIRED_ANSWER
    summary["required_first_call_tokens"] = call_tokens
    summary["required_calls"] = len(first.tool_calls)


def task_of(tokens: int) -> str:
    """A user task of about ``tokens`` tokens (one token per word)."""
    return "What is 2 + 3? Use the tool." + " apple" * tokens


async def context_limits(runtime: SGLangRuntime, summary: dict[str, object]) -> None:
    """YaRN accepted; a tool round near the window; SGLang's own limits; a task over it."""
    manager = runtime.engine.tokenizer_manager
    assert runtime.context_length == CONTEXT and manager.context_len == CONTEXT
    near = Agent(
        None,
        runtime=runtime,
        tools=[add],
        policy=Fixed(thinking=False, max_tokens=32768),  # far more than the window has left
        context_window=None,
    )
    result = await near.arun(task_of(3_700))
    check_tool_round(result)
    prompts = [step.usage.prompt_tokens for step in result.steps]
    assert NATIVE + 1_500 < prompts[0] < prompts[-1] < CONTEXT, prompts
    summary["near_limit_prompts"] = prompts

    head = TOK.encode_trusted("<|im_start|>user\nCount.")
    tail = TOK.encode_trusted("<|im_end|>\n<|im_start|>assistant\n")
    apple = TOK.encode(" apple")

    def prompt(tokens: int) -> tuple[int, ...]:
        return tuple([*head, *apple * (tokens - len(head) - len(tail)), *tail])

    sampling = SamplingParams(temperature=0.0, max_tokens=32768)
    longest = CONTEXT - 7  # the longest prompt SGLang's scheduler takes
    generation = await runtime.generate(
        GenerationRequest(prompt_ids=prompt(longest), sampling=sampling)
    )
    assert generation.finish_reason == "length", generation
    assert generation.usage.completion_tokens == CONTEXT - longest - 2
    assert generation.token_ids == SCRIPT[0][: CONTEXT - longest - 2]
    refused: ContextLengthError | None = None
    try:
        await runtime.generate(GenerationRequest(prompt_ids=prompt(longest + 1), sampling=sampling))
    except ContextLengthError as exc:  # no pytest in the SGLang venv
        refused = exc
    assert refused is not None, "a prompt of context - 6 tokens was sent to SGLang"
    assert (refused.prompt_tokens, refused.context_length) == (longest + 1, CONTEXT)
    assert "\n" not in str(refused)

    over = Agent(None, runtime=runtime, tools=[add], policy=Fixed(False), context_window=None)
    result = await over.arun(task_of(4_200))
    assert result.status == "error", result.status
    assert "\n" not in result.detail.strip() and "Shorten the task" in result.detail
    assert str(CONTEXT) in result.detail.replace(",", ""), result.detail


def engine(model_dir: str, port: int, context_length: int | None) -> SGLangRuntime:
    """q3agent's embedded runtime on ``model_dir`` following :data:`SCRIPT`, started now."""
    runtime = SGLangRuntime(
        model_dir,
        tp_size=1,
        context_length=context_length,
        request_options=SGLangRequestOptions(
            custom_logit_processor=scripted_processor_str(), custom_params=script_params(SCRIPT)
        ),
        port=port,  # the engine's own (unused) HTTP port, away from the server tiers'
        **ENGINE_KWARGS,
    )
    started = time.monotonic()
    runtime.start()  # from the main thread: SGLang installs signal handlers while starting
    print(f"engine on {model_dir} ready in {time.monotonic() - started:.0f} s", flush=True)
    return runtime


async def dense_scenarios(runtime: SGLangRuntime, summary: dict[str, object]) -> None:
    """Every async scenario on the dense engine, each timed."""
    for scenario in (tool_rounds, budgets, session_then_required, context_limits):
        started = time.monotonic()
        await scenario(runtime, summary)
        print(f"{scenario.__name__}: {time.monotonic() - started:.1f} s", flush=True)


async def moe_scenarios(runtime: SGLangRuntime, summary: dict[str, object]) -> None:
    """A tool round and a budget cut on the MoE engine."""
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=False))
    check_tool_round(await agent.arun("What is 2 + 3? Use the tool."))
    cut = Agent(None, runtime=runtime, tools=[add], policy=Fixed(True, reasoning_tokens() // 2))
    result = await streamed(cut, "What is 2 + 3? Think, then use the tool.")
    check_tool_round(result)
    assert result.steps[0].hit_budget and result.steps[0].usage.requests == 2
    await runtime.aclose()
    summary["moe"] = "ok"


def main(dense_dir: str, moe_dir: str, port: int) -> None:
    summary: dict[str, object] = {}
    runtime = engine(dense_dir, port, CONTEXT)
    asyncio.run(dense_scenarios(runtime, summary))
    # sync runs on another loop (the agent's portal) after the asyncio.run loop is gone
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=False))
    try:
        for task in ("What is 2 + 3?", "And once more: what is 2 + 3?"):
            check_tool_round(agent.run(task))
    finally:
        agent.close()
    assert runtime.engine is None
    asyncio.run(moe_scenarios(engine(moe_dir, port, None), summary))
    summary["scenarios"] = 15
    print("EMBEDDED-OK " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
