"""Fixtures for research tests: the fixture corpus, a local HTTP server for its web pages."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
DOCS = FIXTURES / "docs"
PAGES = FIXTURES / "pages"
QUESTION = (
    "How do the Aurora, Borealis and Cirrus vector databases compare on query latency, "
    "cost and durability?"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""


@pytest.fixture(scope="session")
def pages_url() -> Iterator[str]:
    """Base URL of a 127.0.0.1 server serving tests/research/fixtures/pages."""
    handler = functools.partial(_QuietHandler, directory=str(PAGES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def retriever() -> Any:
    """A hybrid retriever over the fixture documents (real Chroma and MiniLM), built once."""
    from q3agent.rag.ingest import Ingestor
    from q3agent.rag.retrieval import Retriever
    from q3agent.rag.store import RagStore

    store = RagStore.ephemeral()
    Ingestor(store).ingest([str(DOCS)], progress=False)
    return Retriever(store)


@pytest.fixture(scope="session")
def question() -> str:
    """The research question the fixture corpus answers."""
    return QUESTION
