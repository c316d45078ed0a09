"""The embedded SGLang engine on a real GPU with real Qwen3 weights (skipped elsewhere).

Run with ``pytest -m gpu tests/serving/test_sglang_gpu.py``. The model is
``$Q3AGENT_TEST_MODEL`` (a local directory or an HF id in the cache), default
``Qwen/Qwen3-0.6B`` when it is in the Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import GenerationRequest, ToolCallConstraint
from q3agent.types import SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.anyio]


def _model_or_skip() -> str:
    if importlib.util.find_spec("sglang") is None:
        pytest.skip("sglang is not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model = os.environ.get("Q3AGENT_TEST_MODEL", "Qwen/Qwen3-0.6B")
    if Path(model).expanduser().is_dir():
        return model
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(model, local_files_only=True))
    except Exception as exc:
        pytest.skip(f"weights for {model} are not in the HF cache ({type(exc).__name__})")


async def test_engine_generates_reuses_the_prefix_and_constrains_calls() -> None:
    from q3agent.serving.sglang_runtime import SGLangRuntime

    path = _model_or_skip()
    tok = Qwen3Tokenizer.from_pretrained(path)
    runtime = SGLangRuntime(path, mem_fraction_static=0.6, tokenizer=tok)
    try:
        text = (
            "<|im_start|>user\nWhat is 2+2? Answer with one number.<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        )
        ids = tuple(tok.encode_trusted(text))
        sampling = SamplingParams(temperature=0.0, max_tokens=16)
        first = await runtime.generate(GenerationRequest(prompt_ids=ids, sampling=sampling))
        assert "4" in first.text
        assert first.finish_reason == "stop"
        assert first.token_ids[-1] == tok.im_end_id
        again = await runtime.generate(GenerationRequest(prompt_ids=ids, sampling=sampling))
        assert again.usage.cached_tokens > 0  # RadixAttention served the repeated prompt

        tool = {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"],
                },
            },
        }
        constrained = await runtime.generate(
            GenerationRequest(
                prompt_ids=ids,
                sampling=SamplingParams(temperature=0.0, max_tokens=64),
                constraint=ToolCallConstraint(tools=(tool,), required=True),
                enable_thinking=False,
            )
        )
        assert constrained.text.startswith('<tool_call>\n{"name": "add", "arguments": {')
        chunks = [
            c async for c in runtime.stream(GenerationRequest(prompt_ids=ids, sampling=sampling))
        ]
        assert chunks[-1].generation is not None
        assert "".join(c.text for c in chunks) == chunks[-1].generation.text
    finally:
        await runtime.aclose()
