"""The evidence bank of a research run: numbered sources, their retrieved text, verified notes.

Sources are numbered by :class:`q3agent.rag.CitationBank` (one number per distinct URL or
path, in the order they are first retrieved), so ``rag_search`` results and fetched web pages
share one numbering. A note is admitted as an :class:`EvidenceItem` only when its quote occurs
verbatim (up to whitespace, quote-mark and case differences) in the text retrieved from the
source it names; anything else is kept as a :class:`RejectedNote` for the record.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from q3agent.rag.grounding import CitationBank, CitedSource

MIN_QUOTE_CHARS = 12
"""Quotes shorter than this prove nothing and are rejected."""

_QUOTE_CHARS = str.maketrans(
    {"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "–": "-", "—": "-", "\u00a0": " "}
)
_MARKUP = re.compile(r"[*_`#>|]+")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Text reduced for quote matching: typographic quotes and dashes unified, Markdown
    emphasis and table pipes dropped, whitespace collapsed, case folded."""
    text = text.translate(_QUOTE_CHARS)
    text = _MARKUP.sub(" ", text)
    return _SPACE.sub(" ", text).strip().casefold()


def clean_quote(quote: str) -> str:
    """A quote without surrounding quote marks, ellipses or whitespace."""
    quote = quote.strip().strip("\"'“”‘’").strip()
    quote = re.sub(r"^(\.\.\.|…)\s*|\s*(\.\.\.|…)$", "", quote)
    return quote.strip()


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """A verified note: a claim, the verbatim quote that supports it, and its source."""

    id: str
    """``E1``, ``E2``, … in the order notes were admitted."""
    source: int
    """The source's number in the bank."""
    quote: str
    claim: str
    subquestion: int | None = None
    """Index of the sub-question whose researcher found it."""


@dataclass(frozen=True, slots=True)
class RejectedNote:
    """A note whose quote could not be found in the named source, and why."""

    source: int | None
    quote: str
    claim: str
    reason: str
    subquestion: int | None = None


class EvidenceBank:
    """Shared by all researchers of a run: sources, what was retrieved from them, and notes.

    Thread-safe. ``on_new_source`` is called with each newly numbered source (progress).
    """

    def __init__(
        self,
        citations: CitationBank | None = None,
        *,
        on_new_source: Callable[[CitedSource], None] | None = None,
    ) -> None:
        self.citations = citations if citations is not None else CitationBank()
        self.items: list[EvidenceItem] = []
        self.rejected: list[RejectedNote] = []
        self._on_new_source = on_new_source
        self._announced = 0
        self._lock = threading.Lock()
        self._normalized: dict[int, tuple[int, str]] = {}

    # -- sources ------------------------------------------------------------------------------

    def add_page(self, location: str, title: str, text: str) -> int:
        """Register text retrieved from a web page or file; returns the source's number."""
        number = self.citations.add_document(location, title=title, text=text)
        self.announce_new_sources()
        return number

    def announce_new_sources(self) -> None:
        """Report sources numbered since the last call (``rag_search`` adds them directly)."""
        if self._on_new_source is None:
            return
        with self._lock:
            sources = self.citations.sources()
            fresh = sources[self._announced :]
            self._announced = len(sources)
        for source in fresh:
            self._on_new_source(source)

    def source(self, number: int) -> CitedSource | None:
        """The numbered source, or ``None``."""
        return self.citations.get(number)

    def sources(self) -> list[CitedSource]:
        """All sources in number order."""
        return self.citations.sources()

    def retrieved_text(self, number: int) -> str:
        """Everything retrieved from source ``number`` so far (its passages joined)."""
        source = self.citations.get(number)
        if source is None:
            return ""
        return "\n\n".join(p.text for p in list(source.passages))

    def _normalized_text(self, number: int) -> str:
        source = self.citations.get(number)
        if source is None:
            return ""
        count = len(source.passages)
        with self._lock:
            cached = self._normalized.get(number)
            if cached is not None and cached[0] == count:
                return cached[1]
        text = normalize_text(self.retrieved_text(number))
        with self._lock:
            self._normalized[number] = (count, text)
        return text

    def quote_in_source(self, number: int, quote: str) -> bool:
        """Whether ``quote`` occurs in the text retrieved from source ``number``."""
        needle = normalize_text(clean_quote(quote))
        return len(needle) >= MIN_QUOTE_CHARS and needle in self._normalized_text(number)

    # -- notes --------------------------------------------------------------------------------

    def add_note(
        self, source: int | None, quote: str, claim: str = "", subquestion: int | None = None
    ) -> EvidenceItem | RejectedNote:
        """Admit a note if its quote comes from the named source's retrieved text.

        Returns the new (or identical existing) :class:`EvidenceItem`, or the
        :class:`RejectedNote` recorded in :attr:`rejected`.
        """
        quote = clean_quote(quote)
        claim = claim.strip() or quote
        reason = ""
        if source is None or self.citations.get(source) is None:
            reason = f"source [{source}] was never retrieved"
        elif len(normalize_text(quote)) < MIN_QUOTE_CHARS:
            reason = f"quote shorter than {MIN_QUOTE_CHARS} characters"
        elif not self.quote_in_source(source, quote):
            reason = f"quote not found in the text retrieved from source [{source}]"
        if reason:
            rejected = RejectedNote(source, quote, claim, reason, subquestion)
            with self._lock:
                self.rejected.append(rejected)
            return rejected
        assert source is not None
        key = normalize_text(quote)
        with self._lock:
            for item in self.items:
                if item.source == source and normalize_text(item.quote) == key:
                    return item
            item = EvidenceItem(f"E{len(self.items) + 1}", source, quote, claim, subquestion)
            self.items.append(item)
            return item

    def items_for(self, source: int) -> list[EvidenceItem]:
        """Evidence items taken from source ``source``."""
        with self._lock:
            return [i for i in self.items if i.source == source]

    def items_of(self, subquestion: int) -> list[EvidenceItem]:
        """Evidence items a sub-question's researcher found."""
        with self._lock:
            return [i for i in self.items if i.subquestion == subquestion]

    def has_evidence(self, source: int) -> bool:
        """Whether at least one verified note cites source ``source``."""
        with self._lock:
            return any(i.source == source for i in self.items)
