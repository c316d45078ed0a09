"""Recall@1 of exact-identifier queries among near misses: before and after exact-match-first.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/rag_identifier_bench.py``

A corpus of documents that each explain one identifier of a family whose members look alike
(error codes ``E-7201`` ... , part numbers ``KX-4410-A`` ..., config keys, ticket ids,
versions), with texts that read alike too, so an embedding model cannot tell them apart. Every
query names one identifier (alone, in a question, or with words that fit a neighbour better);
the right answer is the document of that identifier. Prints recall@1 for dense, BM25 and
hybrid retrieval, hybrid both as before (RRF with the identifier weight only) and as now
(passages containing the identifier exactly first), plus the labeled fixture corpus's
keyword queries. The corpus is tests/rag/near_miss.py, which the retrieval tests use too.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rag"))

from near_miss import write_corpus  # noqa: E402 - after the path is set


def recall_at_1(retriever: object, queries: list[tuple[str, str]], mode: str) -> float:
    """Share of queries whose first passage comes from the expected document."""
    from q3agent.rag import Retriever

    assert isinstance(retriever, Retriever)
    hits = 0
    for query, stem in queries:
        top = retriever.search(query, 1, mode=mode)  # type: ignore[arg-type]
        hits += bool(top) and Path(top[0].source).stem == stem
    return hits / len(queries)


def main() -> None:
    from q3agent.rag import RagStore, Retriever, ingest, shared_embedder

    embedder = shared_embedder()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        queries = write_corpus(folder)
        store = RagStore.ephemeral(embedder=embedder)
        ingest(store, [folder], progress=False)
        before = Retriever(store, exact_identifiers_first=False)
        after = Retriever(store)
        print(f"near-miss identifiers: {len(queries)} queries over {store.count()} chunks")
        print(f"  dense            recall@1 {recall_at_1(after, queries, 'dense'):.3f}")
        print(f"  bm25             recall@1 {recall_at_1(after, queries, 'bm25'):.3f}")
        print(f"  hybrid (before)  recall@1 {recall_at_1(before, queries, 'hybrid'):.3f}")
        print(f"  hybrid (after)   recall@1 {recall_at_1(after, queries, 'hybrid'):.3f}")
        store.close()
    import json

    data = json.loads((ROOT / "tests" / "rag" / "fixtures" / "queries.json").read_text())
    store = RagStore.ephemeral(embedder=embedder)
    ingest(store, [ROOT / "tests" / "rag" / "fixtures" / "corpus"], progress=False)
    keyword = [(q["query"], q["relevant"]) for q in data["queries"] if q["keyword"]]
    everything = [(q["query"], q["relevant"]) for q in data["queries"]]
    for name, chosen in (("keyword", keyword), ("all", everything)):
        line = []
        for label, retriever in (
            ("before", Retriever(store, exact_identifiers_first=False)),
            ("after", Retriever(store)),
        ):
            hits = 0
            for query, relevant in chosen:
                top = retriever.search(query, 1)
                hits += bool(top) and Path(top[0].source).stem in relevant
            line.append(f"{label} {hits / len(chosen):.3f}")
        print(f"fixture corpus, {name} queries ({len(chosen)}): hybrid recall@1 " + ", ".join(line))
    store.close()


if __name__ == "__main__":
    main()
