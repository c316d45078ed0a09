"""``q3agent eval bfcl`` end to end with the oracle runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from q3agent.cli.eval import main

pytest.importorskip("bfcl_eval", reason="bfcl-eval not installed: pip install --no-deps bfcl-eval")


def test_eval_bfcl_writes_scores_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["eval", "bfcl", "--runtime", "noisy-oracle", "--categories", "simple",
         "multi_turn_base", "--limit", "2", "--thinking", "policy", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "simple" in out
    assert "OVERALL" in out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["categories"]["simple"]["accuracy"] == 1.0
    assert scores["categories"]["multi_turn_base"]["accuracy"] == 1.0
    assert (tmp_path / "multi_turn_base.jsonl").read_text().count("\n") == 2


def test_budget_sweep_prints_accuracy_per_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["eval", "bfcl", "--runtime", "noisy-oracle", "--categories", "parallel",
         "--limit", "3", "--thinking-budget", "8,512", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "Thinking budget sweep" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("8 ", "512"))]
    assert [row[0] for row in rows] == ["8", "512"]
    assert all(float(row[1]) == 100.0 for row in rows)
    short = [json.loads(x) for x in (tmp_path / "budget-8" / "parallel.jsonl").open()]
    assert all("Considering the limited time" in r["raw_output"] for r in short)


def test_unknown_category_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "bfcl", "--runtime", "oracle", "--categories", "simpel"]) == 2
    assert "unknown BFCL category 'simpel'" in capsys.readouterr().err
