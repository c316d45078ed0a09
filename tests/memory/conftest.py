"""Fixtures for memory tests: the real MiniLM embedder and a real PostgreSQL (pgserver)."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The bundled all-MiniLM-L6-v2 (shared with the RAG tests when run together)."""
    from q3agent.rag import shared_embedder

    return shared_embedder()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 16 started from the pgserver wheel (once per test session); its URL.

    Skipped, with the reason, where pgserver or psycopg is missing or the server cannot start.
    """
    try:
        import pgserver
        import psycopg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"PostgreSQL tests need pgserver and psycopg (pip install -e '.[dev]'): {exc}")
    # A short path: the server's Unix socket lives in it (socket paths are limited to ~100 B).
    root = Path(os.environ.get("Q3AGENT_PG_DIR", "/tmp")) / f"q3pg-{uuid.uuid4().hex[:8]}"
    try:
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset in containers
            warnings.simplefilter("ignore")
            server = pgserver.get_server(root, cleanup_mode="delete")
    except Exception as exc:  # pgserver reports start-up failures with several types
        pytest.skip(f"PostgreSQL (pgserver) could not start in {root}: {exc}")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the shared server for one test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.replace("/postgres?", f"/{name}?", 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A session store URL on each backend: a new SQLite file, a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    return str(request.getfixturevalue("postgres_url"))
