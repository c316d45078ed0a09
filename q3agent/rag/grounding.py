"""Grounded answers: numbered sources, the ``rag_search`` tool, and citation checking.

A :class:`CitationBank` gives each distinct source (URL or path) one number, in the order
sources are first retrieved, without gaps; passages from the same source share it. The model
cites ``[n]``; :func:`check_citations` keeps citations of numbers that were retrieved, removes
and flags the others, and attaches the numbered source list. Deep research reuses the bank for
web evidence.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from q3agent.rag.retrieval import Passage

if TYPE_CHECKING:
    from q3agent.rag.retrieval import Retriever
    from q3agent.tools import FunctionTool

GROUNDING_INSTRUCTIONS = (
    "Answer from the numbered sources. Cite each claim with the source number in square "
    "brackets, like [1] or [2][3]. Cite only numbers that appear in the sources; if the "
    "sources do not contain the answer, say so."
)
"""System-prompt text that asks the model for ``[n]`` citations."""

_TRACKING_PARAMS = re.compile(r"^(utm_\w+|fbclid|gclid|mc_cid|mc_eid|ref)$", re.IGNORECASE)


def source_key(location: str) -> str:
    """Normalise a source for de-duplication: URLs lose fragments, tracking parameters,
    default ports and trailing slashes (scheme and host lower-cased); paths are resolved."""
    if "://" in location:
        parts = urlsplit(location.strip())
        host = (parts.hostname or "").lower()
        if parts.port and not (
            (parts.scheme == "http" and parts.port == 80)
            or (parts.scheme == "https" and parts.port == 443)
        ):
            host = f"{host}:{parts.port}"
        query = urlencode(
            sorted((k, v) for k, v in parse_qsl(parts.query) if not _TRACKING_PARAMS.match(k))
        )
        path = parts.path.rstrip("/") or "/"
        return urlunsplit((parts.scheme.lower(), host, path, query, ""))
    try:
        return str(Path(location).expanduser().resolve())
    except (OSError, RuntimeError):
        return location


@dataclass
class CitedSource:
    """One numbered source: where it is, what it is called, and the evidence taken from it."""

    number: int
    location: str
    title: str
    passages: list[Passage] = field(default_factory=list)

    def line(self) -> str:
        """``[n] Title — location`` for a source list."""
        if self.title and self.title != self.location:
            return f"[{self.number}] {self.title} — {self.location}"
        return f"[{self.number}] {self.location}"


class CitationBank:
    """Numbers sources as they are retrieved: one number per distinct source, no gaps.

    Thread-safe, so parallel tool calls can share one bank. ``add`` returns the source's
    number; passages are kept (deduplicated by id) as the evidence behind that number.
    """

    def __init__(self) -> None:
        self._sources: list[CitedSource] = []
        self._by_key: dict[str, CitedSource] = {}
        self._passage_ids: set[str] = set()
        self._lock = threading.Lock()

    def add(self, passage: Passage) -> int:
        """Register a passage; returns the number of its source."""
        key = source_key(passage.source) if passage.source else f"passage:{passage.id}"
        with self._lock:
            source = self._by_key.get(key)
            if source is None:
                source = CitedSource(
                    len(self._sources) + 1, passage.source or key, passage.title or ""
                )
                self._sources.append(source)
                self._by_key[key] = source
            if passage.id not in self._passage_ids:
                self._passage_ids.add(passage.id)
                source.passages.append(passage)
            return source.number

    def add_all(self, passages: Iterable[Passage]) -> list[int]:
        """Register passages in order; their source numbers."""
        return [self.add(p) for p in passages]

    def add_document(self, location: str, title: str = "", text: str = "") -> int:
        """Register evidence that did not come from the store (a fetched web page, a note)."""
        digest = hashlib.sha256(f"{location}\0{text}".encode()).hexdigest()[:16]
        return self.add(Passage(id=digest, text=text, source=location, title=title))

    def number_of(self, location: str) -> int | None:
        """The number given to ``location``, if it was registered."""
        source = self._by_key.get(source_key(location))
        return source.number if source else None

    def sources(self) -> list[CitedSource]:
        """All numbered sources, in number order."""
        with self._lock:
            return list(self._sources)

    def get(self, number: int) -> CitedSource | None:
        """The source with that number."""
        if 1 <= number <= len(self._sources):
            return self._sources[number - 1]
        return None

    def as_mapping(self) -> dict[int, Passage]:
        """``number -> first passage`` (what :func:`check_citations` accepts)."""
        return {s.number: s.passages[0] for s in self.sources() if s.passages}

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, number: object) -> bool:
        return isinstance(number, int) and 1 <= number <= len(self._sources)

    def format_passages(self, passages: Sequence[Passage], *, max_chars: int = 1200) -> str:
        """Register ``passages`` and render them for the model, each under its ``[n]``."""
        if not passages:
            return "No matching passages were found."
        blocks = []
        for passage in passages:
            number = self.add(passage)
            heading = passage.label()
            if passage.section and passage.section != passage.title:
                heading += f" — {passage.section}"
            text = passage.text.strip()
            if len(text) > max_chars:
                text = text[:max_chars].rstrip() + " …"
            blocks.append(f"[{number}] {heading}\n{text}")
        return "\n\n".join(blocks)


@dataclass
class GroundedAnswer:
    """An answer after citation checking."""

    text: str
    """The answer with invalid citations removed (and renumbered when asked)."""
    cited: list[int]
    """Valid source numbers cited, in order of first use."""
    invalid: list[int]
    """Numbers the model cited that were never retrieved (removed from ``text``)."""
    sources: list[CitedSource]
    """The cited sources, numbered as in ``text``."""

    @property
    def has_citations(self) -> bool:
        """Whether the answer cites at least one retrieved source."""
        return bool(self.cited)

    def source_list(self) -> str:
        """``Sources:`` followed by one ``[n] title — location`` line per cited source."""
        if not self.sources:
            return ""
        return "Sources:\n" + "\n".join(s.line() for s in self.sources)

    def render(self) -> str:
        """The answer followed by its source list."""
        listing = self.source_list()
        return f"{self.text}\n\n{listing}" if listing else self.text


_MARK = "\ue000"  # private-use character: marks kept numbers while rewriting
_CITATION = re.compile(r"(?P<space>[ \t]?)\[(?P<nums>\d+(?:\s*,\s*\d+)*)\](?!\()")


def _as_sources(retrieved: Mapping[int, Passage] | CitationBank) -> dict[int, CitedSource]:
    if isinstance(retrieved, CitationBank):
        return {s.number: s for s in retrieved.sources()}
    return {n: CitedSource(n, p.source, p.title, [p]) for n, p in sorted(retrieved.items())}


def check_citations(
    answer: str, retrieved: Mapping[int, Passage] | CitationBank, *, renumber: bool = False
) -> GroundedAnswer:
    """Check ``[n]`` citations in ``answer`` against what was retrieved.

    Citations of numbers not in ``retrieved`` are removed and reported in ``invalid``;
    ``[1, 7]`` keeps ``[1]`` when only 7 is unknown. Markdown links (``[1](url)``) are left
    alone. With ``renumber``, cited sources are renumbered 1, 2, … in order of first use so
    the source list has no gaps.
    """
    known = _as_sources(retrieved)
    cited: list[int] = []
    invalid: list[int] = []

    def scan(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.split(r"\s*,\s*", match.group("nums"))]
        good = []
        for n in numbers:
            if n in known:
                good.append(n)
                if n not in cited:
                    cited.append(n)
            elif n not in invalid:
                invalid.append(n)
        if not good:
            return ""
        return f"{match.group('space')}[{', '.join(f'{_MARK}{n}{_MARK}' for n in good)}]"

    marked = _CITATION.sub(scan, answer)
    mapping = {n: (i + 1 if renumber else n) for i, n in enumerate(cited)}
    text = re.sub(f"{_MARK}(\\d+){_MARK}", lambda m: str(mapping[int(m.group(1))]), marked)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text) if invalid else text
    sources = []
    for n in sorted(cited, key=lambda n: mapping[n]):
        src = known[n]
        sources.append(CitedSource(mapping[n], src.location, src.title, list(src.passages)))
    return GroundedAnswer(text=text, cited=[mapping[n] for n in cited], invalid=invalid,
                          sources=sources)  # fmt: skip


def grounded_prompt(question: str, passages: Sequence[Passage], bank: CitationBank) -> str:
    """A user message that carries retrieved context (the "inject context" option): numbered
    sources, the question, and the citation instruction."""
    return (
        f"Sources:\n\n{bank.format_passages(passages)}\n\n"
        f"{GROUNDING_INSTRUCTIONS}\n\nQuestion: {question}"
    )


def make_rag_search_tool(
    retriever: Retriever,
    bank: CitationBank,
    *,
    default_k: int = 5,
    max_k: int = 20,
    name: str = "rag_search",
) -> FunctionTool[..., Any]:
    """The ``rag_search`` tool: searches the store and returns numbered passages.

    Numbers come from ``bank`` (one per task), so the final answer can be checked with
    ``check_citations(answer, bank)``.
    """
    from q3agent.tools import tool

    async def rag_search(query: str, k: int = default_k) -> str:
        """Search the document store for passages relevant to a question.

        Returns passages numbered [1], [2], ...; cite those numbers in the answer.

        Args:
            query: What to look for: a question or keywords (error codes and identifiers work).
            k: How many passages to return.
        """
        passages = await retriever.asearch(query, max(1, min(int(k), max_k)))
        return bank.format_passages(passages)

    return tool(rag_search, name=name)


def passages_json(passages: Sequence[Passage], bank: CitationBank | None = None) -> list[Any]:
    """JSON-ready dicts for passages (CLI ``--json``), numbered through ``bank`` if given."""
    out = []
    for i, p in enumerate(passages, 1):
        item: dict[str, Any] = {
            "n": bank.add(p) if bank is not None else i,
            "id": p.id,
            "source": p.source,
            "title": p.title,
            "section": p.section,
            "page": p.page,
            "chunk_index": p.chunk_index,
            "char_span": [p.char_start, p.char_end],
            "score": p.score,
            "dense_rank": p.dense_rank,
            "bm25_rank": p.bm25_rank,
            "text": p.text,
        }
        out.append(item)
    return out
