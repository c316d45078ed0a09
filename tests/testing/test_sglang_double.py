"""The SGLang runtimes against an engine-faithful SGLang double (SGLang needs CUDA).

The double rejects what SGLang's tokenizer manager and scheduler reject (context overflow, a
prompt past the scheduler's input limit, a rid in flight), caps the output where the scheduler
does, and trims what its detokenizer trims (a matched stop id's text), so these tests fail exactly
where a real SGLang engine would.
"""

from __future__ import annotations

import pytest

from q3agent import Agent
from q3agent.policy.builtin import AlwaysThink, NeverThink
from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import ContextLengthError, GenerationRequest
from q3agent.serving.budget import BudgetedGeneration, TextDelta, generate_with_budget
from q3agent.serving.sglang_runtime import GPUs, SGLangRuntime
from q3agent.testing.sglang_double import SGLangEngineDouble
from q3agent.types import SamplingParams

pytestmark = pytest.mark.anyio


def runtime_on(double: SGLangEngineDouble) -> SGLangRuntime:
    return SGLangRuntime(
        "Qwen3-8B",
        engine_factory=lambda **kw: double,
        tokenizer=double.tokenizer,
        gpus=GPUs(count=1, memory_gb=80.0),
    )


def user_prompt(tok: Qwen3Tokenizer, words: int = 10) -> tuple[int, ...]:
    text = "<|im_start|>user\n" + "word " * words + "<|im_end|>\n<|im_start|>assistant\n"
    return tuple(tok.encode_trusted(text))


async def test_the_double_refuses_what_sglang_refuses(tokenizer: Qwen3Tokenizer) -> None:
    double = SGLangEngineDouble(["Hi."] * 3, context_length=100, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"The input \(100 tokens\) is longer"):
        await double.async_generate(list(range(100)), {"max_new_tokens": 1})
    with pytest.raises(ValueError, match="Requested token count exceeds"):  # > context, not ==
        await double.async_generate(list(range(50)), {"max_new_tokens": 51})
    await double.async_generate([1, 2], {"max_new_tokens": 5}, rid="a")
    await double.async_generate([1, 2], {"max_new_tokens": 5}, rid="a")  # finished: reusable
    chunks = await double.async_generate([1, 2], {"max_new_tokens": 5}, rid="b", stream=True)
    await chunks.__anext__()
    with pytest.raises(ValueError, match="Duplicate request ID detected: b"):  # in flight
        await double.async_generate([1, 2], {"max_new_tokens": 5}, rid="b")
    await chunks.aclose()


async def test_the_double_refuses_and_caps_where_sglangs_scheduler_does(
    tokenizer: Qwen3Tokenizer,
) -> None:
    """SGLang 0.5.23: input limit context - 6 (validate_input_length), output context - p - 2."""
    double = SGLangEngineDouble(["word " * 200] * 2, context_length=100, tokenizer=tokenizer)
    fits = await double.async_generate(list(range(50)), {"max_new_tokens": 50})  # total == context
    assert len(fits["output_ids"]) == 100 - 50 - 2
    assert fits["meta_info"]["finish_reason"] == {"type": "length", "length": 48}
    with pytest.raises(ValueError, match=r"Input length \(94 tokens\) exceeds .* \(94 tokens\)"):
        await double.async_generate(list(range(94)), {"max_new_tokens": 1})
    chunks = [c async for c in await double.async_generate(list(range(95)), {}, stream=True)]
    assert [c["meta_info"]["finish_reason"]["type"] for c in chunks] == ["abort"]
    assert chunks[0]["meta_info"]["finish_reason"]["status_code"] == 400
    assert chunks[0]["output_ids"] == [] and chunks[0]["text"] == ""
    last = await double.async_generate(list(range(93)), {})  # the longest prompt it takes
    assert len(last["output_ids"]) == 5


async def test_the_double_caches_what_radix_attention_caches(tokenizer: Qwen3Tokenizer) -> None:
    """Measured on SGLang 0.5.23 (tests/engine/sglang/test_double_contract.py)."""
    double = SGLangEngineDouble(["Alpha beta.", *["x"] * 4], tokenizer=tokenizer)
    first = user_prompt(tokenizer, 3)
    out = (await double.async_generate(list(first), {}))["output_ids"]
    again = await double.async_generate(list(first), {"max_new_tokens": 1})
    assert again["meta_info"]["cached_tokens"] == len(first) - 1  # never the whole prompt
    second = [*first, *out, *tokenizer.encode_trusted("\n<|im_start|>user\nmore<|im_end|>\n")]
    reply = await double.async_generate(second, {"max_new_tokens": 1})
    assert reply["meta_info"]["cached_tokens"] == len(first) + len(out) - 1  # not the last id
    await double.async_generate(list(user_prompt(tokenizer, 7)), {"max_new_tokens": 1})
    older = await double.async_generate(list(first), {"max_new_tokens": 1})
    assert older["meta_info"]["cached_tokens"] == len(first) - 1  # not only the last request


