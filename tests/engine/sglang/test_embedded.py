"""The agent on an embedded ``sglang.Engine`` (SGLangRuntime in the same process as the engine).

SGLang runs only under its own venv's Python, so this test runs ``embedded_agent.py`` there
(q3agent and the CPU shims on its path) with one engine for all its scenarios: a scripted tool
call executed and fed back, whole and streamed; thinking cut by its budget, whole and
streamed; two sync ``run()`` calls after the async ones. About 2 minutes (one engine start).
It fails when a shimmed ``sgl_kernel`` function was called.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from q3agent.serving.testing_sglang import (
    engine_env,
    kernel_calls,
    sglang_missing_reason,
    sglang_python,
)
from q3agent.testing.models import QWEN3_CONTEXT, VLLM_CPU_HEAD_DIM, make_tiny_qwen3
from tests.engine.sglang.conftest import TEMPLATE

SCRIPT = Path(__file__).with_name("embedded_agent.py")
PORT = 18051
"""The embedded engine's own port (SGLang picks one even without a server): off the tier's."""


def test_agent_on_the_embedded_engine(tmp_path: Path) -> None:
    reason = sglang_missing_reason()
    if reason:
        pytest.skip(reason)
    if not TEMPLATE.is_file():
        pytest.skip(f"the official Qwen3 chat template is missing at {TEMPLATE}")
    model = make_tiny_qwen3(
        tmp_path / "dense",
        head_dim=VLLM_CPU_HEAD_DIM,
        max_position_embeddings=QWEN3_CONTEXT,
        chat_template=TEMPLATE,
    )
    calls = tmp_path / "sgl_kernel_calls.txt"
    done = subprocess.run(
        [str(sglang_python()), str(SCRIPT), str(model), str(PORT)],
        env=engine_env(tmp_path / "work", calls),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines and lines[-1].startswith("EMBEDDED-OK "), (
        f"the embedded-engine script failed (exit {done.returncode}):\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    summary = json.loads(lines[-1].removeprefix("EMBEDDED-OK "))
    print(f"\nembedded SGLang: {summary}")
    assert summary["scenarios"] == 6
    assert kernel_calls(calls) == [], "SGLang called a shimmed sgl_kernel function"
