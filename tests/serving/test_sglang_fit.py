"""SGLang's own context limits, applied before a request is sent (:func:`fit_to_sglang`)."""

from __future__ import annotations

import pytest

from q3agent.serving import ContextLengthError, GenerationRequest, SamplingParams
from q3agent.serving.sglang_runtime import SGLANG_INPUT_RESERVE, fit_to_sglang


def _request(prompt: int, max_tokens: int = 32_768) -> GenerationRequest:
    return GenerationRequest(
        prompt_ids=tuple(range(prompt)), sampling=SamplingParams(max_tokens=max_tokens)
    )


def test_the_longest_prompt_sglang_takes_gets_what_its_scheduler_lets_it_write() -> None:
    fitted = fit_to_sglang(_request(4089), 4096)
    assert fitted.sampling.max_tokens == 5  # SGLang cuts at context - prompt - 2
    assert fit_to_sglang(_request(100, 16), 4096).sampling.max_tokens == 16
    assert fit_to_sglang(_request(100), 4096, max_tokens=64).sampling.max_tokens == 64


@pytest.mark.parametrize("prompt", [4096 - SGLANG_INPUT_RESERVE, 4094, 4095, 5000])
def test_a_prompt_sglang_would_refuse_is_a_context_error(prompt: int) -> None:
    with pytest.raises(ContextLengthError) as info:
        fit_to_sglang(_request(prompt), 4096, model="tiny")
    assert (info.value.prompt_tokens, info.value.context_length) == (prompt, 4096)


def test_an_unknown_context_leaves_the_request_alone() -> None:
    request = _request(10_000)
    assert fit_to_sglang(request, None) == request
