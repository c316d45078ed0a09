"""Sync entry points run any number of times, with runtimes that keep HTTP clients."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from q3agent import Agent
from q3agent._sync import SyncPortal
from q3agent.policy.builtin import NeverThink
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.openai_runtime import OpenAICompatibleRuntime
from q3agent.serving.sglang_runtime import RemoteSGLangRuntime
from q3agent.testing.http_server import (
    ScriptedHTTPServer,
    sglang_generate_reply,
    vllm_completion_choice,
)


@pytest.fixture
def server() -> Iterator[ScriptedHTTPServer]:
    with ScriptedHTTPServer() as srv:
        yield srv


def vllm_reply(tok: Qwen3Tokenizer, text: str) -> dict[str, Any]:
    return {"choices": [vllm_completion_choice(tok, text)]}


def sglang_reply(tok: Qwen3Tokenizer, text: str) -> dict[str, Any]:
    return sglang_generate_reply(tok, text, prompt_tokens=20)


@pytest.mark.parametrize("kind", ["openai", "sglang-remote"])
def test_two_sync_runs_in_a_row_on_an_http_runtime(
    server: ScriptedHTTPServer, tokenizer: Qwen3Tokenizer, kind: str
) -> None:
    reply = vllm_reply if kind == "openai" else sglang_reply
    for answer in ("First.", "Second.", "Third."):
        server.script.append(("json", 200, reply(tokenizer, answer), {}))
    runtime = (
        OpenAICompatibleRuntime(server.url, "qwen3", tokenizer=tokenizer)
        if kind == "openai"
        else RemoteSGLangRuntime(server.url, tokenizer=tokenizer)
    )
    agent = Agent(runtime=runtime, policy=NeverThink())
    try:
        assert agent.run("one?").answer == "First."
        assert agent.run("two?").answer == "Second."  # was "Event loop is closed"
        session = agent.session()
        assert session.run("three?").answer == "Third."
    finally:
        agent.close()
    assert len(server.requests) == 3


def test_the_portal_reuses_one_loop_until_closed() -> None:
    portal = SyncPortal()
    seen: list[int] = []

    async def where() -> int:
        return threading.get_ident()

    seen.append(portal.call(where, instead="await where()"))
    seen.append(portal.call(where, instead="await where()"))
    assert seen[0] == seen[1] != threading.get_ident()
    portal.close()
    assert portal.call(where, instead="await where()") != threading.get_ident()  # restarts
    portal.close()


@pytest.mark.anyio
async def test_a_portal_call_inside_a_running_loop_says_to_await() -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError, match="use `await x`"):
        SyncPortal().call(nothing, instead="await x")
