"""Long multi-turn BFCL entries through a runtime that enforces the context as SGLang does.

``SGLangEngineDouble`` rejects ``prompt + max_new_tokens >= context`` exactly as SGLang's
tokenizer manager does; before the harness sized requests to the context, every step of
``multi_turn_long_context`` whose prompt passed 8,192 tokens asked for 32,768 new tokens on a
40,960-token engine and was scored as an inference error.
"""

from __future__ import annotations

import anyio
import pytest

from q3agent.eval.bfcl_data import load_category
from q3agent.eval.bfcl_runner import EvalConfig, run_bfcl
from q3agent.eval.bfcl_settings import PRESETS
from q3agent.eval.oracle import OracleRuntime
from q3agent.serving.sglang_runtime import GPUs, SGLangRuntime
from q3agent.testing.sglang_double import SGLangEngineDouble

pytest.importorskip("bfcl_eval", reason="bfcl-eval not installed: pip install --no-deps bfcl-eval")

LONG_ENTRY = "multi_turn_long_context_8"


def _run(context: int, config: EvalConfig) -> tuple[SGLangEngineDouble, bool]:
    entry = next(e for e in load_category("multi_turn_long_context", 9) if e.id == LONG_ENTRY)
    oracle = OracleRuntime()
    double = SGLangEngineDouble(oracle.completion_for, context_length=context)
    runtime = SGLangRuntime(
        "Qwen3-8B",
        context_length=context if context > 40_960 else None,
        engine_factory=lambda **kw: double,
        tokenizer=double.tokenizer,
        gpus=GPUs(count=1, memory_gb=80.0),
    )
    report = anyio.run(lambda: run_bfcl(runtime, config, entries=[entry]))
    result = report.results[0]
    assert not result.inference_error, result.verdict.error
    return double, result.verdict.valid


@pytest.mark.parametrize("preset", ["report", "bfcl"])
def test_long_context_entry_runs_within_the_engines_context(preset: str) -> None:
    values = PRESETS[preset]
    config = EvalConfig(
        thinking="on",
        sampling=values.sampling,
        holdout=values.holdout,
        context_length=values.context_length,
        multi_turn_context_length=values.multi_turn_context_length,
    )
    double, valid = _run(values.multi_turn_context_length, config)
    assert valid
    longest = max(len(call["input_ids"]) for call in double.calls)
    assert longest > 8192
    for call in double.calls:
        asked = len(call["input_ids"]) + call["sampling_params"]["max_new_tokens"]
        assert asked < double.context_length
    if preset == "bfcl":
        assert max(c["sampling_params"]["max_new_tokens"] for c in double.calls) == 4096
