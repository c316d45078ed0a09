"""Fixtures for memory tests: the real MiniLM embedder (loaded once per session)."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The bundled all-MiniLM-L6-v2 (shared with the RAG tests when run together)."""
    from q3agent.rag import shared_embedder

    return shared_embedder()
