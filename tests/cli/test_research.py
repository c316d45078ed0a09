"""``q3agent research`` from the command line: sources checked first, nothing finished lost."""

from __future__ import annotations

import json
from pathlib import Path

import pypdf
import pytest

from tests.cli.conftest import REPO, Cli

DOCS = REPO / "tests" / "research" / "fixtures" / "docs"
QUESTION = "How do the Aurora, Borealis and Cirrus vector databases compare on query latency?"


def test_no_sources_is_one_line_in_cli_words(q3agent: Cli) -> None:
    done = q3agent("research", QUESTION, "--runtime", "oracle")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "--docs PATH" in done.stderr and "docs=[" not in done.stderr


def test_no_model_is_one_line_before_any_work(q3agent: Cli) -> None:
    done = q3agent("research", QUESTION, "--docs", str(DOCS))
    assert done.returncode == 2
    assert "No runtime can serve 'Qwen3-30B-A3B'" in done.stderr
    assert "Traceback" not in done.stderr and "✓" not in done.stderr


def test_a_mistyped_store_is_an_error_and_creates_nothing(q3agent: Cli, tmp_path: Path) -> None:
    done = q3agent("research", QUESTION, "--store", "kb-typo", "--runtime", "oracle", cwd=tmp_path)
    assert done.returncode == 2 and "no RAG store at kb-typo" in done.stderr
    assert not (tmp_path / "kb-typo").exists()


def test_pdf_report_is_written_after_its_markdown(q3agent: Cli, tmp_path: Path) -> None:
    done = q3agent(
        "research", QUESTION, "--docs", str(DOCS), "--runtime", "oracle", "--out", "report.pdf",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "report.md").read_text()
    assert "## Sources" in markdown
    text = "".join(p.extract_text() for p in pypdf.PdfReader(tmp_path / "report.pdf").pages)
    assert "Sources" in text
    assert "3 sub-questions" in done.stderr


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("report.pdf", "--out report.pdf is a folder"),  # made a folder below
        ("a-file/report.md", "is a file, not a folder"),
        ("/sys/report.md", "cannot write in /sys"),
    ],
)
def test_an_unusable_out_is_refused_before_any_work(
    q3agent: Cli, tmp_path: Path, out: str, words: str
) -> None:
    (tmp_path / "report.pdf").mkdir()
    (tmp_path / "a-file").write_text("")
    done = q3agent(
        "research", QUESTION, "--docs", str(DOCS), "--runtime", "oracle", "--out", out,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert words in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "✓" not in done.stderr  # no stage ran


def test_a_late_write_failure_keeps_the_report_and_says_where(q3agent: Cli, tmp_path: Path) -> None:
    """/dev/full passes every check and fails the write (no space left), as a full disk does."""
    done = q3agent(
        "research", QUESTION, "--docs", str(DOCS), "--runtime", "oracle", "--out", "/dev/full",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    line = next(x for x in done.stderr.splitlines() if x.startswith("error:"))
    assert line.startswith("error: could not write /dev/full (No space left on device); the ")
    fallback = Path(line.rsplit(" ", 1)[1])
    assert fallback.parent == tmp_path and "## Sources" in fallback.read_text()


def test_a_missing_out_folder_is_made(q3agent: Cli, tmp_path: Path) -> None:
    done = q3agent(
        "research", QUESTION, "--docs", str(DOCS), "--runtime", "oracle", "--out",
        "new/deeper/report.md", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "## Sources" in (tmp_path / "new" / "deeper" / "report.md").read_text()
    summary = json.loads(done.stdout)  # --json: stdout is the summary alone
    assert summary["status"] == "complete" and summary["sources"]


def test_a_failing_model_marks_its_stage_failed(q3agent: Cli, tmp_path: Path) -> None:
    script = tmp_path / "one.jsonl"
    script.write_text(json.dumps("A brief.") + "\n")  # the plan stage finds the script used up
    done = q3agent("research", QUESTION, "--docs", str(DOCS), "--script", str(script))
    assert done.returncode == 1
    assert "✓ brief" in done.stderr
    assert "✗ plan: stopped after" in done.stderr and "✓ plan" not in done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_the_stand_in_model_has_one_shown_name_and_the_old_one_still_works(
    q3agent: Cli, tmp_path: Path
) -> None:
    """``--runtime oracle`` is the scripted model's name (as in ``eval``); ``--fixture-runtime``
    is a hidden alias, and ``--script`` with ``--runtime oracle`` is one line, exit 2."""
    shown = q3agent("research", "--help")
    assert "oracle" in shown.stdout and "--fixture-runtime" not in shown.stdout
    old = q3agent("research", "", "--docs", str(DOCS), "--fixture-runtime")
    assert old.returncode == 2 and "question is empty" in old.stderr
    script = tmp_path / "s.jsonl"
    script.write_text("")
    both = q3agent("research", QUESTION, "--docs", str(DOCS), "--runtime", "oracle",
                   "--script", str(script))  # fmt: skip
    assert both.returncode == 2 and both.stderr.count("\n") == 1
    assert "give one of them" in both.stderr
