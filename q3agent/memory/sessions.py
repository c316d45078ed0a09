"""Sessions that survive restarts: messages, step records, completed tool results, leases.

One interface, :class:`SessionStore`, chosen by URL: ``sqlite:///path/sessions.db`` (or a
plain path; the default) keeps sessions in one SQLite file in WAL mode, for one machine;
``postgresql://user@host/db`` keeps them in PostgreSQL (``pip install 'q3agent[postgres]'``),
shared by worker processes on any number of machines. Both give the same guarantees:

* every write commits before it returns, so a process killed at any point (``kill -9``)
  leaves a consistent session behind, with every completed step in it;
* a tool call whose result was recorded is never run again on resume;
* one session, one writer: ``store.open(id, lease=True)`` takes a lease (expiring after
  ``lease_ttl`` seconds unless renewed, which a background thread does every third of it).
  A second worker gets :class:`SessionBusy` at once, or waits for the lease
  (``wait=True`` or a number of seconds). A killed worker's lease is taken over when it
  expires, or at once when the holder was a process on this machine that no longer exists.
  Every write of a leased session checks its fencing token inside its own transaction: a
  worker whose lease was taken over gets :class:`LeaseLost` and writes nothing.

A damaged store never surfaces raw driver or JSON errors: a file that is not a readable
SQLite database, or one that lost its contents (truncated to 0 bytes), raises
:class:`SessionError` naming the file and what to do; rows that cannot be read (bad JSON, a
message that no longer validates) are skipped by :meth:`Session.load`, which loads
everything else and lists what it skipped in :attr:`SessionState.problems`
(``load(strict=True)`` raises :class:`SessionError` instead, holding the readable part).

Write order the agent loop follows for one step::

    session.append_messages([assistant])          # the model's turn, with its tool calls
    for call in pending calls:                    # each call, as it completes
        session.record_tool_result(call.id, output)
    session.complete_step(index, record, tool_messages)   # atomically: tool messages + step
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from q3agent.closing import Closing
from q3agent.qwen3.messages import (
    Message,
    ToolCall,
    dump_messages,
    load_messages,
    pending_tool_calls,
)

DEFAULT_LEASE_TTL = 30.0
"""Seconds a lease lasts without renewal (a killed worker's session is free after this)."""

_SQLITE_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS leases (
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    token INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    acquired_at REAL NOT NULL
);
"""


class SessionError(RuntimeError):
    """A session store could not be opened, read or written; the message says what to do.

    ``state`` holds what could be read when the error came from ``load(strict=True)``.
    """

    def __init__(self, message: str, *, state: SessionState | None = None) -> None:
        super().__init__(message)
        self.state = state


class SessionBusy(SessionError):
    """Another worker holds the session's lease (``holder``; it expires in ``expires_in`` s)."""

    def __init__(self, session_id: str, holder: str, expires_in: float) -> None:
        super().__init__(
            f"session {session_id!r} is being run by another worker ({holder}; its lease "
            f"expires in {max(expires_in, 0.0):.1f} s unless renewed). Wait for it "
            "(wait=True or a number of seconds) or run another session."
        )
        self.session_id = session_id
        self.holder = holder
        self.expires_in = expires_in


class LeaseLost(SessionError):
    """This worker's lease was taken over by another; its writes are refused (fencing)."""


class SessionWarning(UserWarning):
    """Some rows of a session could not be read and were skipped (see ``problems``)."""


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


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class _Tx(Protocol):
    """One open transaction (or a plain read connection) of a backend; SQL uses ``?``."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


def local_owner() -> str:
    """This process's lease owner name: ``host:pid:tag``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_local_holder(owner: str) -> bool:
    """Whether ``owner`` names a process of this machine (``host:pid:…``) that is gone."""
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _live_holder(row: Any, now: float) -> str | None:
    """The owner of a lease row that another live process holds, else ``None``."""
    if row is None or row[0] is None or float(row[2]) <= now:
        return None
    holder = str(row[0])
    if _same_process(holder) or _dead_local_holder(holder):
        return None
    return holder


def _same_process(owner: str) -> bool:
    parts = owner.split(":")
    return len(parts) == 3 and parts[0] == socket.gethostname() and parts[1] == str(os.getpid())


class SessionStore(Closing):
    """Where sessions live, chosen by URL: ``SessionStore("sqlite:///sessions.db")``, a plain
    path (SQLite), or ``SessionStore("postgresql://user@host/db")``.

    ``store.open(session_id)`` returns a :class:`Session`, creating it if new; with
    ``lease=True`` the session is held by this worker alone until :meth:`Session.close`.
    A store may be shared between threads of one process (connections are per thread).
    """

    location: str
    """Where the sessions are (a file path or a URL without its password), for messages."""
    lease_ttl: float
    owner: str | None = None
    """The worker name leases are taken under (default ``host:pid:tag``, see :meth:`open`)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> SessionStore:
        if cls is SessionStore:
            target = args[0] if args else kwargs.get("url", kwargs.get("path"))
            cls = _store_class(target)
        return super().__new__(cls)

    # -- backend primitives -------------------------------------------------------------
    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[_Tx]:
        """A write transaction that holds the database's write lock for the session."""

    @abc.abstractmethod
    def _reader(self) -> _Tx:
        """A connection to read from (this thread's own)."""

    @abc.abstractmethod
    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Turn driver errors into :class:`SessionError` saying ``what`` failed."""

    def _lock_session(self, tx: _Tx, session_id: str) -> None:
        """Serialise writers of one session inside ``tx`` (SQLite's write lock does already)."""

    def _clock(self, tx: _Tx) -> float:
        """Seconds since the epoch by the database's clock (one clock for every worker)."""
        return time.time()

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection this store opened."""

    # -- the interface ------------------------------------------------------------------
    def open(
        self,
        session_id: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        lease: bool = False,
        wait: bool | float = False,
        lease_ttl: float | None = None,
        owner: str | None = None,
    ) -> Session:
        """The session called ``session_id`` (created when it does not exist yet).

        ``lease=True`` makes this worker its only writer: a held session raises
        :class:`SessionBusy`, or is waited for with ``wait=True`` (or up to ``wait``
        seconds). ``owner`` names the worker (default ``host:pid:tag``; a process of this
        machine that is gone loses its leases at once, others when ``lease_ttl`` passes).
        """
        now = time.time()
        with self._errors(f"written (session {session_id!r})"), self._transaction() as tx:
            tx.execute(
                "INSERT INTO sessions (id, created_at, updated_at, metadata) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (session_id, now, now, json.dumps(dict(metadata or {}))),
            )
        session = Session(self, session_id)
        if lease:
            session.lease = self._acquire(
                session_id, owner or self.owner or local_owner(), lease_ttl or self.lease_ttl, wait
            )
            weakref.finalize(session, session.lease.release)
        return session

    def list_sessions(self) -> list[str]:
        """Session ids, most recently updated first."""
        with self._errors("read"):
            rows = self._reader().execute("SELECT id FROM sessions ORDER BY updated_at DESC")
            return [row[0] for row in rows.fetchall()]

    def delete(self, session_id: str) -> None:
        """Remove a session and everything recorded for it."""
        with self._errors(f"written (session {session_id!r})"), self._transaction() as tx:
            for table in ("messages", "steps", "tool_results"):
                tx.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
            tx.execute("DELETE FROM leases WHERE session_id = ?", (session_id,))
            tx.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def lease_holder(self, session_id: str) -> tuple[str, float] | None:
        """``(owner, seconds left)`` of the live lease on ``session_id``, or ``None``."""
        with self._errors("read"):
            reader = self._reader()
            row = reader.execute(
                "SELECT owner, expires_at FROM leases WHERE session_id = ?", (session_id,)
            ).fetchone()
            now = self._clock(reader)
        if row is None or row[0] is None or float(row[1]) <= now:
            return None
        return str(row[0]), float(row[1]) - now

    # -- leases -------------------------------------------------------------------------
    def _try_acquire(self, session_id: str, owner: str, ttl: float) -> int | SessionBusy:
        with self._errors(f"written (lease of {session_id!r})"), self._transaction() as tx:
            self._lock_session(tx, session_id)
            row = tx.execute(
                "SELECT owner, token, expires_at FROM leases WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            now = self._clock(tx)
            holder = _live_holder(row, now)
            if holder is not None and holder != owner:
                return SessionBusy(session_id, holder, float(row[2]) - now)
            token = (int(row[1]) if row is not None else 0) + 1
            tx.execute(
                "INSERT INTO leases (session_id, owner, token, expires_at, acquired_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
                "owner = excluded.owner, token = excluded.token, "
                "expires_at = excluded.expires_at, acquired_at = excluded.acquired_at",
                (session_id, owner, token, now + ttl, now),
            )
            return token

    def _acquire(self, session_id: str, owner: str, ttl: float, wait: bool | float) -> Lease:
        if ttl <= 0:
            raise ValueError(f"lease_ttl must be positive, got {ttl}")
        deadline = None if wait is True else time.monotonic() + float(wait or 0)
        pause = min(0.05, ttl / 10)
        while True:
            got = self._try_acquire(session_id, owner, ttl)
            if isinstance(got, int):
                return Lease(self, session_id, owner, got, ttl)
            if deadline is not None and time.monotonic() >= deadline:
                raise got
            time.sleep(pause)
            pause = min(pause * 2, 0.5, ttl / 4)

    def _check_lease(self, tx: _Tx, session: Session) -> None:
        """Inside a write: the session is ours to write (fencing), and our lease is renewed."""
        self._lock_session(tx, session.session_id)
        row = tx.execute(
            "SELECT owner, token, expires_at FROM leases WHERE session_id = ?",
            (session.session_id,),
        ).fetchone()
        lease = session.lease
        if lease is None:
            now = self._clock(tx)
            holder = _live_holder(row, now)
            if holder is not None:
                raise SessionBusy(session.session_id, holder, float(row[2]) - now)
            return
        if row is None or int(row[1]) != lease.token:
            lease.lost = True
            holder = "nobody" if row is None or row[0] is None else str(row[0])
            raise LeaseLost(
                f"this worker's lease on session {session.session_id!r} was taken over "
                f"(now held by {holder}); its write was refused. Stop this run: the other "
                "worker continues the session."
            )
        tx.execute(
            "UPDATE leases SET expires_at = ? WHERE session_id = ? AND token = ?",
            (self._clock(tx) + lease.ttl, session.session_id, lease.token),
        )

    def _renew(self, lease: Lease) -> bool:
        with self._errors(f"written (lease of {lease.session_id!r})"), self._transaction() as tx:
            self._lock_session(tx, lease.session_id)
            row = tx.execute(
                "SELECT token FROM leases WHERE session_id = ?", (lease.session_id,)
            ).fetchone()
            if row is None or int(row[0]) != lease.token:
                return False
            tx.execute(
                "UPDATE leases SET expires_at = ? WHERE session_id = ? AND token = ?",
                (self._clock(tx) + lease.ttl, lease.session_id, lease.token),
            )
            return True

    def _release(self, lease: Lease) -> None:
        with self._errors(f"written (lease of {lease.session_id!r})"), self._transaction() as tx:
            tx.execute(
                "UPDATE leases SET owner = NULL, expires_at = 0 WHERE session_id = ? AND token = ?",
                (lease.session_id, lease.token),
            )


@dataclass(eq=False)
class Lease:
    """This worker's hold on one session: renewed in the background until released."""

    store: SessionStore = field(repr=False)
    session_id: str
    owner: str
    token: int
    """The fencing token: grows with every acquisition; writes carry it."""
    ttl: float
    lost: bool = field(default=False, init=False)
    """Set when a renewal or a write found the lease taken over."""
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"q3agent-lease-{self.session_id}", daemon=True
        )
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store._renew(self):
                    self.lost = True
                    return
            except SessionError:
                continue  # the next write reports a lasting problem; try again
            finally:
                _close_thread_connection(self.store)

    def release(self) -> None:
        """Give the session up (idempotent): another worker may take it at once."""
        if self._stop.is_set():
            return
        self._stop.set()
        if not self.lost:
            with contextlib.suppress(SessionError):
                self.store._release(self)


def _close_thread_connection(store: SessionStore) -> None:
    closer = getattr(store, "_close_thread", None)
    if callable(closer):
        closer()


class Session(Closing):
    """One persisted conversation; every method commits before returning."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self.lease: Lease | None = None
        """This worker's lease when opened with ``lease=True``."""

    @contextlib.contextmanager
    def _write(self) -> Iterator[_Tx]:
        with (
            self.store._errors(f"written (session {self.session_id!r})"),
            self.store._transaction() as tx,
        ):
            self.store._check_lease(tx, self)
            yield tx
            tx.execute(
                "UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), self.session_id)
            )

    def _append(self, tx: _Tx, messages: Sequence[Message]) -> None:
        row = tx.execute(
            "SELECT COALESCE(MAX(seq), -1) FROM messages WHERE session_id = ?",
            (self.session_id,),
        ).fetchone()
        start = int(row[0]) + 1
        payload = dump_messages(messages)
        tx.executemany(
            "INSERT INTO messages (session_id, seq, message) VALUES (?, ?, ?)",
            [(self.session_id, start + i, json.dumps(m)) for i, m in enumerate(payload)],
        )

    def append_messages(self, messages: Iterable[Message]) -> None:
        """Append messages to the conversation."""
        items = list(messages)
        if not items:
            return
        with self._write() as tx:
            self._append(tx, items)

    def record_tool_result(self, call_id: str, result: Any) -> None:
        """Record that the tool call ``call_id`` completed with ``result`` (JSON-serialisable)."""
        with self._write() as tx:
            tx.execute(
                "INSERT INTO tool_results (session_id, call_id, result, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (session_id, call_id) DO UPDATE SET "
                "result = excluded.result, created_at = excluded.created_at",
                (self.session_id, call_id, json.dumps(result), time.time()),
            )

    def completed_tool_result(self, call_id: str) -> Any | None:
        """The recorded result of ``call_id``, or ``None`` when it never completed (or its
        record cannot be read: the call then runs again)."""
        with self.store._errors(f"read (session {self.session_id!r})"):
            row = (
                self.store._reader()
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
        with self._write() as tx:
            if messages:
                self._append(tx, messages)
            tx.execute(
                "INSERT INTO steps (session_id, step, record, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session_id, step) DO UPDATE SET "
                "record = excluded.record, created_at = excluded.created_at",
                (self.session_id, step, json.dumps(dict(record)), time.time()),
            )

    def replace_messages(self, messages: Sequence[Message]) -> None:
        """Replace the whole conversation (after summarising old turns, for example)."""
        with self._write() as tx:
            tx.execute("DELETE FROM messages WHERE session_id = ?", (self.session_id,))
            self._append(tx, messages)

    def close(self) -> None:
        """Release this session's lease, if it holds one (it stays readable and writable
        until another worker takes it)."""
        if self.lease is not None:
            self.lease.release()

    def load(self, *, strict: bool = False) -> SessionState:
        """Read the whole session back.

        Rows that cannot be read are skipped and listed in ``problems`` (with a
        :class:`SessionWarning`); ``strict=True`` raises :class:`SessionError` instead, with
        the readable part as its ``state``. A damaged database raises :class:`SessionError`
        naming it.
        """
        problems: list[str] = []
        where = f"session {self.session_id!r} in {self.store.location}"

        def rows(sql: str, what: str, read: Callable[[tuple[Any, ...]], Any]) -> list[Any]:
            out: list[Any] = []
            with self.store._errors(f"read ({where})"):
                fetched = self.store._reader().execute(sql, (self.session_id,)).fetchall()
            for row in fetched:
                try:
                    out.append(read(tuple(row)))
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


# -- SQLite -------------------------------------------------------------------------------


def _damaged(path: Path, what: str, exc: BaseException) -> SessionError:
    return SessionError(
        f"the session database {path} could not be {what} ({type(exc).__name__}: {exc}). "
        f"If the file is damaged, move it aside and start with a new one (or recover it with "
        f"`sqlite3 {path} .recover`); if it is busy, retry when the other process is done."
    )


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)


def sqlite_path(url: str | os.PathLike[str]) -> Path:
    """The file of ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or a plain path."""
    text = os.fspath(url)
    if text.startswith("sqlite:"):
        rest = text[len("sqlite:") :]
        if not rest.startswith("///"):
            raise ValueError(
                f"session URL {text!r}: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        text = rest[3:]
    return Path(text).expanduser()


class SQLiteSessionStore(SessionStore):
    """Sessions in one SQLite file (WAL mode: readers never block the writer).

    Every connection is closed (and the WAL checkpointed into the file) by :meth:`close`, or
    at the latest when the process exits, so the ``.db`` file alone holds everything.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        owner: str | None = None,
    ) -> None:
        self.path = sqlite_path(path)
        self.owner = owner
        self.location = str(self.path)
        self.lease_ttl = lease_ttl
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create_or_check()
        with self._errors("opened as a SQLite database"):
            self._connect().executescript(_SQLITE_SCHEMA)
        weakref.finalize(self, _close_all, self._conns, self._conns_lock)

    def _create_or_check(self) -> None:
        """Create a new file whole (never a 0-byte file other processes could see), or
        refuse an existing one that lost its contents."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}.new")
            try:
                conn = sqlite3.connect(tmp, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SQLITE_SCHEMA)
                conn.close()
                with contextlib.suppress(FileExistsError):  # another process was first
                    os.link(tmp, self.path)
            except (sqlite3.Error, OSError) as exc:
                raise _damaged(self.path, "created", exc) from exc
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return
        if size == 0:
            raise SessionError(
                f"the session database {self.path} is empty (0 bytes): its sessions are gone "
                "(was it truncated, or copied without its -wal file?). Restore it from a "
                "backup, or move it aside to start new sessions."
            )

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,  # only close() touches it from another thread
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise _damaged(self.path, "opened as a SQLite database", exc) from exc
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SQLiteTx(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _reader(self) -> _Tx:
        return _SQLiteTx(self._connect())

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _damaged(self.path, what, exc) from exc

    def _close_thread(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._conns_lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close every connection."""
        self._local = threading.local()
        _close_all(self._conns, self._conns_lock)


def _close_all(conns: list[sqlite3.Connection], lock: threading.Lock) -> None:
    with lock:
        pending, conns[:] = list(conns), []
    for i, conn in enumerate(pending):
        with contextlib.suppress(sqlite3.Error):
            if i == len(pending) - 1:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()


def _store_class(target: object) -> type[SessionStore]:
    text = os.fspath(target) if isinstance(target, str | os.PathLike) else None
    if text is None:
        raise TypeError(
            "SessionStore needs a URL or path: sqlite:///sessions.db, a file path, or "
            "postgresql://user@host/db"
        )
    if text.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        from q3agent.memory.postgres import PostgresSessionStore

        return PostgresSessionStore
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme and scheme != "sqlite":
        raise ValueError(
            f"session store {text!r}: unknown scheme {scheme!r}; use sqlite:///path.db, a "
            "file path, or postgresql://user@host/db"
        )
    return SQLiteSessionStore


def session_store(url: str | os.PathLike[str] | SessionStore, **options: Any) -> SessionStore:
    """The store ``url`` names (a :class:`SessionStore` is returned as it is)."""
    if isinstance(url, SessionStore):
        return url
    return _store_class(url)(url, **options)
