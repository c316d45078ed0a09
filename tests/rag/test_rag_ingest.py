"""Ingestion: parsing each format, metadata, idempotent re-ingest, URLs, persistence, locking."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from q3agent.rag import (
    Embedder,
    EmbeddingModelNotFoundError,
    RagStore,
    Retriever,
    ingest,
)
from q3agent.rag.ingest import load_file

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def test_fixture_corpus_chunks_carry_their_metadata(corpus_store: Any) -> None:
    chunks = list(corpus_store.iter_all())
    sources = {c.metadata["source"] for c in chunks}
    assert len(sources) == len([p for p in CORPUS.rglob("*") if p.is_file()])
    kinds = {c.metadata["kind"] for c in chunks}
    assert kinds == {"markdown", "text", "html", "code"}
    for chunk in chunks:
        meta = chunk.metadata
        assert {"source", "title", "chunk_index", "char_start", "char_end", "doc_hash"} <= set(meta)
        if meta["kind"] in ("markdown", "text", "code"):
            original = Path(str(meta["source"])).read_text()
            start, end = int(meta["char_start"]), int(meta["char_end"])
            assert original[start:end] == chunk.text
    titles = {Path(str(c.metadata["source"])).stem: c.metadata["title"] for c in chunks}
    assert titles["err-e4012"] == "Error E-4012: gripper torque overload"
    assert titles["lidar-sensors"] == "Lidar sensors for the Rover"


def test_html_loses_scripts_and_navigation_but_keeps_headings() -> None:
    doc = load_file(CORPUS / "catalog" / "lidar-sensors.html")
    text = doc.pages[0][1]
    assert doc.kind == "html"
    assert "console.log" not in text and "font-family" not in text
    assert "Catalog" not in text and "Copyright" not in text
    assert "## Upgrade option" in text
    assert "NR-5590" in text


def _make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    first_page = 4
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, line in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({line}) Tj ET".encode()
        objects.append(
            (
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                f"/Resources << /Font << /F1 3 0 R >> >> /Contents {first_page + 2 * i + 1} 0 R >>"
            ).encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out


def test_pdf_pages_become_page_metadata(embedder: Any, tmp_path: Path) -> None:
    pdf = tmp_path / "manual.pdf"
    pdf.write_bytes(
        _make_pdf(
            [
                "Safety manual for the Atlas arm, chapter one: lockout procedures.",
                "Chapter two: the torque sensor TQ-88 must be recalibrated every 500 hours.",
            ]
        )
    )
    store = RagStore.ephemeral(embedder=embedder)
    report = ingest(store, [pdf], progress=False)
    assert report.added == [str(pdf.resolve())]
    passages = Retriever(store).search("TQ-88 recalibration interval", 1)
    assert passages[0].page == 2
    assert "500 hours" in passages[0].text
    assert passages[0].metadata["kind"] == "pdf"


def test_reingest_is_idempotent_and_tracks_changes_and_removals(
    embedder: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("support/err-e4012.md", "science/tides.txt", "howto/sourdough.md"):
        shutil.copy(CORPUS / name, folder / Path(name).name)
    store = RagStore.ephemeral(embedder=embedder)

    first = ingest(store, [folder], progress=False)
    assert len(first.added) == 3 and first.chunks_written == store.count()
    ids_before = {c.id for c in store.iter_all()}

    again = ingest(store, [folder], progress=False)
    assert len(again.unchanged) == 3
    assert again.chunks_written == 0 and not again.added and not again.updated
    assert {c.id for c in store.iter_all()} == ids_before

    tides = folder / "tides.txt"
    tides.write_text(tides.read_text().replace("Moon's gravity", "gravity of the Moon (Luna)"))
    (folder / "sourdough.md").unlink()
    changed = ingest(store, [folder], progress=False)
    assert changed.updated == [str(tides.resolve())]
    assert changed.removed == [str((folder / "sourdough.md").resolve())]
    texts = [c.text for c in store.iter_all()]
    assert any("Moon (Luna)" in t for t in texts)
    assert not any("Moon's gravity" in t for t in texts)
    assert not any("sourdough" in t.lower() for t in texts)
    sources = {c.metadata["source"] for c in store.iter_all()}
    assert sources == {str((folder / "err-e4012.md").resolve()), str(tides.resolve())}


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 serving a small site."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "faq.html").write_text(
        "<html><head><title>Dock FAQ</title></head><body><h1>Dock FAQ</h1>"
        "<p>The fleet dock charges at 10 A and its firmware code is DK-7Q.</p></body></html>"
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_are_fetched_parsed_and_failures_reported(embedder: Any, web_server: str) -> None:
    store = RagStore.ephemeral(embedder=embedder)
    with pytest.warns(UserWarning, match="404"):
        report = ingest(
            store, [f"{web_server}/faq.html", f"{web_server}/missing.html"], progress=False
        )
    assert report.added == [f"{web_server}/faq.html"]
    assert len(report.failed) == 1 and "404" in report.failed[0][1]
    passage = Retriever(store).search("DK-7Q", 1)[0]
    assert passage.source == f"{web_server}/faq.html"
    assert passage.title == "Dock FAQ"


def test_persistent_store_survives_reopen_and_is_locked_to_one_process(
    embedder: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "store"
    files = [CORPUS / "science" / "tides.txt", CORPUS / "support" / "err-e2207.md"]
    with RagStore.persistent(directory, embedder=embedder) as store:
        ingest(store, files, progress=False)
        count = store.count()
        script = textwrap.dedent(
            f"""
            from q3agent.rag.store import RagStore, StoreLockedError
            try:
                RagStore.persistent({str(directory)!r})
            except StoreLockedError as exc:
                print(exc)
                raise SystemExit(3)
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 3, result.stderr
        assert f"in use by process {os.getpid()}" in result.stdout
        assert "chroma run --path" in result.stdout

    with RagStore.persistent(directory, embedder=embedder) as reopened:
        assert reopened.count() == count
        report = ingest(reopened, files, progress=False)
        assert len(report.unchanged) == 2 and report.chunks_written == 0


def test_missing_qwen3_embedding_model_says_how_to_get_it() -> None:
    with pytest.raises(
        EmbeddingModelNotFoundError, match=r"hf download Qwen/Qwen3-Embedding-0\.6B"
    ):
        Embedder.load("Qwen3-Embedding-0.6B")


def test_qwen3_embedding_prompts_queries_only() -> None:
    from q3agent.rag.embeddings import resolve_model

    spec = resolve_model("Qwen/Qwen3-Embedding-4B")
    assert spec.query_prompt == (
        "Instruct: Given a web search query, retrieve relevant passages that answer the query\n"
        "Query:"
    )
    assert resolve_model("all-MiniLM-L6-v2").query_prompt == ""


def test_ingest_reports_inputs_it_could_not_read(embedder: Any, tmp_path: Path) -> None:
    from q3agent.rag import IngestWarning, RagStore, ingest

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nAlpha text about error E-1.\n")
    store = RagStore.ephemeral(embedder=embedder)
    with pytest.warns(IngestWarning, match=r"missing\.pdf: no such file or directory"):
        report = ingest(store, [docs, tmp_path / "missing.pdf"], progress=False)
    assert not report.ok and len(report.added) == 1  # the readable input still went in
    assert store.count() > 0
