"""Citation check of a report: every ``[n]`` must resolve to verified evidence, claims must
match it, and the Sources list is renumbered without gaps.

A citation ``[n]`` is kept only when source ``n`` is in the evidence bank *and* has at least
one verified :class:`~q3agent.research.evidence.EvidenceItem` (a quote found in the text
retrieved from that source). Others are removed and reported. A sentence (or table row) whose
citations survive is then checked against the quotes behind them: its figures must occur in
those quotes and enough of its content words must too; otherwise it is flagged (or removed).
Uncited sentences that state figures are flagged as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from q3agent.research.evidence import EvidenceBank, normalize_text

IssueKind = Literal["unknown_source", "no_evidence", "unsupported", "uncited_figure"]
UnsupportedAction = Literal["flag", "remove"]

FLAG = " *(unverified)*"
"""Appended to a sentence the evidence does not support (``unsupported="flag"``)."""

_CITATION = re.compile(r"[ \t]?\[(\d+(?:\s*[,;]\s*\d+)*)\](?![(:])")
_MARK = "\ue000"
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+)(?=[A-Z\"“(*])")
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_STOP_WORDS = """
a an the and or but if of to in on at by for with from as is are was were be been being
this that these those it its their there which who whom whose what when where why how than
then so such not no can could may might will would should shall do does did has have had
into over under about also more most less least very per each other both all any some our
we you they he she his her them us i one two three between across while whereas according
source sources report reports said says notes note shows show
"""
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True, slots=True)
class CitationIssue:
    """One problem the check found, with the text it concerns."""

    kind: IssueKind
    """``unknown_source``: the number was never retrieved; ``no_evidence``: no verified quote
    backs that source; ``unsupported``: the sentence does not match its sources' quotes;
    ``uncited_figure``: a sentence states figures without a citation."""
    number: int | None
    text: str
    detail: str


@dataclass(frozen=True, slots=True)
class ReportSource:
    """A source as listed in the report: its final number, location, title and quotes."""

    number: int
    bank_number: int
    location: str
    title: str
    quotes: tuple[str, ...]

    def markdown(self) -> str:
        """The Sources list entry (without the list number)."""
        location = self.location
        link = f"<{location}>" if "://" in location else f"`{location}`"
        return f"{self.title} — {link}" if self.title and self.title != location else link


@dataclass
class CitationCheck:
    """The checked report text and what the check did."""

    markdown: str
    sources: list[ReportSource]
    issues: list[CitationIssue] = field(default_factory=list)
    mapping: dict[int, int] = field(default_factory=dict)
    """Bank number → number in the report."""

    @property
    def invalid(self) -> list[int]:
        """Cited numbers that were removed (never retrieved, or no verified evidence)."""
        out: list[int] = []
        for issue in self.issues:
            if issue.kind in ("unknown_source", "no_evidence") and issue.number not in out:
                assert issue.number is not None
                out.append(issue.number)
        return out

    @property
    def flagged(self) -> list[CitationIssue]:
        """Sentences flagged or removed as unsupported by their evidence."""
        return [i for i in self.issues if i.kind in ("unsupported", "uncited_figure")]


def _content_words(text: str) -> set[str]:
    words = _WORD.findall(normalize_text(text))
    return {w for w in words if w not in _STOP and len(w) > 2 and not w.isdigit()}


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def _split_units(line: str) -> list[str]:
    """A table row stays whole; prose is split into sentences (citations stay with theirs)."""
    if line.lstrip().startswith("|"):
        return [line]
    return _SENTENCE_END.split(line)


def _is_structural(line: str) -> bool:
    stripped = line.strip()
    return (
        not stripped
        or stripped.startswith("#")
        or re.fullmatch(r"\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?", stripped) is not None
    )


class _Checker:
    def __init__(
        self, bank: EvidenceBank, unsupported: UnsupportedAction, min_overlap: float
    ) -> None:
        self.bank = bank
        self.unsupported = unsupported
        self.min_overlap = min_overlap
        self.issues: list[CitationIssue] = []
        self.order: list[int] = []

    def _resolve(self, number: int, unit: str) -> bool:
        if self.bank.source(number) is None:
            self.issues.append(
                CitationIssue(
                    "unknown_source", number, unit.strip(), f"[{number}] was never retrieved"
                )
            )
            return False
        if not self.bank.has_evidence(number):
            self.issues.append(
                CitationIssue(
                    "no_evidence",
                    number,
                    unit.strip(),
                    f"no verified quote from source [{number}] backs this citation",
                )
            )
            return False
        return True

    def _supported(self, claim: str, numbers: list[int]) -> str | None:
        """Why ``claim`` is not supported by the quotes of ``numbers``, or ``None``."""
        quotes = " ".join(item.quote for n in numbers for item in self.bank.items_for(n))
        source_text = " ".join(self.bank.retrieved_text(n) for n in numbers)
        missing = _numbers(claim) - _numbers(quotes) - _numbers(source_text)
        if missing:
            return f"figures {sorted(missing)} do not occur in the cited sources"
        words = _content_words(claim)
        if not words:
            return None
        overlap = len(words & _content_words(quotes)) / len(words)
        if overlap < self.min_overlap:
            return (
                f"only {overlap:.0%} of its content words occur in the cited evidence "
                f"(needs {self.min_overlap:.0%})"
            )
        return None

    def unit(self, unit: str, is_header_row: bool) -> str | None:
        """The checked unit (citations marked), or ``None`` to drop it."""
        kept: list[int] = []

        def scan(match: re.Match[str]) -> str:
            numbers = [int(n) for n in re.split(r"\s*[,;]\s*", match.group(1))]
            good = [n for n in numbers if self._resolve(n, unit)]
            for n in good:
                if n not in kept:
                    kept.append(n)
            if not good:
                return ""
            lead = match.group(0)[0] if match.group(0)[0] in " \t" else ""
            return lead + "".join(f"[{_MARK}{n}{_MARK}]" for n in good)

        had_citation = _CITATION.search(unit) is not None
        marked = _CITATION.sub(scan, unit)
        if had_citation and not kept:
            marked = re.sub(r"[ \t]+([.,;:!?])", r"\1", marked)
        claim = _CITATION.sub("", re.sub(f"\\[{_MARK}\\d+{_MARK}\\]", "", marked))
        is_row = unit.lstrip().startswith("|")
        for n in kept:
            if n not in self.order:
                self.order.append(n)
        if is_header_row:
            return marked
        problem: tuple[IssueKind, str] | None = None
        if kept:
            why = self._supported(claim, kept)
            if why is not None:
                problem = ("unsupported", why)
        elif _numbers(claim) and not had_citation and len(_content_words(claim)) >= 2:
            problem = ("uncited_figure", "states figures without citing a source")
        elif had_citation:
            problem = ("unsupported", "all of its citations were removed")
        if problem is None:
            return marked
        self.issues.append(CitationIssue(problem[0], None, unit.strip(), problem[1]))
        if self.unsupported == "remove":
            return None
        if is_row:
            return marked.rstrip().rstrip("|").rstrip() + FLAG + " |"
        stripped = marked.rstrip()
        trailing = marked[len(stripped) :]
        if stripped.endswith((".", "!", "?")):
            return stripped[:-1] + FLAG + stripped[-1] + trailing
        return stripped + FLAG + trailing


def check_report(
    markdown: str,
    bank: EvidenceBank,
    *,
    unsupported: UnsupportedAction = "flag",
    min_overlap: float = 0.3,
    sources_heading: str = "Sources",
) -> CitationCheck:
    """Check the citations of a Markdown report against ``bank`` and append its Sources.

    Returns the checked Markdown with citations renumbered ``[1]``, ``[2]``, … in order of
    first use (no gaps), a ``## Sources`` list with one entry per cited source, and the issues
    found. Any ``## Sources`` section already in ``markdown`` is replaced. Code blocks are left
    alone.
    """
    body = re.split(rf"(?m)^##\s+{re.escape(sources_heading)}\s*$", markdown)[0].rstrip()
    checker = _Checker(bank, unsupported, min_overlap)
    out: list[str] = []
    in_fence = False
    lines = body.split("\n")
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            out.append(line)
            continue
        if in_fence or _is_structural(line):
            out.append(line)
            continue
        next_line = lines[index + 1] if index + 1 < len(lines) else ""
        header_row = (
            line.lstrip().startswith("|") and _is_structural(next_line) and bool(next_line.strip())
        )
        pieces: list[str] = []
        for unit in _split_units(line):
            checked = checker.unit(unit, header_row)
            if checked is not None:
                pieces.append(checked)
        if pieces:
            out.append(" ".join(pieces))
    mapping = {old: new for new, old in enumerate(checker.order, 1)}
    text = re.sub(f"{_MARK}(\\d+){_MARK}", lambda m: str(mapping[int(m.group(1))]), "\n".join(out))
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip()
    sources: list[ReportSource] = []
    for old in checker.order:
        cited = bank.source(old)
        assert cited is not None
        quotes = tuple(item.quote for item in bank.items_for(old))
        sources.append(ReportSource(mapping[old], old, cited.location, cited.title, quotes))
    if sources:
        listing = "\n".join(f"{s.number}. {s.markdown()}" for s in sources)
        text = f"{text}\n\n## {sources_heading}\n\n{listing}\n"
    else:
        text += "\n"
    return CitationCheck(text, sources, checker.issues, mapping)
