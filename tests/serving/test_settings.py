"""Runtime settings: a request never asks for more tokens than the user's limits allow."""

from __future__ import annotations

import pytest

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import ContextLengthError, GenerationRequest
from q3agent.serving.settings import LimitedRuntime, RuntimeSettings, SettingsError, served_name
from q3agent.testing.runtimes import ScriptedRuntime
from q3agent.types import SamplingParams

pytestmark = pytest.mark.anyio


async def test_limited_runtime_caps_max_tokens_and_fits_the_context(
    tokenizer: Qwen3Tokenizer,
) -> None:
    inner = ScriptedRuntime(["one", "two"], tokenizer=tokenizer)
    runtime = LimitedRuntime(inner, max_tokens=100, context_length=120)
    prompt = tuple(tokenizer.encode_trusted("word " * 40))
    await runtime.generate(GenerationRequest(prompt_ids=prompt, sampling=SamplingParams()))
    # the context is tighter than the cap (one token kept spare, as the engines need)
    assert inner.requests[0].request.sampling.max_tokens == 120 - len(prompt) - 1
    await runtime.generate(GenerationRequest(prompt_ids=prompt[:5]))
    assert inner.requests[1].request.sampling.max_tokens == 100  # the cap is tighter
    with pytest.raises(ContextLengthError, match="no room is left"):
        await runtime.generate(GenerationRequest(prompt_ids=prompt * 4))
    assert runtime.context_length == 120


def test_flags_win_over_the_environment() -> None:
    env = RuntimeSettings.parse(kind="sglang-remote", base_url="http://a", source="environment")
    flags = RuntimeSettings.parse(base_url="http://b", max_tokens="10")
    merged = flags.over(env)
    assert (merged.kind, merged.base_url, merged.max_tokens) == ("sglang-remote", "http://b", 10)
    with pytest.raises(SettingsError, match="choose one of sglang"):
        RuntimeSettings.parse(kind="vllm")


def test_served_name_defaults_to_the_hf_id() -> None:
    assert served_name("qwen3-30b-a3b") == "Qwen/Qwen3-30B-A3B"
    assert served_name("my-finetune") == "my-finetune"
    assert served_name("Qwen3-8B", RuntimeSettings(served_model="x")) == "x"
