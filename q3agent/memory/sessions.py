"""Sessions persisted in SQLite (WAL): messages, step records and completed tool results.

Every write commits before it returns, so a process killed at any point (``kill -9``) leaves
a consistent session behind. Resuming reads it back: the conversation, the last completed
step, and the results of tool calls that finished, keyed by call id, so they are not run a
second time.

A damaged store never surfaces raw ``sqlite3`` or JSON errors: a file that is not a readable
SQLite database raises :class:`SessionError` naming the file and what to do; rows that cannot
be read (bad JSON, a message that no longer validates) are skipped by :meth:`Session.load`,
which loads everything else and lists what it skipped in :attr:`SessionState.problems`
(``load(strict=True)`` raises :class:`SessionError` instead, holding the readable part).

Write order the agent loop follows for one step::

    session.append_messages([assistant])          # the model's turn, with its tool calls
    for call in pending calls:                    # each call, as it completes
        session.record_tool_result(call.id, output)
    session.complete_step(index, record, tool_messages)   # atomically: tool messages + step
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from q3agent.qwen3.messages import (
    Message,
    ToolCall,
    dump_messages,
    load_messages,
    pending_tool_calls,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS steps (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    record TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, step)
);
CREATE TABLE IF NOT EXISTS tool_results (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    call_id TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, call_id)
);
"""


class SessionError(RuntimeError):
    """A session database could not be opened, read or written; the message says what to do.

    ``state`` holds what could be read when the error came from ``load(strict=True)``.
    """

    def __init__(self, message: str, *, state: SessionState | None = None) -> None:
        super().__init__(message)
        self.state = state


class SessionWarning(UserWarning):
    """Some rows of a session could not be read and were skipped (see ``problems``)."""


def _damaged(path: Path, what: str, exc: BaseException) -> SessionError:
    return SessionError(
        f"the session database {path} could not be {what} ({type(exc).__name__}: {exc}). "
        f"If the file is damaged, move it aside and start with a new one (or recover it with "
        f"`sqlite3 {path} .recover`); if it is busy, retry when the other process is done."
    )


@contextlib.contextmanager
def _sqlite_errors(path: Path, what: str) -> Iterator[None]:
    """Turn ``sqlite3`` errors into :class:`SessionError` naming the file and what to do."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _damaged(path, what, exc) from exc


@dataclass
class SessionState:
    """Everything persisted for one session, as loaded for a resume."""

    session_id: str
    messages: list[Message]
    steps: list[dict[str, Any]]
    """Step records in step order (each as recorded by :meth:`Session.complete_step`)."""
    tool_results: dict[str, Any]
    """Completed tool-call results by call id."""
    metadata: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Rows that could not be read and were skipped (empty for an intact session)."""

    @property
    def next_step(self) -> int:
        """Index of the step to run next (0 for a new session)."""
        return len(self.steps)

    def pending_tool_calls(self) -> list[ToolCall]:
        """Tool calls of the last assistant turn that have no tool message yet.

        These belong to a step that was interrupted: run the ones without a recorded result
        (see :meth:`Session.completed_tool_result`) and reuse the others.
        """
        return pending_tool_calls(self.messages)


