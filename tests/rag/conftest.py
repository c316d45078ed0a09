"""Shared fixtures for RAG tests: the real MiniLM embedder and the ingested fixture corpus."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus"


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The bundled all-MiniLM-L6-v2, loaded once per test session."""
    from q3agent.rag import shared_embedder

    return shared_embedder()


@pytest.fixture(scope="session")
def labeled_queries() -> list[dict[str, Any]]:
    """The labeled query set (query, relevant doc ids, keyword flag)."""
    data = json.loads((FIXTURES / "queries.json").read_text())
    return list(data["queries"])


@pytest.fixture(scope="session")
def corpus_store(embedder: Any) -> Any:
    """An in-memory store holding the whole fixture corpus (ingested once per session)."""
    from q3agent.rag import RagStore, ingest

    store = RagStore.ephemeral(embedder=embedder)
    report = ingest(store, [CORPUS], progress=False)
    assert not report.failed
    return store
