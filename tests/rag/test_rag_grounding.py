"""Grounding: numbered sources, citation checking, the rag_search tool, and the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from q3agent.cli.rag import add_rag_commands
from q3agent.rag import CitationBank, Passage, Retriever, check_citations, make_rag_search_tool
from q3agent.rag.grounding import grounded_prompt, source_key
from q3agent.tools import RunContext

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def _passage(pid: str, source: str, title: str = "", text: str = "text") -> Passage:
    return Passage(id=pid, text=text, source=source, title=title)


def test_bank_numbers_sources_once_without_gaps_and_dedups_urls() -> None:
    bank = CitationBank()
    a = bank.add(_passage("p1", "https://Example.com/guide/?utm_source=x#intro", "Guide"))
    b = bank.add(_passage("p2", "https://example.com/guide", "Guide"))
    c = bank.add(_passage("p3", "/tmp/notes.md", "Notes"))
    d = bank.add_document("https://other.org/page", "Other", "a web snippet")
    assert (a, b, c, d) == (1, 1, 2, 3)
    assert [s.number for s in bank.sources()] == [1, 2, 3]
    assert [p.id for p in bank.sources()[0].passages] == ["p1", "p2"]
    assert bank.number_of("https://example.com/guide/") == 1
    assert source_key("http://Host:80/a/") == "http://host/a"


def test_check_citations_removes_and_flags_ids_never_retrieved() -> None:
    retrieved = {1: _passage("p1", "/docs/a.md", "Alpha"), 2: _passage("p2", "/docs/b.md", "Beta")}
    answer = (
        "The arm stops on overload [1]. Batteries drift [2, 7]. Made up [9]. "
        "See [the manual](https://x.org) and [1][2]."
    )
    result = check_citations(answer, retrieved)
    assert result.invalid == [7, 9]
    assert result.cited == [1, 2]
    assert "[9]" not in result.text and "7" not in result.text
    assert "Made up." in result.text
    assert "Batteries drift [2]." in result.text
    assert "[the manual](https://x.org)" in result.text
    rendered = result.render()
    assert rendered.endswith("Sources:\n[1] Alpha — /docs/a.md\n[2] Beta — /docs/b.md")


def test_check_citations_can_renumber_without_gaps() -> None:
    bank = CitationBank()
    for i in range(1, 5):
        bank.add(_passage(f"p{i}", f"/docs/{i}.md", f"Doc {i}"))
    result = check_citations("Fact [3]. Another [1]. Again [3].", bank, renumber=True)
    assert result.text == "Fact [1]. Another [2]. Again [1]."
    assert [(s.number, s.title) for s in result.sources] == [(1, "Doc 3"), (2, "Doc 1")]
    assert not result.invalid


@pytest.mark.anyio
async def test_rag_search_tool_numbers_passages_for_citation(corpus_store: Any) -> None:
    bank = CitationBank()
    rag_search = make_rag_search_tool(Retriever(corpus_store), bank)
    assert rag_search.name == "rag_search"
    assert set(rag_search.parameters["properties"]) == {"query", "k"}
    assert "cite" in rag_search.description.lower()
    ctx: RunContext[None] = RunContext(deps=None, run_id="r", step=0, messages=[])
    output = await rag_search.call({"query": "What does error E-4012 mean?", "k": 3}, ctx)
    assert output.startswith("[1] Error E-4012: gripper torque overload")
    assert len(bank) >= 2
    answer = "Release the jaws and clear the fault [1]; replace the motor NR-7731-B [12]."
    grounded = check_citations(answer, bank)
    assert grounded.invalid == [12]
    assert grounded.sources[0].location.endswith("err-e4012.md")
    prompt = grounded_prompt("What is E-4012?", [], CitationBank())
    assert "No matching passages" in prompt and "Question: What is E-4012?" in prompt


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="q3agent")
    add_rag_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_cli_ingest_then_search_json(
    embedder: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = str(tmp_path / "store")
    docs = [str(CORPUS / "engineering"), str(CORPUS / "support" / "err-e3150.md")]
    assert _cli(["rag", "ingest", *docs, "--store", store_dir, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "8 added" in out and store_dir in out

    assert _cli(["rag", "search", "max_inflight_frames", "--store", store_dir, "-k", "2",
                 "--json"]) == 0  # fmt: skip
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2
    assert results[0]["source"].endswith("nav-config.md")
    assert {"n", "id", "title", "char_span", "page", "text"} <= set(results[0])

    assert _cli(["rag", "search", "rebase conflict", "--store", store_dir]) == 0
    assert capsys.readouterr().out.startswith("[1] Rebasing a feature branch")

    missing = str(tmp_path / "missing")
    assert _cli(["rag", "search", "anything", "--store", missing]) == 2
    assert "no RAG store at" in capsys.readouterr().err
    assert not Path(missing).exists()  # a mistyped --store is not created

    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli(["rag", "search", "anything", "--store", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
