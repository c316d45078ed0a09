"""Ingestion: files, folders and URLs into chunks in a :class:`~q3agent.rag.store.RagStore`.

Each document is identified by its source (absolute path or URL) and fingerprinted by a hash
of its raw bytes, so re-ingesting is idempotent: unchanged documents are skipped, changed ones
have their old chunks replaced, and files that disappeared from an ingested folder are removed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread

from q3agent.rag.chunking import DEFAULT_CHUNK_TOKENS, Chunk, TokenChunker, chunker_for
from q3agent.rag.store import RagStore

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst", ".log", ".csv", ".tsv"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
PDF_SUFFIXES = frozenset({".pdf"})
CODE_SUFFIXES = frozenset(
    {
        ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".go", ".rs", ".java", ".kt", ".c", ".h",
        ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".sql",
        ".lua", ".r", ".jl", ".toml", ".yaml", ".yml", ".json", ".ini", ".cfg", ".proto",
    }
)  # fmt: skip
SUPPORTED_SUFFIXES = (
    MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | CODE_SUFFIXES
)
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv"})
HEADER_RESERVE_TOKENS = 32
"""Tokens kept free in each chunk for the ``title > section`` line embedded with it."""


class IngestError(RuntimeError):
    """A document could not be read or fetched."""


class IngestWarning(UserWarning):
    """Some inputs of an ingest could not be read; the others were ingested."""


@dataclass
class SourceDocument:
    """A loaded document: its text (per page for PDFs) and identity."""

    source: str
    """Absolute file path or URL; the key documents are replaced and deleted by."""
    title: str
    kind: str
    """``markdown``, ``text``, ``html``, ``pdf`` or ``code``."""
    pages: list[tuple[int | None, str]]
    """``(page number, text)``; a single ``(None, text)`` for non-paged documents."""
    content_hash: str
    """SHA-256 of the raw bytes."""


@dataclass
class IngestReport:
    """What an ingest run did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0

    def summary(self) -> str:
        """One line for humans."""
        text = (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, "
            f"{self.chunks_written} chunks written"
        )
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text

    @property
    def ok(self) -> bool:
        """Whether every input was ingested (``failed`` says which were not, and why)."""
        return not self.failed


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_id(source: str, index: int, text: str) -> str:
    """Stable id of a chunk (also its citation id): a short hash of source, position and text."""
    digest = hashlib.sha256(f"{source}\0{index}\0{text}".encode()).hexdigest()
    return digest[:16]


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_MD_TITLE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _markdown_title(text: str, fallback: str) -> str:
    match = _MD_TITLE.search(text)
    return match.group(1).strip() if match else fallback


