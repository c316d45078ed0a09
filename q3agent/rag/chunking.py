"""Splitting documents into overlapping chunks measured in the embedding model's tokens.

Chunks are slices of the original text (character spans are kept, so a citation can point
back into the source). Markdown is split at headings first, so a chunk does not straddle two
sections unless both are small enough to share one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_CHUNK_TOKENS = 256
"""Chunk size in embedding-model tokens (clamped to what the model reads whole)."""
DEFAULT_OVERLAP_RATIO = 0.15
"""Overlap between neighbouring chunks, as a share of the chunk size."""


class OffsetTokenizer(Protocol):
    """What chunking needs from a tokenizer: a Hugging Face fast tokenizer call with offsets."""

    def __call__(self, text: str, **kwargs: Any) -> Any:
        """Tokenize ``text`` (called with ``return_offsets_mapping=True``)."""
        ...


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, ready to embed."""

    text: str
    start: int
    """Character offset of ``text`` in the document (or page) text."""
    end: int
    section: str = ""
    """Heading path (``Install > Linux``) for Markdown, empty otherwise."""
    tokens: int = 0


@dataclass(frozen=True)
class _Section:
    start: int
    end: int
    heading: str


_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def markdown_sections(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, heading path)`` for each heading-delimited section of Markdown text.

    Headings inside fenced code blocks are ignored; text before the first heading is a section
    with an empty heading.
    """
    fenced: list[tuple[int, int]] = []
    fence_marks = [m.start() for m in _FENCE.finditer(text)]
    for i in range(0, len(fence_marks) - 1, 2):
        fenced.append((fence_marks[i], fence_marks[i + 1]))

    def in_fence(pos: int) -> bool:
        return any(a <= pos < b for a, b in fenced)

    headings = [m for m in _HEADING.finditer(text) if not in_fence(m.start())]
    sections: list[_Section] = []
    stack: list[tuple[int, str]] = []
    if not headings or headings[0].start() > 0:
        first_end = headings[0].start() if headings else len(text)
        if text[:first_end].strip():
            sections.append(_Section(0, first_end, ""))
    for i, match in enumerate(headings):
        level = len(match.group(1))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, match.group(2).strip()))
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        sections.append(_Section(match.start(), end, " > ".join(h for _, h in stack)))
    return [(s.start, s.end, s.heading) for s in sections]


_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


class TokenChunker:
    """Cuts text into windows of ``chunk_tokens`` tokens overlapping by ``overlap_tokens``.

    A window's end moves back (by at most a fifth of the window) to the nearest paragraph,
    line or sentence break, so chunks rarely stop mid-sentence.
    """

    def __init__(
        self,
        tokenizer: OffsetTokenizer,
        *,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        overlap_tokens: int | None = None,
    ) -> None:
        if chunk_tokens < 16:
            raise ValueError(f"chunk_tokens={chunk_tokens} is too small; use at least 16")
        overlap = overlap_tokens
        if overlap is None:
            overlap = round(chunk_tokens * DEFAULT_OVERLAP_RATIO)
        if not 0 <= overlap < chunk_tokens // 2:
            raise ValueError(
                f"overlap_tokens={overlap} must be between 0 and half of chunk_tokens "
                f"({chunk_tokens})"
            )
        self._tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        return len(self._offsets(text))

    def _windows(self, text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Token index windows ``[i, j)`` covering all tokens."""
        n = len(offsets)
        windows: list[tuple[int, int]] = []
        start = 0
        while start < n:
            end = min(start + self.chunk_tokens, n)
            if end < n:
                end = self._snap(text, offsets, start, end)
            windows.append((start, end))
            if end >= n:
                break
            start = max(end - self.overlap_tokens, start + 1)
        return windows

    def _snap(self, text: str, offsets: Sequence[tuple[int, int]], start: int, end: int) -> int:
        lowest = max(start + 1, end - self.chunk_tokens // 5)
        region_start = offsets[lowest][0]
        region_end = offsets[end][0]
        region = text[region_start:region_end]
        for brk in _BREAKS:
            pos = region.rfind(brk)
            if pos >= 0:
                cut = region_start + pos + len(brk)
                # Keep every token that ends at or before the break.
                for idx in range(end, lowest, -1):
                    if offsets[idx - 1][1] <= cut:
                        return idx
        return end

    def split(self, text: str, base: int = 0, section: str = "") -> list[Chunk]:
        """Chunks of ``text``; spans are shifted by ``base`` (its offset in a larger text)."""
        offsets = self._offsets(text)
        chunks: list[Chunk] = []
        for i, j in self._windows(text, offsets):
            start, end = offsets[i][0], offsets[j - 1][1]
            piece = text[start:end]
            if piece.strip():
                chunks.append(Chunk(piece, base + start, base + end, section, j - i))
        return chunks

    def split_markdown(self, text: str) -> list[Chunk]:
        """Heading-aware chunks: whole small sections are packed together, large ones split."""
        chunks: list[Chunk] = []
        pending: list[tuple[int, int, str]] = []
        pending_tokens = 0

        def flush() -> None:
            nonlocal pending, pending_tokens
            if pending:
                start, end = pending[0][0], pending[-1][1]
                piece = text[start:end].strip()
                if piece:
                    lead = text[start:end].index(piece[0])
                    chunks.append(
                        Chunk(
                            piece,
                            start + lead,
                            start + lead + len(piece),
                            pending[0][2],
                            pending_tokens,
                        )
                    )
            pending, pending_tokens = [], 0

        for start, end, heading in markdown_sections(text):
            size = self.count(text[start:end])
            if size > self.chunk_tokens:
                flush()
                chunks.extend(self.split(text[start:end], base=start, section=heading))
            elif pending_tokens + size > self.chunk_tokens:
                flush()
                pending, pending_tokens = [(start, end, heading)], size
            else:
                pending.append((start, end, heading))
                pending_tokens += size
        flush()
        return chunks


def chunker_for(
    tokenizer: OffsetTokenizer,
    model_max_tokens: int,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap_tokens: int | None = None,
) -> TokenChunker:
    """A chunker whose chunks fit the embedding model (two tokens are kept for [CLS]/[SEP])."""
    size = min(chunk_tokens, model_max_tokens - 2)
    overlap = overlap_tokens
    if overlap is not None and overlap >= size // 2:
        overlap = size // 2 - 1
    return TokenChunker(tokenizer, chunk_tokens=size, overlap_tokens=overlap)