class SessionStore:
    """A SQLite database of sessions (WAL mode: readers never block the writer).

    ``SessionStore(path).open(session_id)`` returns a :class:`Session`, creating it if new.
    Connections are per thread; the store may be shared between threads of one process.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        with _sqlite_errors(self.path, "opened as a SQLite database"):
            self._connect().executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise _damaged(self.path, "opened as a SQLite database", exc) from exc
            self._local.conn = conn
        return conn

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connect())

    def _write(self, session_id: str) -> contextlib.AbstractContextManager[None]:
        return _sqlite_errors(self.path, f"written (session {session_id!r})")

    def open(self, session_id: str, *, metadata: Mapping[str, Any] | None = None) -> Session:
        """The session called ``session_id`` (created when it does not exist yet)."""
        now = time.time()
        with self._write(session_id), self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO sessions (id, created_at, updated_at, metadata) "
                "VALUES (?, ?, ?, ?)",
                (session_id, now, now, json.dumps(dict(metadata or {}))),
            )
        return Session(self, session_id)

    def list_sessions(self) -> list[str]:
        """Session ids, most recently updated first."""
        with _sqlite_errors(self.path, "read"):
            rows = self._connect().execute("SELECT id FROM sessions ORDER BY updated_at DESC")
            return [row[0] for row in rows]

    def delete(self, session_id: str) -> None:
        """Remove a session and everything recorded for it."""
        with self._write(session_id), self._transaction() as conn:
            for table in ("messages", "steps", "tool_results"):
                conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on one connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


class Session:
    """One persisted conversation; every method commits before returning."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id

    def _touch(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), self.session_id)
        )

    def _append(self, conn: sqlite3.Connection, messages: Sequence[Message]) -> None:
        row = conn.execute(
            "SELECT COALESCE(MAX(seq), -1) FROM messages WHERE session_id = ?",
            (self.session_id,),
        ).fetchone()
        start = int(row[0]) + 1
        payload = dump_messages(messages)
        conn.executemany(
            "INSERT INTO messages (session_id, seq, message) VALUES (?, ?, ?)",
            [(self.session_id, start + i, json.dumps(m)) for i, m in enumerate(payload)],
        )

    def append_messages(self, messages: Iterable[Message]) -> None:
        """Append messages to the conversation."""
        items = list(messages)
        if not items:
            return
        with self.store._write(self.session_id), self.store._transaction() as conn:
            self._append(conn, items)
            self._touch(conn)

    def record_tool_result(self, call_id: str, result: Any) -> None:
        """Record that the tool call ``call_id`` completed with ``result`` (JSON-serialisable)."""
        with self.store._write(self.session_id), self.store._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tool_results (session_id, call_id, result, created_at) "
                "VALUES (?, ?, ?, ?)",
                (self.session_id, call_id, json.dumps(result), time.time()),
            )
            self._touch(conn)

    def completed_tool_result(self, call_id: str) -> Any | None:
        """The recorded result of ``call_id``, or ``None`` when it never completed (or its
        record cannot be read: the call then runs again)."""
        with _sqlite_errors(self.store.path, f"read (session {self.session_id!r})"):
            row = (
                self.store._connect()
                .execute(
                    "SELECT result FROM tool_results WHERE session_id = ? AND call_id = ?",
                    (self.session_id, call_id),
                )
                .fetchone()
            )
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except (ValueError, TypeError):
            return None

    def record_step(self, step: int, record: Mapping[str, Any]) -> None:
        """Record step ``step`` as completed with ``record`` (a JSON-serialisable dict)."""
        self.complete_step(step, record, ())

    def complete_step(
        self, step: int, record: Mapping[str, Any], messages: Sequence[Message] = ()
    ) -> None:
        """Atomically append the step's closing ``messages`` (its tool results) and mark the
        step completed: after a crash, either both are there or neither is."""
        with self.store._write(self.session_id), self.store._transaction() as conn:
            if messages:
                self._append(conn, messages)
            conn.execute(
                "INSERT OR REPLACE INTO steps (session_id, step, record, created_at) "
                "VALUES (?, ?, ?, ?)",
                (self.session_id, step, json.dumps(dict(record)), time.time()),
            )
            self._touch(conn)

    def replace_messages(self, messages: Sequence[Message]) -> None:
        """Replace the whole conversation (after summarising old turns, for example)."""
        with self.store._write(self.session_id), self.store._transaction() as conn:
            conn.execute("DELETE FROM messages WHERE session_id = ?", (self.session_id,))
            self._append(conn, messages)
            self._touch(conn)

    def load(self, *, strict: bool = False) -> SessionState:
        """Read the whole session back.

        Rows that cannot be read are skipped and listed in ``problems`` (with a
        :class:`SessionWarning`); ``strict=True`` raises :class:`SessionError` instead, with
        the readable part as its ``state``. A damaged database file raises
        :class:`SessionError` naming it.
        """
        problems: list[str] = []
        where = f"session {self.session_id!r} in {self.store.path}"

        def rows(sql: str, what: str, read: Callable[[tuple[Any, ...]], Any]) -> list[Any]:
            out: list[Any] = []
            with _sqlite_errors(self.store.path, f"read ({where})"):
                fetched = self.store._connect().execute(sql, (self.session_id,)).fetchall()
            for row in fetched:
                try:
                    out.append(read(row))
                except Exception as exc:  # bad JSON, a message that no longer validates
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    problems.append(f"{what} {row[0]!r}: {type(exc).__name__}: {first}")
            return out

        messages: list[Message] = rows(
            "SELECT seq, message FROM messages WHERE session_id = ? ORDER BY seq",
            "message",
            lambda row: load_messages([json.loads(row[1])])[0],
        )
        steps: list[dict[str, Any]] = rows(
            "SELECT step, record FROM steps WHERE session_id = ? ORDER BY step",
            "step",
            lambda row: dict(json.loads(row[1])),
        )
        results = dict(
            rows(
                "SELECT call_id, result FROM tool_results WHERE session_id = ?",
                "tool result",
                lambda row: (row[0], json.loads(row[1])),
            )
        )
        meta = rows("SELECT id, metadata FROM sessions WHERE id = ?", "metadata",
                    lambda row: dict(json.loads(row[1])))  # fmt: skip
        state = SessionState(
            self.session_id, messages, steps, results, meta[0] if meta else {}, problems
        )
        if problems:
            summary = (
                f"{len(problems)} unreadable row(s) in {where} were skipped "
                f"({'; '.join(problems[:3])}{'; …' if len(problems) > 3 else ''}). The rest "
                "was loaded; delete the session or restore the file if the gap matters."
            )
            if strict:
                raise SessionError(summary, state=state)
            warnings.warn(summary, SessionWarning, stacklevel=2)
        return state
