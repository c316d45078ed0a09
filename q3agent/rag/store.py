"""The Chroma-backed vector store behind RAG and long-term memory.

A :class:`RagStore` is one Chroma collection (cosine space) plus the embedder that filled it.
It opens a persistent directory (the default, one process at a time, guarded by a file lock),
a Chroma server over HTTP (for sharing one store between processes), or an in-memory client
(tests). Vectors are always computed by q3agent and passed in: Chroma never embeds anything.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from q3agent.closing import Closing
from q3agent.errors import UsageError
from q3agent.rag.embeddings import Embedder, shared_embedder

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

DEFAULT_COLLECTION = "q3agent-docs"
"""Collection that holds ingested documents."""

MetadataValue = str | int | float | bool
Metadata = dict[str, MetadataValue]


class StoreError(UsageError, RuntimeError):
    """A RAG store could not be opened or used as asked."""


class StoreLockedError(StoreError):
    """Another process holds the persistent store directory."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"the RAG store at {path} is in use by {holder}. Only one process may open a "
            "persistent store directory at a time: close that process (a running q3agent, "
            "notebook or script), or pass a different --store directory. To share one store "
            f"between processes, serve it with `chroma run --path {path} --port 8000` and "
            "connect with --url http://localhost:8000."
        )
        self.path = path
        self.pid = pid


class EmbeddingMismatchError(StoreError):
    """The collection was filled with a different embedding model than the one given."""


def default_store_dir() -> Path:
    """The per-user data directory used when no store directory is named."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("q3agent", appauthor=False)) / "rag"


def chroma_settings() -> Any:
    """Chroma client settings used everywhere in q3agent (anonymized telemetry off)."""
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


class _DirectoryLock:
    """An exclusive, process-wide lock on a store directory, shared by the owning process."""

    _held: dict[Path, tuple[Any, int]] = {}  # noqa: RUF012 - process-wide registry
    _guard = threading.Lock()

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        with self._guard:
            if path in self._held:
                lock, count = self._held[path]
                self._held[path] = (lock, count + 1)
                return
            from filelock import FileLock, Timeout

            lock = FileLock(path / "q3agent.lock", timeout=timeout)
            try:
                lock.acquire()
            except Timeout:
                raise StoreLockedError(path, self._owner(path)) from None
            (path / "q3agent.lock.owner").write_text(str(os.getpid()))
            self._held[path] = (lock, 1)

    @staticmethod
    def _owner(path: Path) -> int | None:
        try:
            return int((path / "q3agent.lock.owner").read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        with self._guard:
            if self.path not in self._held:
                return
            lock, count = self._held[self.path]
            if count > 1:
                self._held[self.path] = (lock, count - 1)
                return
            del self._held[self.path]
            (self.path / "q3agent.lock.owner").unlink(missing_ok=True)
            lock.release()


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as read back from the store."""

    id: str
    text: str
    metadata: Metadata
    distance: float | None = None
    """Cosine distance to the query (0 = same direction), for query results."""


def _clean_metadata(metadata: Mapping[str, Any]) -> Metadata:
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)}


_NAME_CHARS = re.compile(r"[^a-zA-Z0-9._-]+")


def collection_name(name: str) -> str:
    """A Chroma-valid collection name (3-512 chars of ``[a-zA-Z0-9._-]``) derived from ``name``."""
    cleaned = _NAME_CHARS.sub("-", name).strip("-._") or "q3agent"
    if len(cleaned) < 3:
        cleaned = f"{cleaned}-q3"
    return cleaned[:512]