def html_to_markdown_text(html: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML page: scripts, styles and navigation dropped, headings kept
    as Markdown ``#`` lines so chunking can follow them."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "footer", "header", "aside", "form"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            text = heading.get_text(" ", strip=True)
            heading.replace_with(f"\n\n{'#' * level} {text}\n\n")
            if not title and level == 1:
                title = text
    body = soup.body or soup
    text = body.get_text("\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return title, text


def _pdf_pages(data: bytes) -> tuple[str, list[tuple[int | None, str]]]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages: list[tuple[int | None, str]] = [
            (number, page.extract_text() or "") for number, page in enumerate(reader.pages, 1)
        ]
        meta = reader.metadata
        title = str(meta.title) if meta is not None and meta.title else ""
    except (PdfReadError, ValueError, KeyError) as exc:
        raise IngestError(f"could not parse PDF ({exc})") from exc
    return title, pages


def parse_document(
    source: str, data: bytes, *, suffix: str, content_type: str = ""
) -> SourceDocument:
    """Turn raw bytes into a :class:`SourceDocument`, choosing a parser by suffix/content type."""
    digest = _sha256(data)
    stem = Path(urlparse_path(source)).stem or source
    if suffix in PDF_SUFFIXES or "application/pdf" in content_type:
        title, pages = _pdf_pages(data)
        return SourceDocument(source, title or stem, "pdf", pages, digest)
    if suffix in HTML_SUFFIXES or "text/html" in content_type:
        title, text = html_to_markdown_text(_decode(data))
        return SourceDocument(source, title or stem, "html", [(None, text)], digest)
    text = _decode(data)
    if suffix in MARKDOWN_SUFFIXES or "markdown" in content_type:
        title = _markdown_title(text, stem)
        return SourceDocument(source, title, "markdown", [(None, text)], digest)
    kind = "code" if suffix in CODE_SUFFIXES else "text"
    title = Path(source).name if kind == "code" else stem
    return SourceDocument(source, title, kind, [(None, text)], digest)


def urlparse_path(source: str) -> str:
    """The path part of a URL (or the source itself for files)."""
    if "://" in source:
        from urllib.parse import urlparse

        return urlparse(source).path or "/"
    return source


def is_url(text: str) -> bool:
    """Whether an ingest argument is an http(s) URL rather than a path."""
    return text.startswith(("http://", "https://"))


def load_file(path: str | os.PathLike[str]) -> SourceDocument:
    """Read and parse one local file."""
    file = Path(path).expanduser().resolve()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise IngestError(f"could not read {file}: {exc.strerror or exc}") from exc
    return parse_document(str(file), data, suffix=file.suffix.lower())


def load_url(url: str, *, client: Any | None = None, timeout: float = 30.0) -> SourceDocument:
    """Fetch and parse one URL with httpx (redirects followed)."""
    import httpx

    own = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=timeout)
    try:
        response = http.get(url)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise IngestError(f"could not fetch {url}: {exc}") from exc
    finally:
        if own:
            http.close()
    content_type = response.headers.get("content-type", "").lower()
    suffix = Path(urlparse_path(url)).suffix.lower()
    return parse_document(url, response.content, suffix=suffix, content_type=content_type)


def walk_folder(folder: Path) -> Iterator[Path]:
    """Supported files under ``folder`` (hidden and tool directories skipped), sorted."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            if path.suffix.lower() in SUPPORTED_SUFFIXES and not name.startswith("."):
                yield path


def chunk_document(doc: SourceDocument, chunker: TokenChunker) -> list[tuple[int | None, Chunk]]:
    """All chunks of a document with their page numbers."""
    chunks: list[tuple[int | None, Chunk]] = []
    for page, text in doc.pages:
        if not text.strip():
            continue
        pieces = (
            chunker.split_markdown(text)
            if doc.kind in ("markdown", "html")
            else chunker.split(text)
        )
        chunks.extend((page, piece) for piece in pieces)
    return chunks


def embedding_text(title: str, section: str, text: str) -> str:
    """The text embedded for a chunk: a short ``title > section`` line, then the chunk."""
    header = title if not section or section == title else f"{title} > {section}"
    return f"{header[:160]}\n\n{text}" if header else text


class Ingestor:
    """Ingests documents into a store, batching embeddings across documents.

    ``chunk_tokens`` is clamped so a chunk plus its title line fits the embedding model;
    ``overlap_tokens`` defaults to 15% of the chunk size.
    """

    def __init__(
        self,
        store: RagStore,
        *,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        overlap_tokens: int | None = None,
        batch_chunks: int = 128,
    ) -> None:
        self.store = store
        embedder = store.embedder
        self.chunker = chunker_for(
            embedder.tokenizer,
            embedder.max_tokens - HEADER_RESERVE_TOKENS,
            chunk_tokens,
            overlap_tokens,
        )
        self.batch_chunks = batch_chunks
        self.http_client: Any | None = None
        """An ``httpx.Client`` for URLs (e.g. one that refuses some hosts); ``None``: a new one."""
        self._pending: list[tuple[SourceDocument, list[tuple[int | None, Chunk]]]] = []
        self._replacing: set[str] = set()
        self._pending_chunks = 0

    def stored_documents(self) -> dict[str, dict[str, Any]]:
        """``source -> metadata of its first chunk`` for every document in the store."""
        records = self.store.iter_all(where={"chunk_index": 0})
        return {
            str(c.metadata["source"]): dict(c.metadata)
            for c in records
            if isinstance(c.metadata.get("source"), str)
        }

    def _flush(self, report: IngestReport) -> None:
        if not self._pending:
            return
        ids: list[str] = []
        texts: list[str] = []
        to_embed: list[str] = []
        metas: list[dict[str, Any]] = []
        for doc, chunks in self._pending:
            for index, (page, chunk) in enumerate(chunks):
                ids.append(chunk_id(doc.source, index, chunk.text))
                texts.append(chunk.text)
                to_embed.append(embedding_text(doc.title, chunk.section, chunk.text))
                meta: dict[str, Any] = {
                    "source": doc.source,
                    "title": doc.title,
                    "kind": doc.kind,
                    "section": chunk.section,
                    "chunk_index": index,
                    "n_chunks": len(chunks),
                    "char_start": chunk.start,
                    "char_end": chunk.end,
                    "doc_hash": doc.content_hash,
                }
                if page is not None:
                    meta["page"] = page
                metas.append(meta)
        vectors = self.store.embedder.embed_documents(to_embed)
        for doc, _ in self._pending:
            if doc.source in self._replacing:  # new documents have nothing to delete
                self.store.delete_where({"source": doc.source})
        self.store.upsert(ids, texts, vectors, metas)
        report.chunks_written += len(ids)
        self._pending, self._pending_chunks = [], 0
        self._replacing.clear()

    def ingest(
        self,
        inputs: Sequence[str | os.PathLike[str]],
        *,
        progress: bool = True,
        prune: bool = True,
    ) -> IngestReport:
        """Ingest files, folders and URLs. With ``prune``, stored documents under an ingested
        folder whose files are gone are deleted."""
        report = IngestReport()
        stored = self.stored_documents()
        items: list[str | Path] = []
        folders: list[Path] = []
        for raw in inputs:
            text = os.fspath(raw)
            if is_url(text):
                items.append(text)
                continue
            path = Path(text).expanduser().resolve()
            if path.is_dir():
                folders.append(path)
                items.extend(walk_folder(path))
            elif path.is_file():
                items.append(path)
            else:
                report.failed.append((str(path), "no such file or directory"))
        seen: set[str] = set()
        with _progress(progress, len(items)) as advance:
            for item in items:
                source = item if isinstance(item, str) else str(item)
                if source in seen:
                    advance(source)
                    continue
                seen.add(source)
                try:
                    doc = (
                        load_url(item, client=self.http_client)
                        if isinstance(item, str)
                        else load_file(item)
                    )
                except IngestError as exc:
                    report.failed.append((source, str(exc)))
                    advance(source)
                    continue
                previous = stored.get(doc.source)
                if previous is not None and previous.get("doc_hash") == doc.content_hash:
                    report.unchanged.append(doc.source)
                    advance(source)
                    continue
                chunks = chunk_document(doc, self.chunker)
                (report.updated if previous is not None else report.added).append(doc.source)
                if not chunks:
                    self.store.delete_where({"source": doc.source})
                else:
                    if previous is not None:
                        self._replacing.add(doc.source)
                    self._pending.append((doc, chunks))
                    self._pending_chunks += len(chunks)
                    if self._pending_chunks >= self.batch_chunks:
                        self._flush(report)
                advance(source)
            self._flush(report)
        if prune:
            for folder in folders:
                prefix = str(folder) + os.sep
                for source in stored:
                    if source.startswith(prefix) and source not in seen:
                        self.store.delete_where({"source": source})
                        report.removed.append(source)
        return report

    async def aingest(
        self,
        inputs: Sequence[str | os.PathLike[str]],
        *,
        progress: bool = False,
        prune: bool = True,
    ) -> IngestReport:
        """:meth:`ingest` in a worker thread."""

        def run() -> IngestReport:
            return self.ingest(inputs, progress=progress, prune=prune)

        return await anyio.to_thread.run_sync(run)


class _progress:
    """A rich progress bar over documents, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Advance:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]ingest"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=self.total)
        return _Advance(self)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


class _Advance:
    def __init__(self, owner: _progress) -> None:
        self._owner = owner

    def __call__(self, source: str) -> None:
        if self._owner._bar is not None:
            name = Path(urlparse_path(source)).name or source
            self._owner._bar.update(self._owner._task, advance=1, description=name[-40:])


def ingest(
    store: RagStore,
    inputs: Iterable[str | os.PathLike[str]],
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap_tokens: int | None = None,
    progress: bool = True,
    prune: bool = True,
) -> IngestReport:
    """Ingest files, folders and URLs into ``store`` (see :class:`Ingestor`).

    Inputs that cannot be read (a missing file, a failed fetch) do not stop the others: they
    are listed in the report's ``failed`` and in one :class:`IngestWarning`.
    """
    ingestor = Ingestor(store, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
    report = ingestor.ingest(list(inputs), progress=progress, prune=prune)
    if report.failed:
        import warnings

        listed = "; ".join(f"{source}: {why}" for source, why in report.failed)
        warnings.warn(
            f"{len(report.failed)} of the inputs could not be ingested ({listed}); the rest "
            "were. Fix them and ingest again (unchanged documents are skipped).",
            IngestWarning,
            stacklevel=2,
        )
    return report
