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


VLLM_CONTEXT_ERROR = {
    "object": "error",
    "message": "This model's maximum context length is 40960 tokens. However, you requested "
    "33000 tokens (232 in the messages, 32768 in the completion). Please reduce the length.",
    "type": "BadRequestError",
    "code": 400,
}


def test_every_request_failing_is_loud_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from q3agent.testing.http_server import ScriptedHTTPServer

    with ScriptedHTTPServer() as server:
        for _ in range(2):
            server.script.append(("json", 400, VLLM_CONTEXT_ERROR, {}))
        code = main(
            ["eval", "bfcl", "--runtime", "openai", "--base-url", server.url, "--model",
             "Qwen3-8B", "--categories", "simple", "--limit", "2", "--out", str(tmp_path)]
        )  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err
    assert "every entry failed with an inference error" in err
    assert "2 ×" in err and "maximum context length is 40960 tokens" in err
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["inference_errors"] == 2  # the results are still written


def test_presets_print_their_settings_and_record_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.metadata import version

    code = main(
        ["eval", "bfcl", "--runtime", "oracle", "--preset", "report", "--categories", "simple",
         "multi_turn_base", "--limit", "1", "--out", str(tmp_path / "report")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "preset report" in out and "thinking on" in out
    assert "multi-turn 65,536 (YaRN factor 2 over 32,768)" in out
    assert "held-out functions (miss_func): tools block" in out
    scores = json.loads((tmp_path / "report" / "scores.json").read_text())
    assert scores["config"]["sampling"] == "report" and scores["config"]["holdout"] == "tools"
    assert scores["config"]["multi_turn_context_length"] == 65536
    assert scores["data"]["bfcl_eval_version"] == version("bfcl-eval")
    assert set(scores["data"]["per_category_sha256"]) == {"simple", "multi_turn_base"}
    assert len(scores["data"]["sha256"]) == 64
    assert scores["bfcl_decoder"]["categories"]["simple"]["accuracy"] == 1.0

    code = main(
        ["eval", "bfcl", "--runtime", "oracle", "--preset", "bfcl", "--holdout", "tools",
         "--categories", "simple", "--limit", "1", "--out", str(tmp_path / "bfcl")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "sampling bfcl (temperature 0.001, up to 4,096 new tokens" in out
    assert "multi-turn 40,960" in out
    config = json.loads((tmp_path / "bfcl" / "scores.json").read_text())["config"]
    assert config["holdout"] == "tools"  # an explicit option wins over the preset
    assert config["sampling"] == "bfcl" and config["thinking"] == "on"


def test_the_report_preset_runs_multi_turn_on_a_yarn_engine_of_its_own() -> None:
    import argparse

    from q3agent.cli.eval import add_eval_commands, engine_phases, resolve_config
    from q3agent.eval.bfcl_data import MULTI_TURN_CATEGORIES, SINGLE_TURN_CATEGORIES

    parser = argparse.ArgumentParser()
    add_eval_commands(parser.add_subparsers())
    everything = tuple(SINGLE_TURN_CATEGORIES + MULTI_TURN_CATEGORIES)
    report = resolve_config(parser.parse_args(["eval", "bfcl", "--preset", "report"]), everything)
    # single-turn on the engine's own 40,960 window, then an engine started with YaRN at 64K
    assert engine_phases(report) == [(SINGLE_TURN_CATEGORIES, None), (MULTI_TURN_CATEGORIES, 65536)]
    bfcl = resolve_config(parser.parse_args(["eval", "bfcl", "--preset", "bfcl"]), everything)
    assert engine_phases(bfcl) == [(everything, None)]


def test_a_model_outside_the_registry_is_evaluated_with_the_capability_given() -> None:
    """``--capability`` reaches the harness: a fine-tune the registry does not know is
    evaluated as what the user says it is, in single- and multi-turn alike."""
    import argparse

    from q3agent.cli.eval import add_eval_commands, resolve_config
    from q3agent.eval.bfcl_settings import model_capability

    parser = argparse.ArgumentParser()
    add_eval_commands(parser.add_subparsers())
    args = parser.parse_args(
        ["eval", "bfcl", "--model", "my-qwen3-finetune", "--capability", "non_thinking"]
    )
    config = resolve_config(args, ("simple",))
    assert config.model == "my-qwen3-finetune"
    assert config.capability == "non_thinking"
    assert model_capability(config.model, config.capability) == "non_thinking"
