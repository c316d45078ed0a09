"""The context window on SGLang's own CPU engine: a YaRN-extended context, and prompts at its edge.

One extra server serves the whole module: the tiny dense Qwen3 with a native window of 2,048
positions whose ``config.json`` lists YaRN (factor 2 over 2,048, as the Qwen3 cards tell users
to add it), started with the flags q3agent's own :meth:`SGLangRuntime.engine_args` computes for
``context_length=4096``: ``--context-length 4096 --json-model-override-args`` with the YaRN
``rope_scaling`` and ``max_position_embeddings`` raised to 4,096. SGLang derives the context
from ``max_position_embeddings`` once ``original_max_position_embeddings`` is set, so without
q3agent's override it refuses ``--context-length 4096`` at start (``ValueError``: greater than
the derived context_length 2048). With it, the prompts near the limit run at positions
2,048-4,095, which only YaRN's scaled rotary embedding covers, and a window of 4,096 keeps the
near/over-limit prompts cheap (a 41K-token prompt costs minutes here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from q3agent import Agent, tool
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving import ContextLengthError, GenerationRequest, SamplingParams
from q3agent.serving.sglang_runtime import SGLangRuntime
from tests.engine.conftest import Fixed
from tests.engine.sglang.conftest import PORTS, SGLangEngine, SGLangServers, make_yarn_qwen3

pytestmark = pytest.mark.anyio

NATIVE = 2048
"""The tiny model's ``max_position_embeddings`` (its native window)."""
CONTEXT = 4096
"""The window the server is started with: YaRN factor 2 over the native one."""
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>'
ANSWER = "The sum is 5."


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First addend.
        b: Second addend.
    """
    return a + b


@pytest.fixture(scope="module")
def yarn_server(sglang_servers: SGLangServers) -> Iterator[tuple[SGLangEngine, list[str]]]:
    """The module's server (stopping any other main server first) and its YaRN flags."""
    model = make_yarn_qwen3(sglang_servers.scratch / "dense-yarn", native=NATIVE, factor=2.0)

    # q3agent's own YaRN settings for this model (tp_size given: no GPU lookup)
    args = SGLangRuntime(str(model), context_length=CONTEXT, tp_size=1).engine_args()
    flags = [
        "--context-length",
        str(args["context_length"]),
        "--json-model-override-args",
        args["json_model_override_args"],
    ]
    for key in list(sglang_servers.main):  # one main server at a time (RAM)
        other = sglang_servers.main.pop(key)
        if other.server is not None:
            other.server.stop()
    server = sglang_servers.start("dense-yarn", model, port=PORTS["custom"], extra_args=flags)
    try:
        yield SGLangEngine("dense", server.base_url, model, server), flags
    finally:
        server.stop()


@pytest.fixture
def yarn_engine(yarn_server: tuple[SGLangEngine, list[str]]) -> SGLangEngine:
    """The server serving 4,096 tokens with YaRN."""
    return yarn_server[0]


def _task_of(tokens: int) -> str:
    """A user task of about ``tokens`` tokens (one token per word)."""
    return "Add 2 and 3." + " apple" * tokens


async def test_yarn_context_override_is_accepted_at_start(
    yarn_server: tuple[SGLangEngine, list[str]],
) -> None:
    """The server took q3agent's YaRN override; the remote runtime reads the longer window
    from the server and an agent step (a tool call fed back) runs on it."""
    engine, flags = yarn_server
    override = json.loads(flags[flags.index("--json-model-override-args") + 1])
    assert override == {
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 2.0,
            "original_max_position_embeddings": NATIVE,
        },
        "max_position_embeddings": CONTEXT,
    }
    async with httpx.AsyncClient(timeout=60) as client:
        info = (await client.get(f"{engine.base_url}/get_server_info")).json()
    assert info["context_length"] == CONTEXT
    assert json.loads(info["json_model_override_args"]) == override
    runtime = engine.runtime([CALL, ANSWER + "<|im_end|>"])
    assert await runtime.fetch_context_length() == CONTEXT
    agent = Agent(None, runtime=runtime, tools=[add], policy=Fixed(thinking=False))
    try:
        result = await agent.arun("What is 2 + 3? Use the tool.")
    finally:
        await agent.aclose()
    assert result.status == "answer", f"{result.status}: {result.detail}"
    assert [r.content for r in result.steps[0].tool_results] == ["5"]
    assert result.answer == ANSWER


