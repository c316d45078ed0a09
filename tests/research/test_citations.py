"""The evidence bank admits only verbatim quotes; the citation check catches what is unsupported."""

from __future__ import annotations

from q3agent.research.citations import FLAG, check_report
from q3agent.research.evidence import EvidenceBank, EvidenceItem, RejectedNote

AURORA = (
    "Aurora answers a top-10 nearest-neighbour query over one million vectors in 4.2 ms at the "
    "median on a single 16-core node. After a crash, Aurora replays the write-ahead log and "
    "loses no acknowledged writes."
)
BOREALIS = "Borealis reports a median query latency of 11 ms for top-10 searches."
COFFEE = "The coffee machine is descaled every Friday morning."


def make_bank() -> EvidenceBank:
    bank = EvidenceBank()
    assert bank.add_page("/docs/coffee.md", "Coffee", COFFEE) == 1
    assert bank.add_page("http://127.0.0.1/aurora?utm_source=x", "Aurora guide", AURORA) == 2
    assert bank.add_page("http://127.0.0.1/borealis", "Borealis", BOREALIS) == 3
    bank.add_note(2, "Aurora answers a top-10 nearest-neighbour query over one million vectors "
                  "in 4.2 ms at the median", "Aurora is fast")  # fmt: skip
    bank.add_note(3, "“Borealis reports a median query latency of 11 ms”", "Borealis latency")
    return bank


def test_sources_are_deduplicated_by_url_and_numbered_in_order() -> None:
    bank = make_bank()
    assert bank.add_page("http://127.0.0.1/aurora/", "Aurora guide", AURORA) == 2
    assert [s.number for s in bank.sources()] == [1, 2, 3]


def test_notes_are_admitted_only_with_a_verbatim_quote_from_the_named_source() -> None:
    bank = make_bank()
    ok = bank.add_note(2, "After a crash,   Aurora replays the write-ahead log", "no loss")
    assert isinstance(ok, EvidenceItem) and ok.id == "E3"
    wrong_source = bank.add_note(3, "Aurora replays the write-ahead log", "no loss")
    invented = bank.add_note(2, "Aurora never loses data even without a log", "x")
    unknown = bank.add_note(9, "Aurora replays the write-ahead log", "x")
    assert isinstance(wrong_source, RejectedNote) and "not found" in wrong_source.reason
    assert isinstance(invented, RejectedNote)
    assert isinstance(unknown, RejectedNote) and "never retrieved" in unknown.reason
    assert len(bank.rejected) == 3 and len(bank.items) == 3


def test_fabricated_citation_is_removed_and_sources_renumbered_without_gaps() -> None:
    bank = make_bank()
    draft = (
        "# Report\n\n## Latency\n\n"
        "Borealis reports a median query latency of 11 ms [3]. "
        "Aurora answers top-10 queries over one million vectors in 4.2 ms [2]. "
        "Every vendor guarantees 99.999% uptime [42].\n"
    )
    checked = check_report(draft, bank)
    assert checked.invalid == [42]
    assert "[42]" not in checked.markdown
    body, sources = checked.markdown.split("## Sources")
    assert "11 ms [1]." in body and "4.2 ms [2]." in body
    assert "99.999% uptime" in body and FLAG.strip() in body  # kept, but flagged
    assert [s.number for s in checked.sources] == [1, 2]
    assert [s.bank_number for s in checked.sources] == [3, 2]
    assert "1. Borealis" in sources and "2. Aurora guide" in sources


def test_citing_a_retrieved_source_without_verified_evidence_is_caught() -> None:
    bank = make_bank()
    checked = check_report("# R\n\nThe coffee machine is descaled every Friday [1].\n", bank)
    assert [i.kind for i in checked.issues][:1] == ["no_evidence"]
    assert checked.sources == []
    assert "[1]" not in checked.markdown


def test_claims_with_figures_the_sources_lack_are_flagged_or_removed() -> None:
    bank = make_bank()
    draft = (
        "# R\n\nAurora answers top-10 queries over one million vectors in 2.1 ms [2]. "
        "Aurora answers a top-10 query in 4.2 ms at the median [2].\n"
    )
    flagged = check_report(draft, bank)
    assert [i.kind for i in flagged.issues] == ["unsupported"]
    assert "2.1 ms [1]" + FLAG + "." in flagged.markdown
    removed = check_report(draft, bank, unsupported="remove")
    assert "2.1 ms" not in removed.markdown and "4.2 ms at the median [1]." in removed.markdown


def test_tables_are_checked_row_by_row_and_code_is_left_alone() -> None:
    bank = make_bank()
    draft = (
        "# R\n\n| System | Median latency | Source |\n| --- | --- | --- |\n"
        "| Aurora | 4.2 ms at the median over one million vectors | [2] |\n"
        "| Borealis | 11 ms median query latency | [3] |\n"
        "| Cirrus | 9.5 ms | [7] |\n\n```\nexample [5]\n```\n"
    )
    checked = check_report(draft, bank)
    lines = checked.markdown.splitlines()
    assert "| Aurora | 4.2 ms at the median over one million vectors | [1] |" in lines
    assert "| Borealis | 11 ms median query latency | [2] |" in lines
    assert any(line.startswith("| Cirrus") and FLAG.strip() in line for line in lines)
    assert "example [5]" in checked.markdown
    assert checked.invalid == [7]