async def test_a_long_prompt_gets_what_the_context_has_left(tokenizer: Qwen3Tokenizer) -> None:
    """SGLang refuses prompt + max_new_tokens >= context; 32,768 new tokens broke ~8K prompts."""
    double = SGLangEngineDouble(["Done."], context_length=40_960, tokenizer=tokenizer)
    runtime = runtime_on(double)
    prompt = user_prompt(tokenizer, words=9_000)
    generation = await runtime.generate(GenerationRequest(prompt_ids=prompt))
    assert runtime.context_length == 40_960  # read from the engine, as from a real one
    await runtime.aclose()
    assert generation.text == "Done."
    sent = double.calls[0]["sampling_params"]["max_new_tokens"]
    assert sent == 40_960 - len(prompt) - 2  # SGLang's scheduler writes no more (fit_to_sglang)


async def test_a_prompt_that_fills_the_context_is_a_clear_typed_error(
    tokenizer: Qwen3Tokenizer,
) -> None:
    double = SGLangEngineDouble(["never"], context_length=1_000, tokenizer=tokenizer)
    runtime = runtime_on(double)
    with pytest.raises(ContextLengthError, match=r"has 1,\d{3} tokens and the context") as info:
        await runtime.generate(GenerationRequest(prompt_ids=user_prompt(tokenizer, 1_200)))
    await runtime.aclose()
    assert info.value.context_length == 1_000
    assert "context_length" in str(info.value)  # says what to do
    assert double.calls == []  # never reaches the engine as a raw ValueError


async def test_an_agent_run_over_the_context_ends_with_status_error(
    tokenizer: Qwen3Tokenizer,
) -> None:
    double = SGLangEngineDouble(["never"], context_length=600, tokenizer=tokenizer)
    agent = Agent(runtime=runtime_on(double), policy=NeverThink(), context_window=None)
    result = await agent.arun("Summarise: " + "long text " * 400)
    await agent.aclose()
    assert result.status == "error"
    assert "no room is left to generate" in result.detail
    assert isinstance(result.error, ContextLengthError)


async def test_a_thinking_step_within_budget_is_one_request_with_reasoning_and_answer(
    tokenizer: Qwen3Tokenizer,
) -> None:
    double = SGLangEngineDouble(
        ["<think>\nParis is the capital.\n</think>\n\nParis."], tokenizer=tokenizer
    )
    agent = Agent(runtime=runtime_on(double), policy=AlwaysThink(budget=64))
    result = await agent.arun("Capital of France?")
    await agent.aclose()
    assert result.status == "answer"
    assert result.answer == "Paris."
    assert result.reasoning == "Paris is the capital."
    assert len(double.calls) == 1
    assert result.steps[0].usage.requests == 1
    assert not result.steps[0].hit_budget


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
async def test_a_budget_hit_continues_with_the_early_stop_text_under_a_new_rid(
    tokenizer: Qwen3Tokenizer, stream: bool
) -> None:
    tok = tokenizer
    thinking = "<think>\n" + "Consider each option in turn. " * 20 + "\n</think>\n\n"
    double = SGLangEngineDouble([thinking + "Option B.", "Option B."], tokenizer=tok)
    runtime = runtime_on(double)
    request = GenerationRequest(
        prompt_ids=user_prompt(tok), sampling=SamplingParams(max_tokens=500), request_id="step-0"
    )
    deltas: list[str] = []
    result: BudgetedGeneration | None = None
    async for item in generate_with_budget(runtime, request, 16, stream=stream):
        if isinstance(item, TextDelta):
            deltas.append(item.text)
        else:
            result = item
    await runtime.aclose()
    assert result is not None and result.hit_budget and result.requests == 2
    first, second = double.calls
    assert first["rid"] != second["rid"]
    assert first["rid"].startswith("step-0") and second["rid"].startswith("step-0")
    # one streamed request, cut after <think> + the budget's 16 tokens, then the continuation
    assert first["stream"] is True
    assert tuple(second["input_ids"][len(first["input_ids"]) :][:17]) == result.token_ids[:17]
    assert tok.decode(result.token_ids[17:]).startswith("\n\n" + EARLY_STOP_TEXT)
    assert EARLY_STOP_TEXT in result.text
    assert result.text.endswith("Option B.")
    assert result.usage.reasoning_tokens <= 16
    if stream:
        assert "".join(deltas) == result.text
