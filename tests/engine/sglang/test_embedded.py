"""The agent on an embedded ``sglang.Engine`` (SGLangRuntime in the same process as the engine).

SGLang runs only under its own venv's Python, so this test runs ``embedded_agent.py`` there
(q3agent and the CPU shims on its path): one dense engine that q3agent starts with a YaRN
window of 4,096 over the model's native 2,048 serves every dense scenario (tool rounds whole
and streamed, thinking within and over its budget, a three-task session on the radix cache,
``tool_choice="required"`` on the unforced model, the context limits, two sync ``run()``
calls), then a MoE engine a tool round and a budget cut; the script's docstring lists them.
About 3 minutes on a quiet machine (two engine starts). It fails when a shimmed
``sgl_kernel`` function was called.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from q3agent.testing.models import QWEN3_CONTEXT, VLLM_CPU_HEAD_DIM, make_tiny_qwen3
from q3agent.testing.sglang_server import (
    engine_env,
    kernel_calls,
    sglang_missing_reason,
    sglang_python,
)
from tests.engine.sglang.conftest import TEMPLATE, make_yarn_qwen3

SCRIPT = Path(__file__).with_name("embedded_agent.py")
PORT = 18051
"""The embedded engine's own port (SGLang picks one even without a server): off the tier's."""


@pytest.mark.timeout(1500)  # two engine starts: minutes each under load
def test_agent_on_the_embedded_engine(tmp_path: Path) -> None:
    reason = sglang_missing_reason()
    if reason:
        pytest.skip(reason)
    if not TEMPLATE.is_file():
        pytest.skip(f"the official Qwen3 chat template is missing at {TEMPLATE}")
    dense = make_yarn_qwen3(tmp_path / "dense-yarn", native=2048, factor=2.0)
    moe = make_tiny_qwen3(
        tmp_path / "moe",
        moe=True,
        seed=1,
        head_dim=VLLM_CPU_HEAD_DIM,
        max_position_embeddings=QWEN3_CONTEXT,
        chat_template=TEMPLATE,
    )
    calls = tmp_path / "sgl_kernel_calls.txt"
    done = subprocess.run(
        [str(sglang_python()), str(SCRIPT), str(dense), str(moe), str(PORT)],
        env=engine_env(tmp_path / "work", calls),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines and lines[-1].startswith("EMBEDDED-OK "), (
        f"the embedded-engine script failed (exit {done.returncode}):\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    summary = json.loads(lines[-1].removeprefix("EMBEDDED-OK "))
    timings = [line for line in lines if " s" in line and not line.startswith("EMBEDDED-OK")]
    print("\n" + "\n".join(timings) + f"\nembedded SGLang: {summary}")
    assert summary["scenarios"] == 15
    assert kernel_calls(calls) == [], "SGLang called a shimmed sgl_kernel function"
