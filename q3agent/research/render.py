"""Report rendering: Markdown tables validated and repaired, then HTML and PDF from Markdown.

Markdown is the source of truth. HTML comes from ``markdown-it-py`` (CommonMark plus tables,
raw HTML disabled so text from the web cannot inject markup); PDF is laid out from that HTML
by ``fpdf2`` (pure Python) with a Unicode TrueType font found on the system (DejaVu, Liberation,
Noto, or matplotlib's bundled DejaVu), falling back to the core Helvetica font with the text
reduced to Latin-1.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ReportFormat = Literal["md", "html", "pdf"]

_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 52rem;
       margin: 2rem auto; padding: 0 1rem; line-height: 1.55; color: #1d1d1f; }
h1, h2, h3 { line-height: 1.25; }
table { border-collapse: collapse; margin: 1rem 0; width: 100%; }
th, td { border: 1px solid #c8c8cc; padding: .35rem .6rem; text-align: left;
         vertical-align: top; }
th { background: #f2f2f5; }
blockquote { border-left: 3px solid #c8c8cc; margin: 0; padding-left: 1rem; color: #555; }
code { background: #f2f2f5; padding: 0 .2rem; }
pre { background: #f2f2f5; padding: .6rem; overflow-x: auto; }
pre code { padding: 0; }
a.cite { text-decoration: none; }
"""


class RenderError(RuntimeError):
    """A report could not be rendered; the message says what to change."""


@dataclass(frozen=True, slots=True)
class TableProblem:
    """Something wrong with a Markdown table, found (and repaired) before rendering."""

    line: int
    """1-based line of the table's first row."""
    problem: str


