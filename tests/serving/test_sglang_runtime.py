"""Contract tests of the SGLang runtimes: what they send, and how SGLang replies map back.

The embedded runtime runs against a fake ``sglang.Engine`` (sglang needs CUDA); the remote
runtime against a real HTTP server on 127.0.0.1 that answers like SGLang's ``/generate``.
Constraints are checked by compiling the structural tag with the real xgrammar.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import json
import logging
import os
import pickletools
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import xgrammar as xgr
from xgrammar.testing import _is_grammar_accept_string

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving._http import HTTPOptions, RetryPolicy, RuntimeHTTPError, RuntimeTimeoutError
from q3agent.serving.base import (
    GenerationRequest,
    Runtime,
    RuntimeUnavailableError,
    ToolCallConstraint,
)
from q3agent.serving.sglang_runtime import (
    GPUs,
    RemoteSGLangRuntime,
    SGLangRequestOptions,
    SGLangRuntime,
    tool_call_tag_json,
)
from q3agent.testing.http_server import ScriptedHTTPServer
from q3agent.types import SamplingParams

pytestmark = pytest.mark.anyio

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
FAST_RETRY = RetryPolicy(max_retries=3, initial_backoff=0.01, max_backoff=0.05)


def prompt(tok: Qwen3Tokenizer, *, thinking: bool | None = True) -> tuple[int, ...]:
    text = "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    if thinking is False:
        text += "<think>\n\n</think>\n\n"
    return tuple(tok.encode_trusted(text))


def sglang_reply(
    tok: Qwen3Tokenizer,
    text: str,
    *,
    prompt_len: int,
    cached: int = 0,
    finish: dict[str, Any] | None = None,
    include_stop_id: bool = True,
) -> dict[str, Any]:
    """What SGLang returns: ids with the stop id, text without it."""
    finish = finish or {"type": "stop", "matched": tok.im_end_id}
    ids = tok.encode_trusted(text)
    if isinstance(finish.get("matched"), int) and include_stop_id:
        ids.append(finish["matched"])
    return {
        "text": text,
        "output_ids": ids,
        "meta_info": {
            "id": "rid-1",
            "finish_reason": finish,
            "prompt_tokens": prompt_len,
            "completion_tokens": len(ids),
            "cached_tokens": cached,
        },
    }


def stream_chunks(reply: dict[str, Any], *, incremental: bool, step: int = 3) -> list[dict]:
    """The reply as SGLang streams it: cumulative (default) or incremental chunks."""
    ids = reply["output_ids"]
    chunks = []
    previous = 0
    for end in [*range(step, len(ids), step), len(ids)]:
        meta = dict(reply["meta_info"], completion_tokens=end)
        if end < len(ids):
            meta["finish_reason"] = None
        piece = ids[previous:end] if incremental else ids[:end]
        chunks.append({"text": "(ignored)", "output_ids": piece, "meta_info": meta})
        previous = end
    return chunks


# --------------------------------------------------------------------------------------------
# A fake sglang.Engine: records calls, answers from a script, owns a real child process.

_SPAWNED: set[int] = set()


def kill_process_tree(parent_pid: int, include_parent: bool = True, **_: Any) -> None:
    """Like sglang.srt.utils.kill_process_tree: kills every child of ``parent_pid``.

    (Restricted to processes this test module spawned, so a broken scoping cannot hurt
    subprocesses other test modules keep alive.)
    """
    targets = [pid for pid in _SPAWNED if _parent_of(pid) == parent_pid]
    if include_parent and parent_pid != os.getpid():
        targets.append(parent_pid)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _spawn_sleeper() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    _SPAWNED.add(proc.pid)
    return proc


class FakeEngine:
    """Stands in for sglang.Engine: same call shapes, scripted SGLang-shaped replies."""

    def __init__(self, script: deque[Any], **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []
        self.script = script
        self.scheduler = _spawn_sleeper()
        self.shutdown_calls = 0
        atexit.register(self.shutdown)

    def get_all_child_pids(self) -> list[int]:
        return [self.scheduler.pid]

    async def async_generate(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        reply = self.script.popleft()
        if kwargs.get("stream"):

            async def chunks() -> AsyncIterator[dict[str, Any]]:
                for chunk in reply:
                    await asyncio.sleep(0)
                    yield chunk

            return chunks()
        return reply

    def shutdown(self) -> None:
        self.shutdown_calls += 1
        kill_process_tree(os.getpid(), include_parent=False, wait_timeout=60)
        self.scheduler.wait(timeout=10)


def fake_runtime(
    model: str = "Qwen3-30B-A3B", script: deque[Any] | None = None, **kwargs: Any
) -> tuple[SGLangRuntime, deque[Any]]:
    queue: deque[Any] = deque() if script is None else script
    kwargs.setdefault("gpus", GPUs(count=8, memory_gb=80.0))
    runtime = SGLangRuntime(
        model,
        engine_factory=lambda **kw: FakeEngine(queue, **kw),
        tokenizer=Qwen3Tokenizer.offline(),
        **kwargs,
    )
    return runtime, queue


# --------------------------------------------------------------------------------------------
# Embedded engine: configuration


def test_runtime_satisfies_the_protocol() -> None:
    runtime, _ = fake_runtime()
    assert isinstance(runtime, Runtime)
    assert runtime.model_name == "Qwen3-30B-A3B"


def test_engine_args_size_tensor_and_expert_parallelism_from_the_registry() -> None:
    small, _ = fake_runtime("Qwen3-30B-A3B", gpus=GPUs(count=4))
    args = small.engine_args()
    assert args["model_path"] == "Qwen/Qwen3-30B-A3B"
    assert args["tp_size"] == 1  # 61 GB of bf16 weights fit one 80 GB GPU
    assert "ep_size" not in args
    assert args["schedule_policy"] == "lpm"
    assert "disable_radix_cache" not in args
    assert "json_model_override_args" not in args
    assert "enable_custom_logit_processor" not in args

    big, _ = fake_runtime("Qwen3-235B-A22B", gpus=GPUs(count=8))
    args = big.engine_args()
    assert (args["tp_size"], args["ep_size"]) == (8, 8)

    dense, _ = fake_runtime("Qwen3-32B", gpus=GPUs(count=8))
    args = dense.engine_args()
    assert args["tp_size"] == 2
    assert "ep_size" not in args

    pinned, _ = fake_runtime("Qwen3-235B-A22B", tp_size=16, ep_size=1, nnodes=2, node_rank=0)
    args = pinned.engine_args()
    assert args["tp_size"] == 16
    assert "ep_size" not in args
    assert args["nnodes"] == 2


def test_too_few_gpus_is_a_clear_error() -> None:
    runtime, _ = fake_runtime("Qwen3-235B-A22B", gpus=GPUs(count=4))
    with pytest.raises(RuntimeUnavailableError, match=r"needs 8 GPUs of 80 GB.*has 4"):
        runtime.engine_args()


def test_yarn_rope_scaling_only_above_the_native_context() -> None:
    for context, factor in ((32_768, None), (65_536, 2.0), (131_072, 4.0)):
        runtime, _ = fake_runtime("Qwen3-8B", context_length=context, mem_fraction_static=0.8)
        args = runtime.engine_args()
        assert args["context_length"] == context
        assert args["mem_fraction_static"] == 0.8
        if factor is None:
            assert "json_model_override_args" not in args
        else:
            assert json.loads(args["json_model_override_args"]) == {
                "rope_scaling": {
                    "rope_type": "yarn",
                    "factor": factor,
                    "original_max_position_embeddings": 32_768,
                },
                # SGLang derives the context from this once the YaRN original is set
                "max_position_embeddings": context,
            }
    with pytest.raises(ValueError, match="at most 131,072"):
        SGLangRuntime("Qwen3-8B", context_length=200_000)


def test_missing_sglang_names_the_alternatives() -> None:
    if importlib.util.find_spec("sglang") is not None:
        pytest.skip("sglang is installed here")
    runtime = SGLangRuntime("Qwen3-0.6B", tokenizer=Qwen3Tokenizer.offline())
    with pytest.raises(RuntimeUnavailableError) as info:
        runtime.start()
    message = str(info.value)
    for alternative in (
        'pip install "q3agent[sglang]"',
        "RemoteSGLangRuntime",
        "OpenAICompatibleRuntime",
        "TransformersRuntime",
    ):
        assert alternative in message


def test_no_gpu_is_runtime_unavailable() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    runtime = SGLangRuntime(
        "Qwen3-0.6B", engine_factory=lambda **kw: None, tokenizer=Qwen3Tokenizer.offline()
    )
    with pytest.raises(RuntimeUnavailableError, match="no CUDA GPU"):
        runtime.start()


# --------------------------------------------------------------------------------------------
# Embedded engine: requests and replies


async def test_generate_sends_ids_and_sglang_sampling_names(tokenizer: Qwen3Tokenizer) -> None:
    runtime, script = fake_runtime()
    ids = prompt(tokenizer)
    text = "<think>\nParis, so call the tool.\n</think>\n\n" + CALL
    script.append(sglang_reply(tokenizer, text, prompt_len=len(ids), cached=len(ids) - 4))
    sampling = SamplingParams(
        temperature=0.6, top_p=0.95, top_k=20, max_tokens=512, stop=("STOP",), seed=7
    )
    generation = await runtime.generate(
        GenerationRequest(prompt_ids=ids, sampling=sampling, request_id="req-1")
    )
    (call,) = runtime.engine.calls
    rid = call.pop("rid")
    assert rid.startswith("req-1-")  # traceable, yet never reused
    assert call == {
        "input_ids": list(ids),
        "sampling_params": {
            "temperature": 0.6,
            "top_p": 0.95,
            "top_k": 20,
            "min_p": 0.0,
            "presence_penalty": 0.0,
            "repetition_penalty": 1.0,
            "max_new_tokens": 512,
            "stop_token_ids": [tokenizer.im_end_id, tokenizer.eos_id],
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
            "stop": ["STOP"],
            "sampling_seed": 7,
        },
        "stream": False,
    }
    assert generation.text == text
    assert generation.token_ids == (*tokenizer.encode_trusted(text), tokenizer.im_end_id)
    assert generation.finish_reason == "stop"
    assert generation.matched_stop == tokenizer.im_end_id
    usage = generation.usage
    assert (usage.prompt_tokens, usage.cached_tokens) == (len(ids), len(ids) - 4)
    assert usage.completion_tokens == len(generation.token_ids)
    assert usage.reasoning_tokens == len(tokenizer.encode_trusted("\nParis, so call the tool.\n"))
    assert usage.requests == 1
    await runtime.aclose()


async def test_length_finish_and_a_missing_stop_id(tokenizer: Qwen3Tokenizer) -> None:
    runtime, script = fake_runtime()
    ids = prompt(tokenizer)
    script.append(
        sglang_reply(
            tokenizer,
            "<think>\nLet me think",
            prompt_len=len(ids),
            finish={"type": "length", "length": 5},
        )
    )
    script.append(sglang_reply(tokenizer, "Sunny.", prompt_len=len(ids), include_stop_id=False))
    cut = await runtime.generate(GenerationRequest(prompt_ids=ids))
    assert cut.finish_reason == "length"
    assert cut.matched_stop is None
    assert cut.token_ids == tuple(tokenizer.encode_trusted("<think>\nLet me think"))
    assert cut.usage.reasoning_tokens == len(tokenizer.encode_trusted("\nLet me think"))
    done = await runtime.generate(GenerationRequest(prompt_ids=ids))
    assert done.token_ids[-1] == tokenizer.im_end_id  # appended from finish_reason.matched
    await runtime.aclose()


@pytest.mark.parametrize("incremental", [False, True], ids=["cumulative", "incremental"])
async def test_streaming_handles_both_sglang_chunk_formats(
    tokenizer: Qwen3Tokenizer, incremental: bool
) -> None:
    runtime, script = fake_runtime()
    ids = prompt(tokenizer)
    text = "<think>\nThe user wants weather.\n</think>\n\nIt is sunny in Paris."
    reply = sglang_reply(tokenizer, text, prompt_len=len(ids), cached=3)
    script.append(stream_chunks(reply, incremental=incremental))
    chunks = [c async for c in runtime.stream(GenerationRequest(prompt_ids=ids))]
    assert runtime.engine.calls[0]["stream"] is True
    final = chunks[-1].generation
    assert final is not None
    assert all(c.generation is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == text == final.text
    assert [t for c in chunks for t in c.token_ids] == reply["output_ids"]
    assert final.token_ids == tuple(reply["output_ids"])
    assert final.usage.cached_tokens == 3
    assert final.finish_reason == "stop"
    await runtime.aclose()


# --------------------------------------------------------------------------------------------
# Constraint and thinking budget


def _accepts(tag_json: str, text: str) -> bool:
    data = json.loads(tag_json)
    if "structures" in data:  # legacy form, compiled the way SGLang's xgrammar backend does
        grammar = xgr.Grammar.from_structural_tag(
            [
                xgr.StructuralTagItem(
                    begin=s["begin"], schema=json.dumps(s["schema"]), end=s["end"]
                )
                for s in data["structures"]
            ],
            data["triggers"],
        )
    else:
        grammar = xgr.Grammar.from_structural_tag(tag_json)
    return bool(_is_grammar_accept_string(grammar, text))


async def test_required_tool_call_sends_a_structural_tag_that_forces_a_call(
    tokenizer: Qwen3Tokenizer,
) -> None:
    runtime, script = fake_runtime()
    ids = prompt(tokenizer)
    script.append(sglang_reply(tokenizer, CALL, prompt_len=len(ids)))
    constraint = ToolCallConstraint(tools=(WEATHER_TOOL,), required=True)
    await runtime.generate(
        GenerationRequest(prompt_ids=ids, constraint=constraint, enable_thinking=True)
    )
    tag = runtime.engine.calls[0]["sampling_params"]["structural_tag"]
    assert _accepts(tag, "<think>\nI should look it up.\n</think>\n\n" + CALL)
    assert _accepts(tag, "<think>\nTwo cities.\n</think>\n\n" + CALL + "\n" + CALL)
    assert not _accepts(tag, "<think>\nhm\n</think>\n\nIt is sunny.")  # a call is required
    assert not _accepts(tag, "<think>\nhm\n</think>\n\n" + CALL.replace('"Paris"', "3"))
    assert not _accepts(tag, CALL)  # thinking was asked for
    await runtime.aclose()


def test_required_calls_leave_no_room_for_whitespace_runs_or_text() -> None:
    """A JSON grammar with unbounded whitespace let a random model on SGLang (and vLLM) pad
    after ``"arguments": {`` until its token limit (9 of 9 tries at 96 tokens)."""
    required = tool_call_tag_json(
        ToolCallConstraint(tools=(WEATHER_TOOL,), required=True), "disabled"
    )
    assert _accepts(required, CALL.replace('{"city"', '{ "city"'))  # one blank is fine
    assert not _accepts(required, CALL.replace('{"city"', '{  "city"'))
    assert not _accepts(required, CALL.replace('{"city"', '{\n\t\t"city"'))
    assert not _accepts(required, "Sure. " + CALL)  # nothing before the calls
    assert not _accepts(required, CALL + " Done.")  # nor after them
    assert _accepts(required, CALL + "\n" + CALL)


def test_structural_tag_follows_the_prompts_thinking_state(tokenizer: Qwen3Tokenizer) -> None:
    required = ToolCallConstraint(tools=(WEATHER_TOOL,), required=True)
    optional = ToolCallConstraint(tools=(WEATHER_TOOL,), required=False)
    # non-thinking prompt (ends with the empty think block): the call comes straight away
    assert _accepts(tool_call_tag_json(required, "disabled"), CALL)
    # enable_thinking=None: thinking may or may not come first
    tag = tool_call_tag_json(required, "optional")
    assert _accepts(tag, CALL)
    assert _accepts(tag, "<think>\nok\n</think>\n\n" + CALL)
    # the prompt opened <think>: the completion continues it
    assert _accepts(tool_call_tag_json(required, "open"), "go\n</think>\n\n" + CALL)
    # not required: free text is fine, but a started call must match the schema
    tag = tool_call_tag_json(optional, "disabled")
    assert _accepts(tag, "It is sunny.")
    assert _accepts(tag, "Let me check. " + CALL)
    assert not _accepts(tag, "Let me check. " + CALL.replace("get_weather", "get_time"))
    legacy = tool_call_tag_json(optional, "disabled", legacy=True)
    assert set(json.loads(legacy)) == {"type", "structures", "triggers"}
    assert _accepts(legacy, "Sure. " + CALL)
    assert not _accepts(legacy, CALL.replace('"Paris"', "3"))


async def test_thinking_budget_processor_is_attached_when_it_can_act(
    tokenizer: Qwen3Tokenizer,
) -> None:
    runtime, script = fake_runtime(
        request_options=SGLangRequestOptions(
            enable_thinking_budget_processor=True, thinking_budget=64
        )
    )
    assert runtime.engine_args()["enable_custom_logit_processor"] is True
    ids = prompt(tokenizer)
    for _ in range(3):
        script.append(sglang_reply(tokenizer, "Sunny.", prompt_len=len(ids)))
    await runtime.generate(GenerationRequest(prompt_ids=ids), thinking_budget=128)
    await runtime.generate(GenerationRequest(prompt_ids=ids))
    # a prompt that already holds </think> (non-thinking mode): the processor would stand down
    await runtime.generate(GenerationRequest(prompt_ids=prompt(tokenizer, thinking=False)))
    first, second, third = runtime.engine.calls
    assert first["sampling_params"]["custom_params"] == {"thinking_budget": 128}
    assert second["sampling_params"]["custom_params"] == {"thinking_budget": 64}
    assert "custom_logit_processor" not in third
    assert "custom_params" not in third["sampling_params"]
    # the processor travels as SGLang's CustomLogitProcessor.to_str(): a pickled class reference
    payload = json.loads(first["custom_logit_processor"])
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(bytes.fromhex(payload["callable"]))]
    globals_ = [arg for name, arg in ops if name in ("GLOBAL", "STACK_GLOBAL")]
    strings = [arg for _, arg in ops if isinstance(arg, str)]
    assert (
        "sglang.srt.sampling.custom_logit_processor Qwen3ThinkingBudgetLogitProcessor" in globals_
        or {"sglang.srt.sampling.custom_logit_processor", "Qwen3ThinkingBudgetLogitProcessor"}
        <= set(strings)
    )
    await runtime.aclose()


# --------------------------------------------------------------------------------------------
# Shutdown: only the engine's processes


async def test_aclose_kills_the_engines_processes_but_not_other_children(
    tokenizer: Qwen3Tokenizer,
) -> None:
    mcp_server = _spawn_sleeper()  # stands for an MCP stdio server the agent started
    try:
        runtime, _ = fake_runtime()
        runtime.start()
        engine = runtime.engine
        scheduler = engine.scheduler
        assert scheduler.poll() is None
        await runtime.aclose()
        assert engine.shutdown_calls == 1
        assert scheduler.poll() is not None  # the engine's scheduler is gone
        assert mcp_server.poll() is None  # the other child survived
        await runtime.aclose()  # idempotent
        assert engine.shutdown_calls == 1
    finally:
        mcp_server.kill()
        mcp_server.wait()


# --------------------------------------------------------------------------------------------
# Remote server


@pytest.fixture
def server() -> Iterator[ScriptedHTTPServer]:
    with ScriptedHTTPServer() as srv:
        yield srv


async def test_remote_posts_native_generate_and_maps_the_reply(
    server: ScriptedHTTPServer, tokenizer: Qwen3Tokenizer
) -> None:
    ids = prompt(tokenizer, thinking=False)
    reply = sglang_reply(tokenizer, CALL, prompt_len=len(ids), cached=len(ids))
    server.script.append(("json", 200, reply, {}))
    runtime = RemoteSGLangRuntime(
        server.url,
        api_key="sk-test",
        tokenizer=tokenizer,
        request_options=SGLangRequestOptions(
            enable_thinking_budget_processor=True, thinking_budget=32
        ),
    )
    constraint = ToolCallConstraint(tools=(WEATHER_TOOL,), required=True)
    generation = await runtime.generate(
        GenerationRequest(prompt_ids=ids, constraint=constraint, enable_thinking=False)
    )
    await runtime.aclose()
    path, headers, body = server.requests[0]
    assert path == "/generate"
    assert headers["authorization"] == "Bearer sk-test"
    assert body["input_ids"] == list(ids)
    assert body["stream"] is False
    assert body["sampling_params"]["max_new_tokens"] == 32768
    assert "custom_logit_processor" not in body  # the prompt closed thinking
    assert _accepts(body["sampling_params"]["structural_tag"], CALL)
    assert generation.text == CALL
    assert generation.usage.cached_tokens == len(ids) == generation.usage.prompt_tokens


@pytest.mark.parametrize("incremental", [False, True], ids=["cumulative", "incremental"])
async def test_remote_streams_sse(
    server: ScriptedHTTPServer, tokenizer: Qwen3Tokenizer, incremental: bool
) -> None:
    ids = prompt(tokenizer)
    text = "<think>\nEasy.\n</think>\n\nSunny, 21 °C, in Paris."
    reply = sglang_reply(tokenizer, text, prompt_len=len(ids))
    server.script.append(("sse", [*stream_chunks(reply, incremental=incremental), "[DONE]"]))
    runtime = RemoteSGLangRuntime(server.url, tokenizer=tokenizer)
    chunks = [c async for c in runtime.stream(GenerationRequest(prompt_ids=ids))]
    await runtime.aclose()
    assert server.requests[0][2]["stream"] is True
    assert "".join(c.text for c in chunks) == text
    final = chunks[-1].generation
    assert final is not None
    assert final.text == text
    assert final.token_ids == tuple(reply["output_ids"])


async def test_remote_retries_429_and_503_honouring_retry_after(
    server: ScriptedHTTPServer, tokenizer: Qwen3Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    ids = prompt(tokenizer)
    server.script.extend(
        [
            ("json", 429, {"error": "busy"}, {"Retry-After": "0.05"}),
            ("json", 503, {"error": "warming up"}, {}),
            ("json", 200, sglang_reply(tokenizer, "Sunny.", prompt_len=len(ids)), {}),
        ]
    )
    runtime = RemoteSGLangRuntime(
        server.url, tokenizer=tokenizer, http=HTTPOptions(retry=FAST_RETRY)
    )
    with caplog.at_level(logging.WARNING, logger="q3agent.serving.http"):
        generation = await runtime.generate(GenerationRequest(prompt_ids=ids))
    await runtime.aclose()
    assert generation.text == "Sunny."
    assert len(server.requests) == 3
    assert "answered 429; retry 1/3 in 0.05 s (Retry-After)" in caplog.text
    assert "answered 503; retry 2/3" in caplog.text
    assert "(backoff)" in caplog.text


async def test_remote_gives_up_with_the_servers_message(
    server: ScriptedHTTPServer, tokenizer: Qwen3Tokenizer
) -> None:
    server.script.append(("json", 400, {"error": "max_new_tokens too large"}, {}))
    runtime = RemoteSGLangRuntime(
        server.url, tokenizer=tokenizer, http=HTTPOptions(retry=FAST_RETRY)
    )
    with pytest.raises(RuntimeHTTPError, match=r"HTTP 400.*max_new_tokens too large") as info:
        await runtime.generate(GenerationRequest(prompt_ids=prompt(tokenizer)))
    await runtime.aclose()
    assert info.value.status_code == 400
    assert len(server.requests) == 1


async def test_remote_timeout_is_a_clear_error(
    server: ScriptedHTTPServer, tokenizer: Qwen3Tokenizer
) -> None:
    server.script.append(("sleep", 1.0))
    runtime = RemoteSGLangRuntime(server.url, tokenizer=tokenizer, http=HTTPOptions(timeout=0.2))
    with pytest.raises(RuntimeTimeoutError, match=r"did not answer within 0.2 s.*timeout="):
        await runtime.generate(GenerationRequest(prompt_ids=prompt(tokenizer)))
    await runtime.aclose()
    assert len(server.requests) == 1  # a read timeout is not retried


async def test_connection_refused_is_runtime_unavailable(tokenizer: Qwen3Tokenizer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    runtime = RemoteSGLangRuntime(
        f"http://127.0.0.1:{port}", tokenizer=tokenizer, http=HTTPOptions(retry=FAST_RETRY)
    )
    with pytest.raises(RuntimeUnavailableError, match=r"Could not reach .* after 4 attempts"):
        await runtime.generate(GenerationRequest(prompt_ids=prompt(tokenizer)))
    await runtime.aclose()


async def test_remote_reads_the_context_and_clamps_max_new_tokens(
    tokenizer: Qwen3Tokenizer,
) -> None:
    info = {"model_path": "Qwen/Qwen3-8B", "is_generation": True, "context_length": 300}
    with ScriptedHTTPServer(get_routes={"/get_model_info": info}) as srv:
        ids = prompt(tokenizer)
        srv.script.append(("json", 200, sglang_reply(tokenizer, "Ok.", prompt_len=len(ids)), {}))
        runtime = RemoteSGLangRuntime(srv.url, tokenizer=tokenizer)
        await runtime.generate(GenerationRequest(prompt_ids=ids))
        await runtime.aclose()
    # SGLang's scheduler writes at most context - prompt - 2 tokens (fit_to_sglang)
    assert srv.requests[0][2]["sampling_params"]["max_new_tokens"] == 300 - len(ids) - 2
    assert runtime.context_length == 300


async def test_router_drops_constraints_so_they_go_to_a_worker_or_are_warned(
    tokenizer: Qwen3Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    ids = prompt(tokenizer, thinking=False)
    constraint = ToolCallConstraint(tools=(WEATHER_TOOL,), required=True)
    with ScriptedHTTPServer() as router, ScriptedHTTPServer() as worker:
        for srv in (router, router, worker):
            srv.script.append(("json", 200, sglang_reply(tokenizer, CALL, prompt_len=9), {}))
        direct = RemoteSGLangRuntime(router.url, tokenizer=tokenizer, constrained_url=worker.url)
        await direct.generate(GenerationRequest(prompt_ids=ids, constraint=constraint))
        await direct.generate(GenerationRequest(prompt_ids=ids))  # unconstrained: the router
        await direct.aclose()
        assert len(worker.requests) == 1 and "structural_tag" in str(worker.requests[0][2])
        warned = RemoteSGLangRuntime(router.url, tokenizer=tokenizer, router=True)
        with caplog.at_level(logging.WARNING, logger="q3agent.serving.sglang"):
            await warned.generate(GenerationRequest(prompt_ids=ids, constraint=constraint))
        await warned.aclose()
    assert len(router.requests) == 2
    assert "sglang-router drops structural_tag" in caplog.text


def test_gpus_to_plan_for_must_exist() -> None:
    with pytest.raises(ValueError, match="count >= 1"):
        GPUs(count=0)
    with pytest.raises(ValueError, match="memory_gb > 0"):
        GPUs(count=1, memory_gb=0)
