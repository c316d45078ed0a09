"""Reports render to HTML and PDF with their headings and tables; broken tables are repaired."""

from __future__ import annotations

from pathlib import Path

import pypdf
import pytest

from q3agent.research.render import (
    count_tables,
    normalize_tables,
    to_html,
    to_pdf,
    write_report,
)

REPORT = """# Vector databases — a comparison

## Summary

Aurora is the fastest at the median [1]; Borealis costs the most [2].

## Latency

| System | p99 latency | Source |
| --- | ---: | --- |
| Aurora | 9 ms | [1] |
| Borealis | 28 ms | [2] |

## Sources

1. Aurora guide — <http://127.0.0.1/aurora>
2. Borealis — `/docs/borealis.md`
"""


def test_normalize_tables_repairs_missing_separator_and_ragged_rows() -> None:
    broken = "Intro\n| A | B |\n| 1 | 2 | 3 |\n| 4 |\nAfter\n"
    fixed, problems = normalize_tables(broken)
    assert fixed.splitlines()[:7] == [
        "Intro",
        "",
        "| A | B |  |",
        "| --- | --- | --- |",
        "| 1 | 2 | 3 |",
        "| 4 |  |  |",
        "",
    ]
    assert {p.problem.split(";")[0].split(" had")[0] for p in problems} >= {
        "missing header separator row was added",
        "row 2",
    }
    assert count_tables(fixed) == 1
    assert "<table>" in to_html(broken)


def test_single_row_table_becomes_a_paragraph() -> None:
    fixed, problems = normalize_tables("| only | a header |\n")
    assert fixed.strip() == "only — a header"
    assert problems and count_tables(fixed) == 0


def test_html_has_headings_tables_and_escapes_raw_html() -> None:
    page = to_html(REPORT + "\n<script>alert(1)</script>\n")
    assert "<title>Vector databases — a comparison</title>" in page
    assert "<h2>Latency</h2>" in page
    assert page.count("<table>") == 1 and "<td>Borealis</td>" in page
    assert '<td style="text-align:right">28 ms</td>' in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_pdf_contains_headings_and_table_cells(tmp_path: Path) -> None:
    target = to_pdf(REPORT, tmp_path / "report.pdf")
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(target).pages)
    for expected in ("Vector databases — a comparison", "Latency", "Summary", "Sources"):
        assert expected in text
    assert "Borealis" in text and "28 ms" in text and "p99 latency" in text


@pytest.mark.parametrize(("name", "marker"), [("r.md", b"| --- |"), ("r.html", b"<table>"),
                                              ("r.pdf", b"%PDF")])  # fmt: skip
def test_write_report_picks_the_format_from_the_suffix(
    tmp_path: Path, name: str, marker: bytes
) -> None:
    path = write_report(REPORT, tmp_path / name)
    assert marker in path.read_bytes()
