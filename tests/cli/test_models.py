"""``q3agent models``: the registry as a table a 100-column terminal shows whole."""

from __future__ import annotations

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
