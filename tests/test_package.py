"""Promises of the package as a whole: a light import, and examples that run as shipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sglang", "chromadb", "sentence_transformers", "mcp")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("Q3AGENT_")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=240, env=env, cwd=cwd
    )


def test_importing_q3agent_and_building_an_agent_loads_no_heavy_library() -> None:
    code = (
        "import sys, q3agent\n"
        "from q3agent import Agent, ScriptedRuntime, tool\n"
        "from q3agent.loop import run_task\n"
        "Agent(runtime=ScriptedRuntime(['hi'])).run('hello')\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = run("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("quickstart.py", "359.72 euros"),
        ("multi_turn_tools.py", "state: ['buy milk', 'call Ada']"),
        ("mcp_tools.py", "time.get_current_time"),
        ("rag_qa.py", "removed citations of sources never retrieved: [7]"),
    ],
)
def test_examples_run_as_shipped(example: str, expected: str) -> None:
    done = run(str(ROOT / "examples" / example))
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout


def test_deep_research_example_writes_its_report(tmp_path: Path) -> None:
    done = run(str(ROOT / "examples" / "deep_research.py"), "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / "deep_research_report.md").read_text()
    assert "## Sources" in report
    assert (tmp_path / "deep_research_report.pdf").stat().st_size > 1000
