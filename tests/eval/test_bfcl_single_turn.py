"""Single-turn BFCL through the harness: oracle and noisy oracle score 100%, wrong answers fail."""

from __future__ import annotations

import json

import anyio
import pytest

from q3agent.eval.bfcl_data import SINGLE_TURN_CATEGORIES, load_category, resolve_categories
from q3agent.eval.bfcl_runner import EvalConfig, run_bfcl
from q3agent.eval.oracle import (
    PROMPT_MODE_UNSATISFIABLE,
    UNSATISFIABLE,
    NoisyOracleRuntime,
    OracleRuntime,
)
from q3agent.testing.runtimes import ScriptedRuntime

pytest.importorskip("bfcl_eval", reason="bfcl-eval not installed: pip install --no-deps bfcl-eval")

LIMIT = 12


def _sample(mode: str) -> list:
    known = UNSATISFIABLE if mode == "fc" else PROMPT_MODE_UNSATISFIABLE
    entries = []
    for category in SINGLE_TURN_CATEGORIES:
        loaded = [e for e in load_category(category) if e.id not in known]
        entries.extend(loaded[:LIMIT])
    return entries


@pytest.mark.parametrize("runtime_cls", [OracleRuntime, NoisyOracleRuntime])
@pytest.mark.parametrize("mode", ["fc", "prompt"])
def test_oracle_scores_every_single_turn_category_fully(runtime_cls: type, mode: str) -> None:
    entries = _sample(mode)
    config = EvalConfig(mode=mode, thinking="on")  # type: ignore[arg-type]
    report = anyio.run(lambda: run_bfcl(runtime_cls(), config, entries=entries))
    failed = [(r.id, r.verdict.error) for r in report.results if not r.verdict.valid]
    assert failed == []
    assert set(report.scores) == set(SINGLE_TURN_CATEGORIES)
    assert all(s.accuracy == 1.0 for s in report.scores.values())
    if runtime_cls is NoisyOracleRuntime:
        assert all("<think>" in r.raw_output for r in report.results)


def test_known_unsatisfiable_entries_fail_for_the_reason_given() -> None:
    ids = {"simple_java_36", "live_multiple_862-181-3"}
    entries = [e for c in ("java", "live_multiple") for e in load_category(c) if e.id in ids]
    report = anyio.run(lambda: run_bfcl(OracleRuntime(), EvalConfig(), entries=entries))
    assert {r.id for r in report.results if not r.verdict.valid} == ids


def test_wrong_answers_and_needless_calls_fail() -> None:
    simple = load_category("simple", 1)[0]
    irrelevant = load_category("irrelevance", 1)[0]
    relevant = load_category("live_relevance", 1)[0]
    wrong_value = (
        '<tool_call>\n{"name": "calculate_triangle_area", '
        '"arguments": {"base": 11, "height": 5}}\n</tool_call>'
    )
    needless = '<tool_call>\n{{"name": "{}", "arguments": {{}}}}\n</tool_call>'.format(
        irrelevant.functions[0]["name"]
    )
    runtime = ScriptedRuntime([wrong_value, needless, "I cannot help with that."])
    results = []
    for entry in (simple, irrelevant, relevant):
        report = anyio.run(
            lambda e=entry: run_bfcl(runtime, EvalConfig(concurrency=1), entries=[e])
        )
        results.append(report.results[0])
    assert [r.verdict.valid for r in results] == [False, False, False]
    assert results[0].verdict.error_type == "value_error:others"
    assert results[1].verdict.error_type == "irrelevance_error:decoder_success"
    assert results[2].verdict.error_type == "relevance_error:decoder_failed"


def test_fc_prompt_carries_converted_tools_and_prompt_mode_carries_bfcl_instructions() -> None:
    entry = load_category("simple", 1)[0]
    fc = anyio.run(lambda: run_bfcl(OracleRuntime(), EvalConfig(), entries=[entry]))
    prompt = fc.results[0].prompt
    assert "<tools>" in prompt and '"type": "object"' in prompt and '"type": "dict"' not in prompt
    assert entry.turns[0][0]["content"] in prompt
    pm = anyio.run(lambda: run_bfcl(OracleRuntime(), EvalConfig(mode="prompt"), entries=[entry]))
    text = pm.results[0].prompt
    assert "<tools>" not in text
    assert "[func_name1(params_name1=params_value1" in text
    assert pm.results[0].raw_output.startswith("[calculate_triangle_area(")


def test_report_writes_scores_and_one_jsonl_line_per_entry(tmp_path) -> None:
    config = EvalConfig(categories=tuple(resolve_categories(["simple", "irrelevance"])), limit=3)
    report = anyio.run(lambda: run_bfcl(NoisyOracleRuntime(), config))
    root = report.write(tmp_path)
    scores = json.loads((root / "scores.json").read_text())
    assert scores["categories"]["simple"] == {"accuracy": 1.0, "correct": 3, "total": 3}
    assert scores["summary"]["complete"] is False
    lines = (root / "simple.jsonl").read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["valid"] is True and first["calls"] and "<tool_call>" in first["raw_output"]
    assert "BFCL v3" in report.table()