def _cells(row: str) -> list[str]:
    inner = row.strip()
    if inner.startswith("|"):
        inner = inner[1:]
    if inner.endswith("|") and not inner.endswith("\\|"):
        inner = inner[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fix_table(rows: list[str], first_line: int) -> tuple[list[str], list[TableProblem]]:
    problems: list[TableProblem] = []
    if len(rows) == 1 or (len(rows) == 2 and _SEPARATOR.match(rows[1])):
        problems.append(TableProblem(first_line, "a table without data rows became a paragraph"))
        return [" — ".join(c for c in _cells(rows[0]) if c)], problems
    header = _cells(rows[0])
    body = rows[1:]
    if _SEPARATOR.match(body[0]):
        aligns = _cells(body[0])
        body = body[1:]
    else:
        problems.append(TableProblem(first_line, "missing header separator row was added"))
        aligns = []
    body = [r for r in body if not _SEPARATOR.match(r)]
    data = [_cells(r) for r in body]
    width = max([len(header), *(len(d) for d in data)])
    if len(header) < width:
        problems.append(TableProblem(first_line, f"header padded to {width} columns"))
        header += [""] * (width - len(header))
    fixed_rows = []
    for number, cells in enumerate(data, 1):
        if len(cells) != width:
            problems.append(
                TableProblem(
                    first_line, f"row {number} had {len(cells)} cells, expected {width}; padded"
                )
            )
            cells = cells + [""] * (width - len(cells))
        fixed_rows.append(_row(cells))
    align_cells = [
        a if a and set(a) <= {"-", ":"} and "-" in a else "---"
        for a in (aligns + ["---"] * width)[:width]
    ]
    return [_row(header), _row(align_cells), *fixed_rows], problems


def normalize_tables(markdown: str) -> tuple[str, list[TableProblem]]:
    """Validate every pipe table and repair what would render wrongly.

    Adds a missing separator row, pads short rows and headers to the widest row, drops stray
    separator rows, and turns a one-row "table" into a paragraph. Tables get a blank line
    before and after so CommonMark sees them. Returns the fixed Markdown and what was fixed.
    """
    lines = markdown.split("\n")
    out: list[str] = []
    problems: list[TableProblem] = []
    in_fence = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence or not line.lstrip().startswith("|"):
            out.append(line)
            index += 1
            continue
        start = index
        while index < len(lines) and lines[index].lstrip().startswith("|"):
            index += 1
        fixed, found = _fix_table([r.strip() for r in lines[start:index]], start + 1)
        problems.extend(found)
        if out and out[-1].strip():
            out.append("")
        out.extend(fixed)
        if index < len(lines) and lines[index].strip():
            out.append("")
    return "\n".join(out), problems


def count_tables(markdown: str) -> int:
    """How many pipe tables (header plus separator row) ``markdown`` has outside code."""
    count = 0
    lines = markdown.split("\n")
    in_fence = False
    for i, line in enumerate(lines[:-1]):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        starts = i == 0 or not lines[i - 1].lstrip().startswith("|")
        if not in_fence and starts and line.lstrip().startswith("|"):
            count += _SEPARATOR.match(lines[i + 1]) is not None
    return count


def _markdown_it() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown_to_html_fragment(markdown: str) -> str:
    """The report body as HTML (tables validated first; raw HTML in the text is escaped)."""
    fixed, _ = normalize_tables(markdown)
    fragment: str = _markdown_it().render(fixed)
    expected = count_tables(fixed)
    rendered = fragment.count("<table>")
    if rendered != expected:
        raise RenderError(
            f"{expected} Markdown tables were found but {rendered} rendered as HTML tables; "
            "check that each table has a header row, a separator row and no blank lines inside."
        )
    return fragment


_CITATION = re.compile(r"\[(\d+)\]")
_NO_LINKS_INSIDE = frozenset({"a", "code", "pre"})


def _sources_heading(soup: Any) -> Any:
    for heading in soup.find_all("h2"):
        if heading.get_text(strip=True).lower() == "sources":
            return heading
    return None


def link_citations(fragment: str) -> str:
    """Make each ``[n]`` in the body a link to source ``n`` in the Sources list.

    The Sources list items get ``id="source-n"``; a number the list does not have stays text.
    """
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString

    soup = BeautifulSoup(fragment, "html.parser")
    heading = _sources_heading(soup)
    if heading is None:
        return fragment
    listing = heading.find_next_sibling("ol")
    numbers: set[int] = set()
    if listing is not None:
        start = int(str(listing.get("start") or 1))
        for offset, item in enumerate(listing.find_all("li", recursive=False)):
            item["id"] = f"source-{start + offset}"
            numbers.add(start + offset)
    for text in list(heading.find_all_previous(string=_CITATION)):
        if not isinstance(text, NavigableString) or any(
            parent.name in _NO_LINKS_INSIDE for parent in text.parents
        ):
            continue
        pieces: list[Any] = []
        last = 0
        value = str(text)
        for match in _CITATION.finditer(value):
            number = int(match.group(1))
            if number not in numbers:
                continue
            pieces.append(value[last : match.start()])
            link = soup.new_tag("a", href=f"#source-{number}", attrs={"class": "cite"})
            link.string = match.group(0)
            pieces.append(link)
            last = match.end()
        if not pieces:
            continue
        pieces.append(value[last:])
        for piece in pieces:
            if piece != "":
                text.insert_before(piece if not isinstance(piece, str) else NavigableString(piece))
        text.extract()
    return str(soup)


def _title(markdown: str) -> str:
    match = re.search(r"(?m)^#\s+(.+?)\s*#*\s*$", markdown)
    return match.group(1) if match else "Research report"


def to_html(markdown: str, *, title: str | None = None) -> str:
    """A standalone HTML page (with a small stylesheet) rendered from the report Markdown."""
    fragment = link_citations(markdown_to_html_fragment(markdown))
    page_title = html_lib.escape(title or _title(markdown))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{page_title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{fragment}</body>\n</html>\n"
    )


_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "C:/Windows/Fonts",
)
_FONT_FILES = {
    "": ("DejaVuSans.ttf",),
    "B": ("DejaVuSans-Bold.ttf",),
    "I": ("DejaVuSans-Oblique.ttf",),
    "BI": ("DejaVuSans-BoldOblique.ttf",),
    "mono": ("DejaVuSansMono.ttf",),
}


def _font_dirs() -> list[Path]:
    dirs = [Path(d) for d in _FONT_DIRS]
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    return [d for d in dirs if d.is_dir()]


def find_unicode_fonts() -> dict[str, Path] | None:
    """Paths of a DejaVu family (regular, bold, italic, bold italic, mono), or ``None``."""
    for directory in _font_dirs():
        found: dict[str, Path] = {}
        for style, names in _FONT_FILES.items():
            for name in names:
                if (directory / name).is_file():
                    found[style] = directory / name
                    break
        if "" in found:
            for style in ("B", "I", "BI", "mono"):
                found.setdefault(style, found[""])
            return found
    return None


_LATIN1 = str.maketrans(
    {"“": '"', "”": '"', "‘": "'", "’": "'", "—": "-", "–": "-", "…": "...", "•": "*",
     "→": "->", "≥": ">=", "≤": "<=", "\u00a0": " "}
)  # fmt: skip


