"""TransformersRuntime end to end on tiny random Qwen3 dense and MoE models."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema  # type: ignore[import-untyped]
import pytest

from q3agent.qwen3.models import get_model
from q3agent.qwen3.thinking import count_reasoning_tokens
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import (
    Generation,
    GenerationRequest,
    Runtime,
    RuntimeUnavailableError,
    ToolCallConstraint,
)
from q3agent.serving.transformers_runtime import TransformersRuntime, tool_call_xgrammar_tag
from q3agent.types import SamplingParams

pytestmark = pytest.mark.anyio

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "metric": {"type": "boolean"},
            },
            "required": ["city", "days"],
        },
    },
}
CONVERT: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "convert",
        "parameters": {
            "type": "object",
            "properties": {
                "unit": {"type": "string", "enum": ["km", "mi"]},
                "value": {"type": "integer", "minimum": 0, "maximum": 99},
            },
            "required": ["unit", "value"],
        },
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, CONVERT)}


def user_turn(tok: Qwen3Tokenizer, text: str, *, first: bool = False) -> list[int]:
    """A user turn and the non-thinking assistant header, as the Qwen3 template renders them."""
    head = "<|im_start|>user\n" if first else "\n<|im_start|>user\n"
    return [
        *tok.encode_trusted(head),
        *tok.encode(text),
        *tok.encode_trusted("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ]


def request(ids: list[int] | tuple[int, ...], **sampling: Any) -> GenerationRequest:
    return GenerationRequest(prompt_ids=tuple(ids), sampling=GREEDY.with_(**sampling))


@pytest.fixture(scope="module")
def runtime(tiny_model_dir: Path) -> TransformersRuntime:
    return TransformersRuntime(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def no_reuse(tiny_model_dir: Path) -> TransformersRuntime:
    return TransformersRuntime(tiny_model_dir, device="cpu", prefix_cache=False)


@pytest.fixture
def prompt(runtime: TransformersRuntime) -> list[int]:
    return user_turn(runtime.tokenizer, "What is the weather in Paris?", first=True)


async def collect(chunks: AsyncIterator[Any]) -> list[Any]:
    return [chunk async for chunk in chunks]


async def test_is_a_runtime_named_after_its_directory(
    runtime: TransformersRuntime, tiny_model_dir: Path
) -> None:
    assert isinstance(runtime, Runtime)
    assert runtime.model_name == tiny_model_dir.name
    assert runtime.tokenizer.im_end_id == 151645
    assert runtime.spec == get_model(tiny_model_dir)  # the registry accepts model directories
    assert runtime.spec.name == tiny_model_dir.name and runtime.spec.num_key_value_heads == 2


async def test_greedy_is_deterministic_and_matches_a_run_without_cache(
    runtime: TransformersRuntime, no_reuse: TransformersRuntime, prompt: list[int]
) -> None:
    first = await runtime.generate(request(prompt))
    again = await runtime.generate(request(prompt))  # served from the kept cache
    cold = await no_reuse.generate(request(prompt))
    assert first.token_ids == again.token_ids == cold.token_ids
    assert first.text == runtime.tokenizer.decode(first.token_ids)
    assert again.usage.cached_tokens == len(prompt) - 1  # one token is always prefilled
    assert cold.usage.cached_tokens == 0


async def test_seeded_sampling_is_reproducible(
    runtime: TransformersRuntime, prompt: list[int]
) -> None:
    sampled = SamplingParams(temperature=1.0, top_p=0.95, top_k=50, max_tokens=10)
    a = await runtime.generate(GenerationRequest(tuple(prompt), sampled.with_(seed=7)))
    b = await runtime.generate(GenerationRequest(tuple(prompt), sampled.with_(seed=7)))
    c = await runtime.generate(GenerationRequest(tuple(prompt), sampled.with_(seed=8)))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


async def test_top_k_one_is_greedy(runtime: TransformersRuntime, prompt: list[int]) -> None:
    greedy = await runtime.generate(request(prompt))
    topk1 = await runtime.generate(request(prompt, temperature=1.5, top_k=1, seed=3))
    assert topk1.token_ids == greedy.token_ids


async def test_max_tokens_ends_with_length(runtime: TransformersRuntime, prompt: list[int]) -> None:
    result = await runtime.generate(request(prompt, max_tokens=5))
    assert result.finish_reason == "length"
    assert len(result.token_ids) == result.usage.completion_tokens == 5
    assert result.usage.prompt_tokens == len(prompt)


async def test_the_runtimes_own_max_tokens_caps_every_request(
    tiny_model_dir: Path, prompt: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from q3agent import Agent

    monkeypatch.delenv("Q3AGENT_MAX_TOKENS", raising=False)
    capped = TransformersRuntime(tiny_model_dir, device="cpu", max_tokens=4)
    result = await capped.generate(request(prompt, max_tokens=50))
    assert result.finish_reason == "length"
    assert len(result.token_ids) == result.usage.completion_tokens == 4
    assert Agent(runtime=capped).completion_limit(capped) == 4  # the agent's default follows
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        TransformersRuntime(tiny_model_dir, max_tokens=0)


async def test_stream_chunks_concatenate_to_the_final_text(
    runtime: TransformersRuntime, prompt: list[int]
) -> None:
    sampling = dict(temperature=0.9, seed=11, max_tokens=16)
    chunks = await collect(runtime.stream(request(prompt, **sampling)))
    final = chunks[-1].generation
    assert isinstance(final, Generation)
    assert all(c.generation is None for c in chunks[:-1])
    assert len(chunks) > 2
    assert "".join(c.text for c in chunks) == final.text
    assert sum((c.token_ids for c in chunks), ()) == final.token_ids
    assert final == await runtime.generate(request(prompt, **sampling))


async def test_stop_string_cuts_the_text_and_keeps_the_completing_token(
    runtime: TransformersRuntime, prompt: list[int]
) -> None:
    free = await runtime.generate(request(prompt, max_tokens=20))
    stop = free.text[6:9]
    assert len(stop) == 3
    cut = free.text.index(stop)
    result = await runtime.generate(request(prompt, max_tokens=20, stop=("never-there", stop)))
    assert result.finish_reason == "stop"
    assert result.matched_stop == stop
    assert result.text == free.text[:cut]
    # the ids run up to and including the token that completed the stop string
    assert free.token_ids[: len(result.token_ids)] == result.token_ids
    decoded = runtime.tokenizer.decode(result.token_ids)
    assert stop in decoded and stop not in runtime.tokenizer.decode(result.token_ids[:-1])

    chunks = await collect(runtime.stream(request(prompt, max_tokens=20, stop=(stop,))))
    assert "".join(c.text for c in chunks) == result.text
    assert chunks[-1].generation.token_ids == result.token_ids


async def test_stop_token_id_is_returned_and_decoded(
    runtime: TransformersRuntime, prompt: list[int]
) -> None:
    free = await runtime.generate(request(prompt, max_tokens=20))
    stop_id = free.token_ids[4]
    end = free.token_ids.index(stop_id) + 1
    result = await runtime.generate(request(prompt, max_tokens=20, stop_token_ids=(stop_id,)))
    assert result.finish_reason == "stop"
    assert result.matched_stop == stop_id
    assert result.token_ids == free.token_ids[:end]
    assert result.text == runtime.tokenizer.decode(free.token_ids[:end])


async def test_ten_step_append_only_conversation_prefills_only_new_tokens(
    runtime: TransformersRuntime, no_reuse: TransformersRuntime
) -> None:
    tok = runtime.tokenizer
    await runtime.clear_cache()
    ids = user_turn(tok, "Plan a trip.", first=True)
    new: list[int] = []
    for step in range(10):
        warm = await runtime.generate(request(ids, max_tokens=6))
        cold = await no_reuse.generate(request(ids, max_tokens=6))
        assert warm.token_ids == cold.token_ids, f"step {step}: reuse changed the output"
        if step == 0:
            assert warm.usage.cached_tokens == 0
        else:
            # everything up to the previous step's last generated token was cached
            assert warm.usage.cached_tokens == len(ids) - len(new) - 1
            assert warm.usage.prefilled_tokens == len(new) + 1
        assert cold.usage.prefilled_tokens == len(ids)
        new = [
            *tok.encode_trusted("<|im_end|>\n<|im_start|>user\n<tool_response>\n"),
            *tok.encode(f"result {step}: " + "lorem ipsum " * step),
            *tok.encode_trusted("\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
        ]
        ids = [*ids, *warm.token_ids, *new]


async def test_divergent_prompt_crops_the_cache_to_the_common_prefix(
    runtime: TransformersRuntime, no_reuse: TransformersRuntime
) -> None:
    tok = runtime.tokenizer
    history = user_turn(tok, "Summarise the report about rivers.", first=True)
    first = await runtime.generate(request(history))
    assert runtime.cached_token_ids == (*history, *first.token_ids[:-1])
    shared = history[:5]
    other = [*shared, *tok.encode("a different question entirely")]
    assert other[5] != history[5]
    result = await runtime.generate(request(other))
    assert result.usage.cached_tokens == 5
    assert result.token_ids == (await no_reuse.generate(request(other))).token_ids
    # a brand-new conversation shares nothing and starts a fresh cache
    fresh = user_turn(tok, "Hello", first=False)
    assert (await runtime.generate(request(fresh))).usage.cached_tokens == 0


async def test_concurrent_requests_are_serialised(
    runtime: TransformersRuntime, no_reuse: TransformersRuntime
) -> None:
    tok = runtime.tokenizer
    prompts = [user_turn(tok, text, first=True) for text in ("one", "two", "three")]
    expected = [(await no_reuse.generate(request(p))).token_ids for p in prompts]
    results: dict[int, Generation] = {}

    async def run(i: int) -> None:
        results[i] = await runtime.generate(request(prompts[i]))

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(run, i)
    assert [results[i].token_ids for i in range(3)] == expected


async def test_moe_model_generates_and_reuses_its_cache(tiny_moe_model_dir: Path) -> None:
    warm = TransformersRuntime(tiny_moe_model_dir, device="cpu")
    cold = TransformersRuntime(tiny_moe_model_dir, device="cpu", prefix_cache=False)
    assert warm.spec.is_moe and warm.spec.num_experts == 8
    tok = warm.tokenizer
    ids = user_turn(tok, "Route me to an expert.", first=True)
    for _ in range(3):
        a = await warm.generate(request(ids, max_tokens=8))
        b = await cold.generate(request(ids, max_tokens=8))
        assert a.token_ids == b.token_ids
        ids = [*ids, *a.token_ids, *user_turn(tok, "and again")]
    assert a.usage.cached_tokens > 0
    assert a.usage.prefilled_tokens < b.usage.prefilled_tokens
    await warm.aclose()
    assert warm.cached_token_ids == ()
    await cold.aclose()


def parse_calls(
    tok: Qwen3Tokenizer, ids: tuple[int, ...], *, finished: bool = True
) -> list[dict[str, Any]]:
    """The tool calls in a completion, split on the ``<tool_call>`` control ids.

    A completion cut by ``max_tokens`` (``finished=False``) may end inside a call.
    """
    calls = []
    start = None
    for i, tid in enumerate(ids):
        if tid == tok.tool_call_id:
            start = i + 1
        elif tid == tok.tool_call_end_id:
            assert start is not None, "</tool_call> without <tool_call>"
            body = tok.decode(ids[start:i])
            assert body.startswith("\n") and body.endswith("\n")
            calls.append(json.loads(body))
            start = None
    assert start is None or not finished, "unterminated tool call"
    return calls


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_required_constraint_makes_a_random_model_emit_schema_valid_calls(
    runtime: TransformersRuntime, prompt: list[int], seed: int
) -> None:
    tok = runtime.tokenizer
    result = await runtime.generate(
        GenerationRequest(
            prompt_ids=tuple(prompt),
            sampling=SamplingParams(
                temperature=1.0, top_p=1.0, top_k=40, seed=seed, max_tokens=160
            ),
            constraint=ToolCallConstraint(tools=(WEATHER, CONVERT), required=True),
        )
    )
    assert result.token_ids[0] == tok.tool_call_id
    finished = result.finish_reason == "stop"
    # parallel calls are allowed, so a random model may keep calling until max_tokens
    calls = parse_calls(tok, result.token_ids, finished=finished)
    assert calls
    for call in calls:
        assert set(call) == {"name", "arguments"}
        jsonschema.validate(call["arguments"], SCHEMAS[call["name"]])
    # the text is what the Qwen3 chat template renders for these calls
    rendered = "\n".join(
        call_text(c["name"], json.dumps(c["arguments"], ensure_ascii=False)) for c in calls
    )
    if finished:
        assert result.token_ids[-1] in (tok.im_end_id, tok.eos_id)
        assert result.text == rendered
    else:
        assert result.text.startswith(rendered + "\n<tool_call>")


async def test_optional_constraint_leaves_text_free_but_checks_calls(
    runtime: TransformersRuntime, prompt: list[int]
) -> None:
    tok = runtime.tokenizer
    for seed in range(3):
        result = await runtime.generate(
            GenerationRequest(
                prompt_ids=tuple(prompt),
                sampling=SamplingParams(temperature=1.0, seed=seed, max_tokens=30),
                constraint=ToolCallConstraint(tools=(WEATHER,), required=False),
            )
        )
        # no think tags may appear after the closed think block; calls that start are valid
        assert tok.think_id not in result.token_ids
        assert tok.think_end_id not in result.token_ids
        if result.finish_reason == "stop":
            for call in parse_calls(tok, result.token_ids):
                jsonschema.validate(call["arguments"], SCHEMAS["get_weather"])


def _accepts(tok: Qwen3Tokenizer, tag: Any, ids: list[int]) -> bool:
    import xgrammar as xgr

    from q3agent.serving.transformers_runtime import _xgrammar_tokenizer_info

    compiler = xgr.GrammarCompiler(_xgrammar_tokenizer_info(tok, 151936))
    matcher = xgr.GrammarMatcher(compiler.compile_structural_tag(tag))
    return all(matcher.accept_token(i) for i in ids) and matcher.is_terminated()


def call_text(name: str, arguments: str) -> str:
    """A tool call as the Qwen3 chat template writes it."""
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


KM3 = call_text("convert", '{"unit": "km", "value": 3}')
YD3 = call_text("convert", '{"unit": "yd", "value": 3}')


@pytest.mark.parametrize(
    ("thinking", "completion", "ok"),
    [
        ("disabled", KM3, True),
        ("disabled", YD3, False),
        ("disabled", "Sure. " + KM3, False),
        ("disabled", KM3 + "\n" + KM3, True),
        ("open", "let me think\n</think>\n\n" + KM3, True),
        ("open", KM3, False),
        ("required", "<think>\nhmm\n</think>\n\n" + KM3, True),
        ("required", KM3, False),
        ("optional", KM3, True),
        ("optional", "<think>\nhmm\n</think>\n\n" + KM3, True),
    ],
)
def test_tool_call_grammar_follows_the_thinking_state(
    tokenizer: Qwen3Tokenizer, thinking: str, completion: str, ok: bool
) -> None:
    tag = tool_call_xgrammar_tag(
        ToolCallConstraint(tools=(CONVERT,), required=True), tokenizer, thinking=thinking
    )
    ids = [*tokenizer.encode_trusted(completion), tokenizer.im_end_id]
    assert _accepts(tokenizer, tag, ids) is ok


def test_optional_grammar_rejects_split_spelled_tags_only_inside_calls(
    tokenizer: Qwen3Tokenizer,
) -> None:
    tag = tool_call_xgrammar_tag(ToolCallConstraint(tools=(CONVERT,), required=False), tokenizer)
    text_then_call = "I will convert it.\n" + KM3
    assert _accepts(
        tokenizer, tag, [*tokenizer.encode_trusted(text_then_call), tokenizer.im_end_id]
    )
    bad_args = text_then_call.replace('"km"', '"parsec"')
    assert not _accepts(tokenizer, tag, [*tokenizer.encode_trusted(bad_args), tokenizer.im_end_id])


def test_reasoning_tokens_are_counted_up_to_the_closing_tag(tokenizer: Qwen3Tokenizer) -> None:
    think = tokenizer.encode_trusted("<think>\nstep one, step two\n</think>\n\nAnswer.")
    inner = len(tokenizer.encode_trusted("\nstep one, step two\n"))
    assert count_reasoning_tokens(think, tokenizer, prompt_open=False) == inner
    continued = tokenizer.encode_trusted("still thinking\n</think>\n\nDone.")
    assert count_reasoning_tokens(continued, tokenizer, prompt_open=True) == len(
        tokenizer.encode_trusted("still thinking\n")
    )
    unfinished = tokenizer.encode_trusted("thinking without end")
    assert count_reasoning_tokens(unfinished, tokenizer, prompt_open=True) == len(unfinished)
    assert (
        count_reasoning_tokens(tokenizer.encode("plain answer"), tokenizer, prompt_open=False) == 0
    )


async def test_reasoning_usage_counts_a_budget_cut_thinking_step(
    runtime: TransformersRuntime,
) -> None:
    tok = runtime.tokenizer
    thinking_prompt = [
        *tok.encode_trusted("<|im_start|>user\n"),
        *tok.encode("Think about it."),
        *tok.encode_trusted("<|im_end|>\n<|im_start|>assistant\n<think>\n"),
    ]
    result = await runtime.generate(request(thinking_prompt, max_tokens=7))
    if tok.think_end_id not in result.token_ids:
        assert result.usage.reasoning_tokens == 7


async def test_missing_weights_say_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    missing = TransformersRuntime("Qwen3-0.6B")
    assert missing.model_name == "Qwen3-0.6B"
    with pytest.raises(RuntimeUnavailableError, match=r"huggingface-cli download Qwen/Qwen3-0\.6B"):
        await missing.generate(request([1, 2, 3]))
    with pytest.raises(RuntimeUnavailableError, match="does not exist"):
        await TransformersRuntime(tmp_path / "no-such-model").generate(request([1, 2, 3]))
    with pytest.raises(RuntimeUnavailableError, match=r"no config\.json"):
        _ = TransformersRuntime(tmp_path).tokenizer


async def test_empty_and_out_of_vocabulary_prompts_are_rejected(
    runtime: TransformersRuntime,
) -> None:
    with pytest.raises(ValueError, match="empty"):
        await runtime.generate(request([]))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        await runtime.generate(request([1, 10**7]))
