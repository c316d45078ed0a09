"""Reports render to HTML and PDF with their headings and tables; broken tables are repaired."""

from __future__ import annotations

from pathlib import Path

import pypdf
import pytest

from q3agent.research.render import (
    column_widths,
    count_tables,
    normalize_tables,
    pdf_ready_html,
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


LONG_FINDING = (
    "Aurora answers a top-10 nearest-neighbour query over one million 768-dimensional vectors "
    "in 4.2 ms at the median on a single 16-core node."
)
RICH_REPORT = """# Findings

Aurora is fast [1], see [the guide](https://aurora.example/guide); [9] is not a source.

```python
def latency(ms: float) -> str:
    return f"{ms} ms"
```

| System | Reported finding | Source |
| --- | --- | --- |
| `Aurora` | LONG | [1] |
| **Borealis** | Costs roughly [520 dollars](https://b.example) a month. | [2] |

## Sources

1. Aurora guide — <https://aurora.example/guide>
2. Borealis — `/docs/borealis.md`
""".replace("LONG", LONG_FINDING)


def pdf_text_and_links(path: Path) -> tuple[str, list[str]]:
    reader = pypdf.PdfReader(path)
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    links = [
        str(annot.get_object()["/A"]["/URI"])
        for page in reader.pages
        for annot in page.get("/Annots") or []
        if "/A" in annot.get_object()
    ]
    return text, links


def test_pdf_renders_code_in_tables_code_blocks_and_links(tmp_path: Path) -> None:
    target = to_pdf(RICH_REPORT, tmp_path / "report.pdf")  # <code> in a cell used to fail
    text, links = pdf_text_and_links(target)
    assert "Aurora" in text and "Borealis" in text and "4.2 ms" in text
    assert 'def latency(ms: float) -> str: return f"{ms} ms"' in text  # the code block
    assert "https://aurora.example/guide" in links


def test_pdf_columns_are_sized_by_their_text() -> None:
    rows = [["System", "Reported finding", "Source"], ["Aurora", LONG_FINDING, "[1]"]]
    system, finding, source = column_widths(rows)
    assert finding > 60 and finding > 4 * source
    assert abs(system + finding + source - 100) < 0.5
    assert system * 174 / 100 >= len("System") * 2.2  # the longest word fits unbroken
    fragment = pdf_ready_html(to_html(RICH_REPORT))
    table = fragment.split("<table")[1].split("</table>")[0]
    assert '<th width="' in table and "<code>" not in table and "<strong>" not in table


def test_html_citations_link_to_their_sources() -> None:
    page = to_html(RICH_REPORT)
    assert 'fast <a class="cite" href="#source-1">[1]</a>' in page
    assert '<td><a class="cite" href="#source-2">[2]</a></td>' in page
    assert '<li id="source-1">' in page and '<li id="source-2">' in page
    assert "[9] is not a source" in page  # no such source: left as text
    assert 'f"{ms} ms"' in page  # code untouched