def column_widths(
    rows: list[list[str]], *, page_mm: float = 174.0, char_mm: float = 2.2
) -> list[float]:
    """Percent widths for a table's columns, from their text.

    Every column first gets room for its longest word (so words are not broken); the rest of
    the page is shared in proportion to the columns' average text length, so a long findings
    column is wide and a ``[n]`` column narrow.
    """
    if not rows:
        return []
    count = max(len(r) for r in rows)
    floors: list[float] = []
    averages: list[float] = []
    for column in range(count):
        cells = [r[column] for r in rows if column < len(r)]
        longest_word = max((len(w) for c in cells for w in c.split()), default=1)
        floors.append(min((longest_word * char_mm + 4.0) / page_mm, 0.45))
        averages.append(max(sum(len(c) for c in cells) / max(len(cells), 1), 1.0))
    reserved = sum(floors)
    if reserved >= 1.0:
        return [round(100 * f / reserved, 1) for f in floors]
    spare = 1.0 - reserved
    total = sum(averages)
    return [round(100 * (f + spare * a / total), 1) for f, a in zip(floors, averages, strict=True)]


def pdf_ready_html(fragment: str) -> str:
    """The HTML fragment reshaped for fpdf2's layout engine.

    fpdf2 cannot place markup nested inside table cells (``<code>``, ``<a>``, ``<em>``), so
    cells are reduced to their text; column widths are set from the content
    (:func:`column_widths`); links elsewhere are kept.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(fragment, "html.parser")
    for table in soup.find_all("table"):
        rows = table.find_all("tr")
        for cell in table.find_all(["td", "th"]):
            text = " ".join(cell.get_text(" ").split())
            cell.clear()
            cell.append(text)
        grid = [[c.get_text() for c in row.find_all(["td", "th"])] for row in rows]
        table["width"] = "100%"
        if rows:
            for cell, width in zip(
                rows[0].find_all(["td", "th"]), column_widths(grid), strict=False
            ):
                cell["width"] = f"{width}%"
    for block in soup.find_all("pre"):  # one mono block per code listing
        text = block.get_text()
        block.clear()
        block.append(text.rstrip("\n"))
    return str(soup)


def to_pdf(markdown: str, path: str | Path, *, title: str | None = None) -> Path:
    """Write the report as a PDF at ``path`` (headings, paragraphs, lists, tables, links).

    Needs the ``fpdf2`` package (``pip install fpdf2``).
    """
    try:
        from fpdf import FPDF
    except ImportError as exc:
        raise RenderError(
            "PDF output needs the fpdf2 package: run `pip install fpdf2`, or use "
            "--format html and print the page to PDF from a browser."
        ) from exc
    fragment = pdf_ready_html(markdown_to_html_fragment(markdown))
    pdf = FPDF(format="A4")
    pdf.set_title(title or _title(markdown))
    pdf.set_creator("q3agent research")
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(True, margin=18)
    fonts = find_unicode_fonts()
    family = "Helvetica"
    mono = "Courier"
    if fonts is not None:
        for style in ("", "B", "I", "BI"):
            pdf.add_font("ReportSans", style, str(fonts[style]))
        pdf.add_font("ReportMono", "", str(fonts["mono"]))
        family, mono = "ReportSans", "ReportMono"
    else:
        fragment = fragment.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")
    pdf.add_page()
    pdf.set_font(family, size=10.5)
    from fpdf.fonts import FontFace

    try:
        pdf.write_html(
            fragment,
            font_family=family,
            tag_styles={
                "code": FontFace(family=mono),
                "pre": FontFace(family=mono),
            },
        )
    except Exception as exc:  # fpdf2 raises plain exceptions for layouts it cannot place
        raise RenderError(
            f"fpdf2 could not lay out the report ({type(exc).__name__}: {exc}); write it as "
            "--format html or md instead, or simplify the table that fails."
        ) from exc
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(target))
    return target


def write_report(markdown: str, path: str | Path, fmt: ReportFormat | None = None) -> Path:
    """Write the report to ``path`` as Markdown, HTML or PDF (default: from the suffix)."""
    target = Path(path)
    chosen = fmt or {".html": "html", ".htm": "html", ".pdf": "pdf"}.get(
        target.suffix.lower(), "md"
    )
    if chosen == "pdf":
        return to_pdf(markdown, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "html":
        target.write_text(to_html(markdown), encoding="utf-8")
    else:
        target.write_text(normalize_tables(markdown)[0], encoding="utf-8")
    return target
