"""What each request of a BFCL run asks for under the named settings (sampling and context)."""

from __future__ import annotations

import anyio
import pytest

from q3agent.eval.bfcl_data import load_category
from q3agent.eval.bfcl_runner import EvalConfig, run_bfcl
from q3agent.eval.bfcl_settings import request_max_tokens
from q3agent.testing.runtimes import ScriptedRuntime

pytest.importorskip("bfcl_eval", reason="bfcl-eval not installed: pip install --no-deps bfcl-eval")


def test_bfcl_sampling_asks_for_what_bfcls_handler_asks_for() -> None:
    entry = load_category("simple", 1)[0]
    runtime = ScriptedRuntime(["No call."])
    config = EvalConfig(sampling="bfcl", thinking="on", context_length=40_960)
    anyio.run(lambda: run_bfcl(runtime, config, entries=[entry]))
    sent = runtime.requests[0].request.sampling
    assert sent.temperature == 0.001 and sent.top_k == -1 and sent.top_p == 1.0
    assert sent.max_tokens == 4096


def test_report_sampling_never_asks_beyond_the_context() -> None:
    entry = load_category("simple", 1)[0]
    runtime = ScriptedRuntime(["No call."])
    config = EvalConfig(thinking="on", context_length=1000)
    anyio.run(lambda: run_bfcl(runtime, config, entries=[entry]))
    request = runtime.requests[0].request
    assert request.sampling.temperature == 0.6
    assert request.sampling.max_tokens == 1000 - len(request.prompt_ids) - 1


def test_context_rules() -> None:
    # BFCL's handler: min(4096, context - prompt - 2); 1,000 once the prompt fills the context
    assert request_max_tokens("bfcl", 4096, 38_000, 40_960) == 40_960 - 38_000 - 2
    assert request_max_tokens("bfcl", 4096, 40_959, 40_960) == 1000
    assert request_max_tokens("report", 32_768, 9_000, 40_960) == 40_960 - 9_000 - 1
    with pytest.raises(ValueError, match="raise --context-length"):
        request_max_tokens("report", 32_768, 41_000, 40_960)
