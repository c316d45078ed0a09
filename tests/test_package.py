"""Promises of the package as a whole: a light import, and examples that run as shipped."""

from __future__ import annotations

import os
import shutil
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


def test_a_server_runtime_does_not_load_httpx_command_line_client() -> None:
    code = (
        "import sys, q3agent\n"
        "from q3agent.serving.openai_runtime import OpenAICompatibleRuntime\n"
        "print(sorted(m for m in ('click', 'rich', 'pygments') if m in sys.modules))\n"
        "import httpx\n"
        "try:\n"
        "    httpx.main(['--help'])\n"
        "except SystemExit as stop:\n"
        "    print(stop.code, 'click' in sys.modules)\n"
    )
    done = run("-c", code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "[]"  # about 0.2-0.4 s of CPU saved in every process
    assert lines[-1] == "0 True"  # httpx's own CLI still runs when asked for


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


def test_deep_research_example_writes_to_a_temp_folder_and_says_where(tmp_path: Path) -> None:
    committed = (ROOT / "examples" / "output" / "deep_research_report.md").read_bytes()
    done = run(str(ROOT / "examples" / "deep_research.py"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    written = [Path(line[len("wrote ") :]) for line in done.stdout.splitlines()
               if line.startswith("wrote ")]  # fmt: skip
    out = written[0].parent
    try:
        assert not list(tmp_path.iterdir())  # nothing in the current folder
        assert ROOT not in out.parents and tmp_path not in out.parents
        report = (out / "deep_research_report.md").read_text()
        assert "## Sources" in report
        assert (out / "deep_research_report.pdf").stat().st_size > 1000
        # repository-relative paths, not this machine's; the committed copy is left alone
        assert str(ROOT) not in report and "`tests/research/fixtures/docs/aurora.md`" in report
        assert (ROOT / "examples" / "output" / "deep_research_report.md").read_bytes() == committed
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_rag_example_needs_a_model_for_your_own_documents(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# Notes\n\nThe launch moved to March.\n")
    done = run(str(ROOT / "examples" / "rag_qa.py"), str(tmp_path), "When is the launch?")
    assert done.returncode != 0
    assert "needs a model" in done.stderr and "--model" in done.stderr
    assert "[1]" not in done.stdout  # no canned, grounded-looking answer


def test_the_mcp_servers_the_examples_use_come_with_the_plain_install() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {dep.split(">")[0].split("=")[0].strip() for dep in project["dependencies"]}
    assert {"mcp-server-time", "mcp-server-git", "mcp-server-fetch"} <= core
