"""``tool_choice="required"`` on a real vLLM CPU server with an unforced random model.

No script and no ``logit_bias``: the tiny random Qwen3 writes whatever vLLM's grammar backend
lets it under q3agent's tool-call structural tag (``structured_outputs``). The tag's whitespace
cap (``max_whitespace_cnt``) must make even this model close a small tool's call within a few
dozen tokens; unbounded, JSON whitespace let such a model pad after ``"arguments": {`` until its
token limit. The same test runs on SGLang in ``tests/engine/sglang/test_remote_agent.py``.
"""

from __future__ import annotations

import json

import pytest

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving import GenerationRequest, SamplingParams, ToolCallConstraint
from tests.engine.conftest import Engine

pytestmark = pytest.mark.anyio

ADD_SCHEMA = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
HEAD = '<tool_call>\n{"name": "add", "arguments": '


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_required_tool_choice_makes_an_unforced_random_model_call_at_once(
    dense: Engine, seed: int
) -> None:
    """q3agent's completions request with the required-call constraint: a complete,
    schema-valid call within 48 tokens of a 64-token limit."""
    tok = Qwen3Tokenizer.offline()
    runtime = dense.runtime()
    prompt = tok.encode_trusted(
        "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    sampling = SamplingParams(temperature=1.0, top_p=1.0, top_k=-1, max_tokens=64, seed=seed)
    constraint = ToolCallConstraint(tools=(ADD_SCHEMA,), required=True)
    try:
        generation = await runtime.generate(
            GenerationRequest(prompt_ids=tuple(prompt), sampling=sampling, constraint=constraint)
        )
    finally:
        await runtime.aclose()
    text = generation.text
    assert text.startswith(HEAD), text
    assert "}\n</tool_call>" in text, f"the call never closed in 64 tokens: {text!r}"
    arguments = json.loads(text[len(HEAD) : text.index("}\n</tool_call>")])
    assert set(arguments) == {"a", "b"} and all(isinstance(v, int) for v in arguments.values())
    assert len(tok.encode_trusted(text[: text.index("</tool_call>")])) <= 48
