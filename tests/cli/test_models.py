"""``q3agent models``: the registry as a table a 100-column terminal shows whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from q3agent.qwen3.models import model_names
from tests.cli.conftest import Cli


def test_models_shows_every_name_whole_at_100_columns(q3agent: Cli) -> None:
    done = q3agent("models", env={"COLUMNS": "100"})

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("Qwen3-")}
    assert set(model_names()) <= set(rows)
    assert rows["Qwen3-30B-A3B-Instruct-2507"][-1] == "never"
    assert rows["Qwen3-4B-Thinking-2507"][-1] == "always"
    assert rows["Qwen3-8B"][-2:] == ["32K/128K", "hybrid"]


def test_names_stay_whole_on_a_narrow_terminal(q3agent: Cli) -> None:
    done = q3agent("models", env={"COLUMNS": "70"})
    assert done.returncode == 0, done.stderr
    assert "Qwen3-235B-A22B-Thinking-2507" in done.stdout


def test_piped_output_keeps_every_row_whole() -> None:
    """``q3agent models > file`` (no terminal, no COLUMNS): rows are not folded at 80."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS" and not k.startswith("Q3AGENT_")}
    done = subprocess.run(
        [sys.executable, "-m", "q3agent.cli", "models"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = {
        line.split()[0]: line.split()
        for line in done.stdout.splitlines()
        if line.startswith("Qwen3-")
    }
    assert rows["Qwen3-0.6B"][-1] == "hybrid"
    assert rows["Qwen3-8B"][-2:] == ["32K/128K", "hybrid"]


def test_models_json_is_one_object_on_stdout(q3agent: Cli) -> None:
    done = q3agent("models", "--json")
    assert done.returncode == 0 and done.stderr == ""
    report = json.loads(done.stdout)
    rows = {row["name"]: row for row in report["models"]}
    assert set(model_names()) <= set(rows)
    assert rows["Qwen3-8B"]["thinking"] == "hybrid" and report["gpu_memory_gb"] == 80.0
