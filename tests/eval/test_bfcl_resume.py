"""Nothing finished is lost: each entry is written as it finishes, an interrupt keeps what
finished (partial scores), and the same ``--out`` resumes where the run stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from q3agent.cli.eval import main
from q3agent.cli.exits import INTERRUPTED, OK, USAGE
from q3agent.eval.bfcl_runner import (
    EntryResult,
    EvalConfig,
    ResultsLog,
    ResumeMismatchError,
    run_bfcl,
)
from q3agent.eval.oracle import OracleRuntime
from q3agent.eval.scoring import Verdict
from tests.cli.conftest import CONSOLE_SCRIPT, clean_env

pytest.importorskip("bfcl_eval", reason="bfcl-eval not installed: pip install --no-deps bfcl-eval")

CONFIG = EvalConfig(categories=("simple", "multiple"), limit=4, concurrency=1)


def ids_in(folder: Path) -> list[str]:
    return [
        json.loads(line)["id"]
        for path in sorted(folder.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_an_interrupted_run_keeps_its_entries_and_a_rerun_does_only_the_rest(
    tmp_path: Path,
) -> None:
    async def first() -> None:
        cancel = anyio.Event()
        seen: list[EntryResult] = []

        def stop_after_three(result: EntryResult) -> None:
            seen.append(result)
            if len(seen) == 3:
                cancel.set()

        log = ResultsLog.open(tmp_path, CONFIG)
        report = await run_bfcl(
            OracleRuntime(), CONFIG, log=log, cancel=cancel, on_result=stop_after_three
        )
        assert report.interrupted and report.planned == 8
        kept = len(report.results)  # entries already past their last checkpoint finish too
        assert 3 <= kept < 8 and report.summary["complete"] is False
        assert sorted(ids_in(tmp_path)) == sorted(r.id for r in seen)  # on disk already
        assert {r.id for r in report.results} == {r.id for r in seen}
        assert f"interrupted: partial scores over the {kept} of 8 entries" in report.table()

    async def second() -> None:
        log = ResultsLog.open(tmp_path, CONFIG)
        kept = len(log.finished)
        ran: list[str] = []
        report = await run_bfcl(
            OracleRuntime(), CONFIG, log=log, on_result=lambda r: ran.append(r.id)
        )
        assert not report.interrupted and report.resumed == kept and len(ran) == 8 - kept
        assert not set(ran) & set(log.finished)
        assert len(report.results) == 8 and report.scores["simple"].accuracy == 1.0
        report.write(tmp_path)  # the end of a run rewrites the files whole, once per entry
        assert sorted(ids_in(tmp_path)) == sorted({r.id for r in report.results})

    anyio.run(first)
    anyio.run(second)


def test_other_settings_in_the_folder_are_refused_not_mixed(tmp_path: Path) -> None:
    ResultsLog.open(tmp_path, CONFIG)
    with pytest.raises(ResumeMismatchError, match="thinking 'off' there, 'on' now"):
        ResultsLog.open(tmp_path, EvalConfig(categories=("simple",), thinking="on"))
    ResultsLog.open(tmp_path, EvalConfig(categories=("java",), limit=9))  # same settings: fine


def test_a_line_cut_by_a_kill_is_dropped_and_that_entry_runs_again(tmp_path: Path) -> None:
    log = ResultsLog.open(tmp_path, CONFIG)
    report = anyio.run(lambda: run_bfcl(OracleRuntime(), CONFIG, log=log))
    path = tmp_path / "simple.jsonl"
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 40])  # last line cut short
    again = ResultsLog.open(tmp_path, CONFIG)
    assert len(again.finished) == len(report.results) - 1
    assert path.read_text().endswith("\n")  # the next append starts a line of its own


def test_entries_that_failed_for_the_runtime_run_again(tmp_path: Path) -> None:
    log = ResultsLog.open(tmp_path, CONFIG)
    result = anyio.run(lambda: run_bfcl(OracleRuntime(), CONFIG, log=log)).results[0]
    failed = EntryResult(
        result.id, result.category, Verdict(False, ["inference error: boom"], "inference_error")
    )
    log.append(failed)  # a later line for the same entry: a failure
    assert result.id not in ResultsLog.open(tmp_path, CONFIG).finished


def test_cli_sigterm_prints_partial_scores_and_the_same_command_resumes(tmp_path: Path) -> None:
    out = tmp_path / "results"
    script = tmp_path / "q3agent"
    script.write_text(CONSOLE_SCRIPT)
    argv = [sys.executable, str(script), "eval", "bfcl", "--runtime", "oracle", "--categories",
            "simple", "--limit", "60", "--concurrency", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 180
    while not (out / "simple.jsonl").exists() or not (out / "simple.jsonl").read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no entry finished"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == INTERRUPTED, stderr
    assert "(interrupted: partial scores over the" in stdout and "simple" in stdout
    assert "run the same command again to resume" in stderr
    kept = len(set(ids_in(out)))
    assert 0 < kept < 60
    scores = json.loads((out / "scores.json").read_text())
    assert scores["interrupted"] is True and scores["entries"] == kept

    done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == OK, done.stderr
    assert f"resuming: {kept} of 60 entries finished earlier" in done.stderr
    scores = json.loads((out / "scores.json").read_text())
    assert scores["entries"] == 60 and scores["entries_resumed"] == kept
    assert scores["categories"]["simple"]["accuracy"] == 1.0
    assert sorted(ids_in(out)) == sorted(set(ids_in(out)))  # each entry once


def test_cli_refuses_a_folder_of_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["eval", "bfcl", "--runtime", "oracle", "--categories", "simple", "--limit", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(base) == OK
    with pytest.raises(ResumeMismatchError, match="mode 'fc' there, 'prompt' now"):
        main([*base, "--mode", "prompt"])
    from q3agent.cli import main as cli_main

    capsys.readouterr()
    assert cli_main([*base, "--mode", "prompt"]) == USAGE
    err = capsys.readouterr().err
    assert "holds results run with other settings (mode 'fc' there, 'prompt' now)" in err
