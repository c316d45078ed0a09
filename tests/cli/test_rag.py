"""``q3agent rag`` as a user runs it: waits announced, failures reported, no stray stores."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import REPO, Cli

CORPUS = REPO / "tests" / "rag" / "fixtures" / "corpus"


def test_search_of_a_mistyped_store_fails_fast_and_creates_nothing(
    q3agent: Cli, tmp_path: Path
) -> None:
    done = q3agent("rag", "search", "E-4012", "--store", "kb-typo", cwd=tmp_path)
    assert done.returncode == 2
    assert "no RAG store at kb-typo" in done.stderr and "q3agent rag ingest" in done.stderr
    assert "loading the embedding model" not in done.stderr  # failed before the slow part
    assert not (tmp_path / "kb-typo").exists()


def test_ingest_says_what_it_waits_for_and_fails_on_a_missing_input(
    q3agent: Cli, tmp_path: Path
) -> None:
    done = q3agent(
        "rag", "ingest", str(CORPUS / "support"), "missing.pdf", "--store", "kb", cwd=tmp_path
    )
    assert done.returncode == 1
    assert "loading the embedding model all-MiniLM-L6-v2" in done.stderr
    assert "missing.pdf: no such file or directory" in done.stderr
    assert "1 input could not be ingested" in done.stderr
    assert "1 failed" in done.stdout and "added" in done.stdout
    for noise in ("Loading weights", "it/s]", "FutureWarning", "Warning:"):
        assert noise not in done.stderr, done.stderr

    found = q3agent("rag", "search", "error E-4012", "--store", "kb", "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.lstrip().startswith("[")  # JSON alone on stdout


def test_ingest_json_is_one_report_object_on_stdout(q3agent: Cli, tmp_path: Path) -> None:
    first = sorted(p for p in (CORPUS / "support").iterdir() if p.is_file())[0]
    done = q3agent("rag", "ingest", str(first), "--store", "kb", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["added"]) == 1 and report["store"].endswith("kb")
    assert report["failed"] == [] and report["chunks_in_store"] >= 1
    assert report["chunks_written"] == report["chunks_in_store"]
    assert "ingesting into" not in done.stderr
