"""What each runtime declares through the protocol: capabilities, completion cap, context."""

from __future__ import annotations

import pytest

from q3agent.serving._http import HTTPOptions, RetryPolicy
from q3agent.serving.base import Runtime, RuntimeCapabilities, RuntimeWrapper
from q3agent.serving.openai_runtime import OpenAICompatibleRuntime
from q3agent.serving.settings import LimitedRuntime
from q3agent.serving.sglang_runtime import RemoteSGLangRuntime, SGLangRequestOptions
from q3agent.testing import FunctionRuntime, ScriptedRuntime

pytestmark = pytest.mark.anyio


async def test_openai_runtime_declares_what_its_mode_supports() -> None:
    ids = OpenAICompatibleRuntime("http://127.0.0.1:9/v1", "m", engine_budget=True)
    chat = OpenAICompatibleRuntime("http://127.0.0.1:9/v1", "m", chat=True)
    plain = OpenAICompatibleRuntime("http://127.0.0.1:9/v1", "m", extended_sampling=False)
    assert ids.capabilities == RuntimeCapabilities(True, True, True)
    assert chat.capabilities == RuntimeCapabilities(False, True, False)
    assert plain.capabilities == RuntimeCapabilities(True, False, False)
    for runtime in (ids, chat, plain):
        assert isinstance(runtime, Runtime)
        await runtime.aclose()


async def test_remote_sglang_behind_a_router_has_no_in_engine_budget() -> None:
    direct = RemoteSGLangRuntime("http://127.0.0.1:9", engine_budget=True)
    routed = RemoteSGLangRuntime("http://127.0.0.1:9", engine_budget=True, router=True)
    pinned = RemoteSGLangRuntime(
        "http://127.0.0.1:9", engine_budget=True, router=True, constrained_url="http://w:1"
    )
    assert direct.capabilities.engine_budget and pinned.capabilities.engine_budget
    assert not routed.capabilities.engine_budget
    assert routed.capabilities.tool_call_constraint
    for runtime in (direct, routed, pinned):
        await runtime.aclose()


async def test_grouped_options_reach_the_runtime() -> None:
    retry = RetryPolicy(max_retries=1)
    runtime = RemoteSGLangRuntime(
        "http://127.0.0.1:9",
        http=HTTPOptions(timeout=5.0, retry=retry, headers={"X-Test": "1"}),
        request_options=SGLangRequestOptions(enable_thinking_budget_processor=True),
        context_length=4096,
        max_tokens=64,
    )
    assert runtime.retry is retry and runtime._client.headers["X-Test"] == "1"
    assert runtime._codec_().thinking_budget_processor
    assert (runtime.context_length, await runtime.fetch_context_length()) == (4096, 4096)
    assert runtime.max_tokens == 64
    await runtime.aclose()


async def test_wrappers_pass_the_declarations_through() -> None:
    inner = ScriptedRuntime(context_length=1000)
    wrapped = RuntimeWrapper(inner)
    assert wrapped.capabilities == inner.capabilities == RuntimeCapabilities()
    assert (wrapped.context_length, await wrapped.fetch_context_length()) == (1000, 1000)
    assert wrapped.max_tokens is None
    limited = LimitedRuntime(inner, max_tokens=50, context_length=500)
    assert (limited.max_tokens, limited.context_length) == (50, 500)
    assert LimitedRuntime(FunctionRuntime(lambda r: "x")).max_tokens is None


def test_a_bad_prompt_format_is_refused() -> None:
    with pytest.raises(ValueError, match="prompt_format"):
        OpenAICompatibleRuntime("http://127.0.0.1:9/v1", "m", prompt_format="xml")  # type: ignore[arg-type]