async def test_prompt_near_the_context_limit_is_answered(yarn_engine: SGLangEngine) -> None:
    """A prompt past the native 2,048 positions, close to the 4,096 window, with a step limit
    far above what is left: the request is clamped to fit and the step runs."""
    agent = Agent(
        None,
        runtime=yarn_engine.runtime([ANSWER + "<|im_end|>"]),
        policy=Fixed(thinking=False, max_tokens=32768),  # far more than the context has left
        context_window=None,
    )
    try:
        result = await agent.arun(_task_of(3_950))
    finally:
        await agent.aclose()
    assert result.status == "answer", f"{result.status}: {result.detail}"
    assert result.answer == ANSWER
    assert 3_950 < result.usage.prompt_tokens < CONTEXT


async def test_at_sglangs_own_limits_the_output_is_clamped_or_the_error_is_clear(
    yarn_engine: SGLangEngine,
) -> None:
    """SGLang's scheduler takes prompts up to ``context - 7`` tokens and writes at most
    ``context - prompt - 2``: the longest prompt it takes gets a reply cut there (``length``)
    however many tokens were asked for. One token longer, SGLang would answer HTTP 400 ("Input
    length exceeds the maximum allowed length"); q3agent refuses it before sending with its
    one-line ContextLengthError (it used to send it, counting only ``prompt < context - 1``)."""
    tok = Qwen3Tokenizer.offline()
    head = tok.encode_trusted("<|im_start|>user\nCount.")
    tail = tok.encode_trusted("<|im_end|>\n<|im_start|>assistant\n")
    apple = tok.encode(" apple")
    assert len(apple) == 1

    def prompt(tokens: int) -> tuple[int, ...]:
        return tuple([*head, *apple * (tokens - len(head) - len(tail)), *tail])

    reply = tok.encode_trusted(" ".join(["one"] * 40) + "<|im_end|>")
    runtime = yarn_engine.runtime([reply])
    sampling = SamplingParams(temperature=0.0, max_tokens=32768)
    longest = CONTEXT - 7
    try:
        generation = await runtime.generate(
            GenerationRequest(prompt_ids=prompt(longest), sampling=sampling)
        )
        with pytest.raises(ContextLengthError) as info:
            await runtime.generate(
                GenerationRequest(prompt_ids=prompt(longest + 1), sampling=sampling)
            )
    finally:
        await runtime.aclose()
    assert generation.finish_reason == "length"
    assert generation.usage.prompt_tokens == longest
    assert generation.usage.completion_tokens == CONTEXT - longest - 2
    assert generation.text == tok.decode(reply[: CONTEXT - longest - 2])
    assert (info.value.prompt_tokens, info.value.context_length) == (longest + 1, CONTEXT)
    assert "\n" not in str(info.value)


async def test_prompt_longer_than_the_context_is_a_clear_error(yarn_engine: SGLangEngine) -> None:
    """The agent's run ends with one line naming both sizes and what to do next; nothing is
    sent (q3agent checks against the window the server reported)."""
    agent = Agent(
        None,
        runtime=yarn_engine.runtime([ANSWER + "<|im_end|>"]),
        policy=Fixed(thinking=False),
        context_window=None,
    )
    try:
        result = await agent.arun(_task_of(4_200))
    finally:
        await agent.aclose()
    assert result.status == "error"
    assert "\n" not in result.detail.strip()
    assert str(CONTEXT) in result.detail.replace(",", "")
    assert "context" in result.detail
    assert "Shorten the task" in result.detail
