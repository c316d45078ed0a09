"""Chunking: token-sized windows with overlap, exact character spans, heading-aware Markdown."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from q3agent.rag.chunking import TokenChunker, chunker_for, markdown_sections

PROSE = " ".join(
    f"Sentence number {i} explains one small detail about the maintenance schedule."
    for i in range(120)
)


def test_chunks_fit_the_budget_overlap_and_point_back_into_the_text(embedder: Any) -> None:
    chunker = TokenChunker(embedder.tokenizer, chunk_tokens=64, overlap_tokens=10)
    chunks = chunker.split(PROSE)
    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.text == PROSE[chunk.start : chunk.end]
        assert 0 < embedder.count_tokens(chunk.text) <= 64
    # Neighbours overlap, and together the chunks cover the whole text.
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end
        assert b.start > a.start
    assert chunks[0].start == 0
    assert chunks[-1].end == len(PROSE)


def test_chunks_end_at_sentence_boundaries_when_possible(embedder: Any) -> None:
    chunker = TokenChunker(embedder.tokenizer, chunk_tokens=64, overlap_tokens=8)
    chunks = chunker.split(PROSE)
    assert all(c.text.rstrip().endswith(".") for c in chunks)


def test_chunker_is_clamped_to_what_the_model_reads(embedder: Any) -> None:
    chunker = chunker_for(embedder.tokenizer, embedder.max_tokens, chunk_tokens=512)
    assert chunker.chunk_tokens == embedder.max_tokens - 2
    assert 0.1 <= chunker.overlap_tokens / chunker.chunk_tokens <= 0.2


def test_bad_sizes_are_rejected_with_a_reason(embedder: Any) -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        TokenChunker(embedder.tokenizer, chunk_tokens=64, overlap_tokens=40)
    with pytest.raises(ValueError, match="too small"):
        TokenChunker(embedder.tokenizer, chunk_tokens=4)


MARKDOWN = """Intro paragraph before any heading.

# Install

## Linux
Run the installer with `sudo ./install.sh`.

```bash
# this is a shell comment, not a heading
echo done
```

## Windows
Double-click the MSI package.

# Usage
Start the service and open the dashboard.
"""


def test_markdown_sections_follow_the_heading_path_and_skip_code_fences() -> None:
    sections = markdown_sections(MARKDOWN)
    headings = [h for _, _, h in sections]
    assert headings == ["", "Install", "Install > Linux", "Install > Windows", "Usage"]
    linux = next(s for s in sections if s[2] == "Install > Linux")
    assert "echo done" in MARKDOWN[linux[0] : linux[1]]


def test_markdown_chunks_do_not_straddle_large_sections(embedder: Any) -> None:
    big = "\n\n".join(
        f"# Chapter {n}\n\n" + " ".join(f"Chapter {n} fact {i} is written here." for i in range(40))
        for n in range(3)
    )
    chunker = TokenChunker(embedder.tokenizer, chunk_tokens=64, overlap_tokens=8)
    chunks = chunker.split_markdown(big)
    for chunk in chunks:
        chapters = {w for w in ("Chapter 0", "Chapter 1", "Chapter 2") if w in chunk.text}
        assert len(chapters) == 1, chunk.text
        assert chunk.section.startswith("Chapter")
        assert big[chunk.start : chunk.end] == chunk.text


def test_small_markdown_sections_are_packed_together(embedder: Any) -> None:
    chunker = TokenChunker(embedder.tokenizer, chunk_tokens=200, overlap_tokens=20)
    chunks = chunker.split_markdown(MARKDOWN)
    assert len(chunks) == 1
    assert "Double-click" in chunks[0].text and "dashboard" in chunks[0].text
