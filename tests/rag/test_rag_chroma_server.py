"""RAG on a real Chroma server: ``chroma run --path DIR --port P``, started once for the module.

Ingest, hybrid search and citations through the Python API and the CLI, two processes
ingesting into one server at once (nothing lost), and ``serve-mcp --rag-url``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from q3agent.rag import CitationBank, RagStore, Retriever, check_citations, ingest

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys\nfrom q3agent.cli import main\nsys.exit(main())\n"

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("Q3AGENT_")}
    return {**clean, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a ``chroma run`` server (chromadb's own), shared by this module's tests."""
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if chroma is None:
        pytest.skip("the `chroma` command (chromadb's server) is not installed")
    data = tmp_path_factory.mktemp("chroma-data")
    port = free_port()
    log = (data.parent / "chroma.log").open("w")
    server = subprocess.Popen(
        [chroma, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"chroma run did not start: {(data.parent / 'chroma.log').read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_ingest_hybrid_search_and_citations_match_the_embedded_store(
    chroma_url: str, embedder: Any, corpus_store: Any, labeled_queries: list[dict[str, Any]]
) -> None:
    store = RagStore.http(chroma_url, embedder=embedder, collection="api")
    report = ingest(store, [CORPUS], progress=False)
    assert not report.failed and len(report.added) == 30
    assert store.count() == corpus_store.count()
    again = ingest(store, [CORPUS], progress=False)  # a re-run finds everything unchanged
    assert len(again.unchanged) == 30 and store.count() == corpus_store.count()

    served, local = Retriever(store), Retriever(corpus_store)
    for labeled in labeled_queries:
        got = [p.id for p in served.search(labeled["query"], k=5)]
        assert got == [p.id for p in local.search(labeled["query"], k=5)], labeled["query"]

    bank = CitationBank()
    passages = served.search("What does error E-4012 mean?", k=3)
    numbers = {bank.add(p): p for p in passages}
    checked = check_citations("E-4012 is explained in [1]. Not in [9].", numbers)
    assert checked.cited == [1] and checked.invalid == [9]
    assert checked.render().endswith(f"— {passages[0].source}")


def test_two_processes_ingesting_into_one_server_lose_nothing(
    chroma_url: str, tmp_path: Path, corpus_store: Any
) -> None:
    script = tmp_path / "q3agent"
    script.write_text(CLI)
    halves = (["catalog", "engineering"], ["howto", "science", "support"])
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                "rag",
                "ingest",
                "--url",
                chroma_url,
                "--collection",
                "shared",
                "--no-progress",
                *[str(CORPUS / d) for d in dirs],
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        for dirs in halves
    ]
    for proc in workers:
        _out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    store = RagStore.http(chroma_url, embedder=corpus_store.embedder, collection="shared")
    assert store.count() == corpus_store.count()
    stored = {c.id for c in store.iter_all()}
    assert stored == {c.id for c in corpus_store.iter_all()}

    search = subprocess.run(
        [sys.executable, str(script), "rag", "search", "--url", chroma_url,
         "--collection", "shared", "--json", "E-4013"],
        capture_output=True, text=True, env=env(), timeout=240,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    first = hits[0] if isinstance(hits, list) else hits["passages"][0]
    assert "E-4013" in first["text"]


@pytest.mark.anyio
async def test_serve_mcp_with_rag_url(chroma_url: str, tmp_path: Path) -> None:
    from mcp import Client, StdioServerParameters

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fjords.md").write_text(
        "# Fjords of Norway\n\nThe Sognefjord is the longest fjord in Norway, 205 km long.\n"
    )
    call = json.dumps({"name": "rag_search", "arguments": {"query": "longest fjord"}})
    script = tmp_path / "completions.jsonl"
    lines = [f"<tool_call>\n{call}\n</tool_call>", "The Sognefjord, 205 km long [1]."]
    script.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["-m", "q3agent.cli.mcp", "serve-mcp", "--runtime-script", str(script),
            "--rag-url", chroma_url, "--allow-folder", str(docs)]  # fmt: skip
    params = StdioServerParameters(command=sys.executable, args=args, env=env())
    async with Client(params) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"ask", "rag_search", "rag_ingest"}
        ingested = await client.call_tool("rag_ingest", {"sources": [str(docs)]})
        assert not ingested.is_error, ingested.content
        hits = await client.call_tool("rag_search", {"query": "Sognefjord"})
        assert "205 km" in json.dumps(hits.structured_content)
        answer = await client.call_tool("ask", {"task": "Which fjord is the longest?"})
    structured = answer.structured_content
    assert structured is not None and structured["answer"].startswith("The Sognefjord")
    text = answer.content[0].text  # type: ignore[union-attr]
    assert "Sources:\n[1] Fjords of Norway — " in text and "fjords.md" in text
    # the chunks live on the server: another client sees them
    store = RagStore.http(chroma_url, collection="q3agent-docs")
    assert any("Sognefjord" in c.text for c in store.iter_all())