class RagStore(Closing):
    """One Chroma collection and its embedder; use :meth:`open` (or the named constructors).

    Writes are batched under the client's maximum batch size. ``revision`` increases with
    every write made through this object, so caches built from the contents (the BM25 index)
    know when to rebuild. The chunk count is kept with the store (asking Chroma costs more
    than the rest of a query): refreshed after every write through this object and, when
    ``count_ttl`` is set (a shared Chroma server other processes write to), once it is older
    than that many seconds.
    """

    def __init__(
        self,
        client: Any,
        *,
        embedder: Embedder,
        collection: str = DEFAULT_COLLECTION,
        location: str = "memory",
        lock: _DirectoryLock | None = None,
        count_ttl: float | None = None,
    ) -> None:
        self.client = client
        self.embedder = embedder
        self.location = location
        self._lock = lock
        self._closed = False
        self.revision = 0
        self.count_ttl = count_ttl
        self._count: int | None = None
        self._counted_at = 0.0
        meta = {"embedding_model": embedder.name, "dimension": embedder.dimension}
        self.collection = client.get_or_create_collection(
            collection_name(collection),
            configuration={"hnsw": {"space": "cosine"}},
            metadata=meta,
            embedding_function=None,
        )
        existing = self.collection.metadata or {}
        if existing.get("embedding_model", embedder.name) != embedder.name:
            self.close()
            raise EmbeddingMismatchError(
                f"collection {self.collection.name!r} in {location} was built with the "
                f"embedding model {existing['embedding_model']!r}, but {embedder.name!r} was "
                "given. Open it with the same model (--embedding-model), or ingest into a new "
                "store directory or collection."
            )
        self.max_batch = max(1, int(client.get_max_batch_size()))

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def persistent(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        embedder: Embedder | None = None,
        collection: str = DEFAULT_COLLECTION,
        lock_timeout: float = 1.0,
    ) -> RagStore:
        """A store in a local directory (default: the per-user data dir), locked to this process.

        Raises :class:`StoreLockedError` when another process has it open.
        """
        import chromadb

        directory = Path(path).expanduser() if path is not None else default_store_dir()
        directory.mkdir(parents=True, exist_ok=True)
        directory = directory.resolve()
        lock = _DirectoryLock(directory, lock_timeout)
        try:
            client = chromadb.PersistentClient(path=str(directory), settings=chroma_settings())
            return cls(
                client,
                embedder=embedder or shared_embedder(),
                collection=collection,
                location=str(directory),
                lock=lock,
            )
        except BaseException:
            lock.release()
            raise

    @classmethod
    def http(
        cls,
        url: str,
        *,
        embedder: Embedder | None = None,
        collection: str = DEFAULT_COLLECTION,
    ) -> RagStore:
        """A store on a Chroma server (``chroma run --path DIR --port 8000``)."""
        import chromadb

        parsed = urlparse(url if "//" in url else f"http://{url}")
        ssl = parsed.scheme == "https"
        try:
            client = chromadb.HttpClient(
                host=parsed.hostname or "localhost",
                port=parsed.port or (443 if ssl else 8000),
                ssl=ssl,
                settings=chroma_settings(),
            )
        except Exception as exc:
            raise StoreError(
                f"could not reach the Chroma server at {url} ({exc}). Start one with "
                "`chroma run --path DIR --port 8000`, or drop --url to use a local directory."
            ) from exc
        return cls(
            client,
            embedder=embedder or shared_embedder(),
            collection=collection,
            location=url,
            count_ttl=2.0,  # other processes may write to a server
        )

    @classmethod
    def ephemeral(
        cls, *, embedder: Embedder | None = None, collection: str | None = None
    ) -> RagStore:
        """An in-memory store (tests, notebooks). Each call gets a fresh collection unless
        ``collection`` names one (in-memory clients share data within a process)."""
        import chromadb

        client = chromadb.EphemeralClient(settings=chroma_settings())
        name = collection or f"{DEFAULT_COLLECTION}-{uuid.uuid4().hex[:12]}"
        return cls(client, embedder=embedder or shared_embedder(), collection=name)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        embedder: Embedder | None = None,
        collection: str = DEFAULT_COLLECTION,
    ) -> RagStore:
        """Open a Chroma server when ``url`` is given, otherwise a persistent directory."""
        if url:
            return cls.http(url, embedder=embedder, collection=collection)
        return cls.persistent(path, embedder=embedder, collection=collection)

    def sibling(self, collection: str) -> RagStore:
        """Another collection on the same client and embedder (e.g. long-term memory)."""
        other = RagStore(
            self.client,
            embedder=self.embedder,
            collection=collection,
            location=self.location,
            count_ttl=self.count_ttl,
        )
        return other

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release the directory lock (the store object must not be used afterwards)."""
        if self._closed:
            return
        self._closed = True
        if self._lock is not None:
            self._lock.release()

    # -- reads -----------------------------------------------------------------------------

    def count(self) -> int:
        """Number of chunks in the collection (kept with the store; see the class docstring)."""
        now = time.monotonic()
        stale = self.count_ttl is not None and now - self._counted_at > self.count_ttl
        if self._count is None or stale:
            self._count = int(self.collection.count())
            self._counted_at = now
        return self._count

    def iter_all(self, *, where: Mapping[str, Any] | None = None) -> Iterator[StoredChunk]:
        """Every chunk (optionally filtered), paged so large stores do not load in one call."""
        offset = 0
        while True:
            page = self.collection.get(
                where=dict(where) if where else None,
                include=["documents", "metadatas"],
                limit=self.max_batch,
                offset=offset,
            )
            ids = page["ids"]
            if not ids:
                return
            for i, doc, meta in zip(ids, page["documents"], page["metadatas"], strict=True):
                yield StoredChunk(i, doc or "", dict(meta or {}))
            offset += len(ids)

    def ids_where(self, where: Mapping[str, Any]) -> set[str]:
        """Ids of the chunks whose metadata matches a Chroma ``where`` filter."""
        result = self.collection.get(where=dict(where), include=[])
        return set(result["ids"])

    def get(self, ids: Sequence[str]) -> list[StoredChunk]:
        """Chunks by id, in the order asked (missing ids are skipped)."""
        if not ids:
            return []
        result = self.collection.get(ids=list(ids), include=["documents", "metadatas"])
        found = {
            i: StoredChunk(i, d or "", dict(m or {}))
            for i, d, m in zip(result["ids"], result["documents"], result["metadatas"], strict=True)
        }
        return [found[i] for i in ids if i in found]

    def query(
        self,
        embedding: npt.NDArray[np.float32] | Sequence[float],
        n: int,
        *,
        where: Mapping[str, Any] | None = None,
    ) -> list[StoredChunk]:
        """The ``n`` chunks nearest to ``embedding`` (cosine), optionally filtered."""
        import numpy as np

        total = self.count()
        if total == 0 or n <= 0:
            return []
        result = self.collection.query(
            query_embeddings=np.asarray([embedding], dtype=np.float32),
            n_results=min(n, total),
            where=dict(where) if where else None,
            include=["documents", "metadatas", "distances"],
        )
        return [
            StoredChunk(i, d or "", dict(m or {}), float(dist))
            for i, d, m, dist in zip(
                result["ids"][0],
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            )
        ]

    # -- writes ----------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        embeddings: npt.NDArray[np.float32] | Sequence[Sequence[float]],
        metadatas: Sequence[Mapping[str, Any]],
    ) -> None:
        """Insert or replace chunks with precomputed embeddings, in batches."""
        import numpy as np

        vectors = np.asarray(embeddings, dtype=np.float32)
        if not len(ids) == len(texts) == len(vectors) == len(metadatas):
            raise ValueError("ids, texts, embeddings and metadatas must have the same length")
        for i in range(0, len(ids), self.max_batch):
            j = i + self.max_batch
            self.collection.upsert(
                ids=list(ids[i:j]),
                documents=list(texts[i:j]),
                embeddings=vectors[i:j],
                metadatas=[_clean_metadata(m) for m in metadatas[i:j]],
            )
        self.revision += 1
        self._count = None

    def delete(self, ids: Sequence[str]) -> None:
        """Remove chunks by id, in batches."""
        for i in range(0, len(ids), self.max_batch):
            self.collection.delete(ids=list(ids[i : i + self.max_batch]))
        if ids:
            self.revision += 1
            self._count = None

    def delete_where(self, where: Mapping[str, Any]) -> int:
        """Remove the chunks matching a metadata filter; returns how many."""
        ids = sorted(self.ids_where(where))
        self.delete(ids)
        return len(ids)
