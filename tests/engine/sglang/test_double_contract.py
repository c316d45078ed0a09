"""SGLangEngineDouble's contract, checked against SGLang's own engine: the same requests go to
the real server's ``/generate`` and to the double, and what the double promises (stop trimming,
finish reasons, radix-cache counts, refusals, rid reuse) must be what the engine does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.testing.sglang_double import SGLangEngineDouble
from q3agent.testing.sglang_server import script_params, scripted_processor_str
from tests.engine.sglang.conftest import SGLangEngine

pytestmark = pytest.mark.anyio

REPLY = "Alpha beta gamma. STOP here."


def _real(engine: SGLangEngine, ids: list[int], params: dict[str, Any], **extra: Any) -> Any:
    tok = Qwen3Tokenizer.offline()
    body = {
        "input_ids": ids,
        "sampling_params": {
            "skip_special_tokens": False,
            "custom_params": script_params([tok.encode_trusted(REPLY + "<|im_end|>")]),
            **params,
        },
        "custom_logit_processor": scripted_processor_str(),
        **extra,
    }
    reply = httpx.post(f"{engine.base_url}/generate", json=body, timeout=300)
    return reply.json() if reply.status_code == 200 else (reply.status_code, reply.json())


async def test_the_double_answers_as_the_engine_does(sglang_dense: SGLangEngine) -> None:
    tok = Qwen3Tokenizer.offline()
    double = SGLangEngineDouble(lambda ids: REPLY, tokenizer=tok)
    sglang_dense.flush_cache()
    unique = "<|im_start|>user\nzebra quartz contract check<|im_end|>\n<|im_start|>assistant\n"
    first = tok.encode_trusted(unique)
    cases: list[tuple[list[int], dict[str, Any]]] = [
        (first, {"max_new_tokens": 30, "stop_token_ids": [tok.im_end_id]}),  # stop id
        (first, {"max_new_tokens": 30, "stop": ["STOP"]}),  # stop string, identical prompt
        (first, {"max_new_tokens": 3}),  # length
    ]
    for ids, params in cases:
        real = _real(sglang_dense, ids, params)
        fake = await double.async_generate(ids, dict(params))
        assert fake["output_ids"] == real["output_ids"], params
        assert fake["text"] == real["text"], params
        for key in ("finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens"):
            assert fake["meta_info"][key] == real["meta_info"][key], (key, params)
    # the next turn: the earlier prompt and reply, less its last id, come from the cache
    out = (await double.async_generate(first, {"stop_token_ids": [tok.im_end_id]}))["output_ids"]
    _real(sglang_dense, first, {"stop_token_ids": [tok.im_end_id]})
    second = [*first, *out, *tok.encode_trusted("\n<|im_start|>user\nmore<|im_end|>\n")]
    real = _real(sglang_dense, second, {"max_new_tokens": 1})
    fake = await double.async_generate(second, {"max_new_tokens": 1})
    assert fake["meta_info"]["cached_tokens"] == real["meta_info"]["cached_tokens"]
    assert real["meta_info"]["cached_tokens"] == len(first) + len(out) - 1
    # refusals: same messages (the server answers 400 with the engine's ValueError text)
    for ids, params in [(first * 4000, {"max_new_tokens": 1}), (first, {"max_new_tokens": 40_960})]:
        status, body = _real(sglang_dense, ids, params)
        assert status == 400
        with pytest.raises(ValueError, match="context length") as info:
            await double.async_generate(ids, dict(params))
        assert str(info.value) == body["error"]["message"]
    # a finished request's rid may be reused
    assert "output_ids" in _real(sglang_dense, first, {"max_new_tokens": 1}, rid="contract-1")
    assert "output_ids" in _real(sglang_dense, first, {"max_new_tokens": 1}, rid="contract-1")
