"""Sessions in PostgreSQL (psycopg 3): the same :class:`SessionStore` as SQLite, for many workers.

``SessionStore("postgresql://user:pass@host:5432/db")`` creates its tables on first use
(under an advisory lock, so workers starting together do not race). Every write is one
transaction that first locks the session's row (``SELECT … FOR UPDATE``): writers of one
session are serialised by the database, and the lease check (fencing token) happens under
that lock. Lease times come from the database server's clock, so workers on machines whose
clocks disagree still agree on when a lease expires.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from q3agent.memory.sessions import (
    DEFAULT_LEASE_TTL,
    SessionError,
    SessionStore,
    _Cursor,
    _Tx,
)

_PG_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS messages (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS steps (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        record TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (session_id, step)
    )""",
    """CREATE TABLE IF NOT EXISTS tool_results (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        call_id TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (session_id, call_id)
    )""",
    """CREATE TABLE IF NOT EXISTS leases (
        session_id TEXT PRIMARY KEY,
        owner TEXT,
        token BIGINT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        acquired_at DOUBLE PRECISION NOT NULL
    )""",
]
_SCHEMA_LOCK = 0x71336167  # pg_advisory_xact_lock key while creating the tables


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        cursor: _Cursor = self.conn.execute(sql.replace("?", "%s"), tuple(params))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])


class PostgresSessionStore(SessionStore):
    """Sessions in a PostgreSQL database, shared by worker processes on any machine."""

    def __init__(
        self,
        url: str,
        *,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        owner: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.owner = owner
        try:
            import psycopg
        except ImportError as exc:
            raise SessionError(
                "PostgreSQL sessions need the psycopg driver: pip install 'q3agent[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.location = redact(self.url)
        self.lease_ttl = lease_ttl
        self._connect_timeout = connect_timeout
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        with self._errors("opened"), self._transaction() as tx:
            tx.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
            for statement in _PG_SCHEMA:
                tx.execute(statement)
        weakref.finalize(self, _close_all, self._conns, self._conns_lock)

    def _connect(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            self._drop(conn)
            conn = None
        if conn is None:
            conn = self._psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, round(self._connect_timeout)),
                application_name="q3agent-sessions",
            )
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _drop(self, conn: Any) -> None:
        self._local.conn = None
        with self._conns_lock:
            if conn in self._conns:
                self._conns.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        conn = self._connect()
        with conn.transaction():
            yield _PgTx(conn)

    def _reader(self) -> _Tx:
        return _PgTx(self._connect())

    def _lock_session(self, tx: _Tx, session_id: str) -> None:
        tx.execute("SELECT id FROM sessions WHERE id = ? FOR UPDATE", (session_id,))

    def _clock(self, tx: _Tx) -> float:
        row = tx.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()
        return float(row[0])

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            conn = getattr(self._local, "conn", None)
            if conn is not None and (conn.closed or conn.broken):
                self._drop(conn)
            first = (str(exc).strip().splitlines() or [""])[0]
            raise SessionError(
                f"the PostgreSQL session store {self.location} could not be {what} "
                f"({type(exc).__name__}: {first}). Check that the server is running and that "
                "the URL's user, password and database are right; the write did not happen "
                "unless a later read shows it."
            ) from exc

    def _close_thread(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)

    def close(self) -> None:
        """Close every connection this store opened."""
        self._local = threading.local()
        _close_all(self._conns, self._conns_lock)


def _close_all(conns: list[Any], lock: threading.Lock) -> None:
    with lock:
        pending, conns[:] = list(conns), []
    for conn in pending:
        with contextlib.suppress(Exception):
            conn.close()
