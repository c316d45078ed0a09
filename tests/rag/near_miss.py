"""A corpus of near-miss identifiers: documents that explain look-alike codes in look-alike words.

Each family (error codes ``E-7201`` ..., part numbers ``KX-4410-A`` ..., config keys, ticket
ids, versions) has members whose texts differ only in the topic, so an embedding model cannot
tell them apart; every query names one identifier (alone, in a question, or next to words that
fit a neighbour better). Used by tests/rag/test_rag_retrieval.py and
benchmarks/rag_identifier_bench.py.
"""

from __future__ import annotations

from pathlib import Path

TOPICS = [
    "the charging dock does not answer the robot's handshake",
    "the left drive motor draws more current than its rating",
    "the lidar spins but returns no points",
    "the gripper cannot close fully around the part",
    "the battery pack reports a cell imbalance",
    "the firmware image fails its signature check",
    "the navigation planner finds no path to the goal",
    "the wheel encoder counts drift while the robot stands still",
    "the emergency stop circuit is open",
    "the camera stream drops frames under load",
]
FAMILIES = [
    ("E-72{:02d}", "Error {id}: {topic}. Check the wiring, restart the controller and retry."),
    ("KX-4410-{}", "Part {id} is the replacement kit used when {topic}. Order it from service."),
    (
        "dock_retry_{}_ms",
        "The setting {id} controls how long to wait when {topic}; raise it on slow networks.",
    ),
    ("OPS-11{:02d}", "Ticket {id} tracks the incident where {topic}. Status: resolved."),
    ("v3.4.{}", "Release {id} fixes the issue where {topic}. Upgrade all units."),
]
LETTERS = "ABCDEFGHIJ"


def identifier(family: int, member: int) -> str:
    """The ``member``-th identifier of ``family`` (letters for the part numbers)."""
    pattern = FAMILIES[family][0]
    return pattern.format(LETTERS[member] if family == 1 else member + 1)


def write_corpus(folder: Path, members: int = 10) -> list[tuple[str, str]]:
    """Write the near-miss corpus; ``(query, document stem)`` pairs for it."""
    queries: list[tuple[str, str]] = []
    for f, (_, template) in enumerate(FAMILIES):
        for m in range(members):
            ident = identifier(f, m)
            stem = f"doc-{f}-{m}"
            (folder / f"{stem}.md").write_text(
                f"# {ident}\n\n" + template.format(id=ident, topic=TOPICS[m]) + "\n"
            )
            neighbour = TOPICS[(m + 1) % members]
            queries += [
                (ident, stem),
                (f"What does {ident} mean?", stem),
                (f"{ident}: {neighbour}", stem),
            ]
    return queries
