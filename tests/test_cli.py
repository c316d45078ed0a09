"""The q3agent command line, run as a user would (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def q3agent(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "Q3AGENT_RUNTIME": ""}
    return subprocess.run(
        [sys.executable, "-m", "q3agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def test_run_with_a_script_prints_steps_tool_calls_answer_and_usage(tmp_path: Path) -> None:
    tools = tmp_path / "cli_tools.py"
    tools.write_text(
        "from q3agent import tool\n\n"
        "@tool\n"
        "def multiply(a: int, b: int) -> int:\n"
        '    """Multiply.\n\n    Args:\n        a: First.\n        b: Second.\n    """\n'
        "    return a * b\n"
    )
    call = json.dumps({"name": "multiply", "arguments": {"a": 17, "b": 23}})
    script = tmp_path / "script.jsonl"
    script.write_text(
        json.dumps("<think>\nMultiply them.\n</think>\n\n<tool_call>\n" + call + "\n</tool_call>")
        + "\n"
        + json.dumps({"completion": "17 × 23 = 391."})
        + "\n"
    )
    trace = tmp_path / "trace.jsonl"
    done = q3agent(
        "run",
        "What is 17*23?",
        "--script",
        str(script),
        "--tools",
        "cli_tools:multiply",
        "--trace",
        str(trace),
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "step 0" in out and "planning the task" in out
    assert "Multiply them." in out  # reasoning shown
    assert "→ multiply" in out and "← 391" in out
    assert "17 × 23 = 391." in out
    assert "answer · 2 steps" in out
    assert [json.loads(line)["type"] for line in trace.read_text().splitlines()] == [
        "step",
        "step",
        "run",
    ]


def test_run_without_gpu_or_weights_says_what_to_do(tmp_path: Path) -> None:
    done = q3agent("run", "hello", "--model", "Qwen3-30B-A3B", cwd=tmp_path)

    assert done.returncode == 2
    text = done.stdout + done.stderr
    assert "No runtime can serve 'Qwen3-30B-A3B'" in text
    assert "q3agent[sglang]" in text and "Q3AGENT_BASE_URL" in text


def test_models_lists_the_registry() -> None:
    done = q3agent("models")

    assert done.returncode == 0, done.stderr
    for name in ("Qwen3-0.6B", "Qwen3-30B-A3B", "Qwen3-235B-A22B", "Instruct-2507"):
        assert name in done.stdout


@pytest.mark.parametrize("bad", [["run"], ["nonsense"]])
def test_bad_usage_exits_with_argparse_error(bad: list[str]) -> None:
    done = q3agent(*bad)
    assert done.returncode == 2
    assert "usage:" in done.stderr
