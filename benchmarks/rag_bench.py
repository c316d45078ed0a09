"""RAG benchmark: ingest throughput vs raw encoding, query latency at 10K/100K chunks, recall@5.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/rag_bench.py [--ingest-chunks N] [--sizes 10000,100000]``

1. Ingest throughput: chunks/s of ``Ingestor.ingest`` (parse, chunk, embed, write to Chroma)
   against ``SentenceTransformer.encode`` alone on the same chunk texts.
2. Query p50 latency (hybrid: query embedding + Chroma HNSW + BM25 + fusion, and dense
   only) on stores of synthetic chunks. Encoding 100K chunks with MiniLM on a small CPU box
   takes hours, so these stores are filled with random unit vectors and synthetic text: the
   timing measures the store and BM25, not embedding quality.
3. Recall@5 of hybrid, dense and BM25 on the labeled fixture queries.
4. The query embedding on its own (p50/p90 of one ``embed_queries([q])`` at a time), so the
   embedding's share of the hybrid figure is visible apart from the store.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "rag" / "fixtures"
WORDS = [
    "robot",
    "gripper",
    "battery",
    "lidar",
    "firmware",
    "sensor",
    "torque",
    "navigation",
    "planner",
    "dock",
    "charge",
    "valve",
    "pump",
    "motor",
    "encoder",
    "cable",
    "network",
    "signal",
    "frame",
    "timeout",
    "error",
    "fault",
    "reset",
    "calibrate",
    "inspect",
    "replace",
    "clean",
    "voltage",
    "current",
    "pressure",
    "temperature",
    "warehouse",
    "shelf",
    "pallet",
    "route",
]


def ingest_throughput(n_docs: int) -> None:
    import numpy as np

    from q3agent.rag import RagStore, shared_embedder
    from q3agent.rag.ingest import Ingestor, chunk_document, embedding_text, load_file

    embedder = shared_embedder()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n_docs):
            paragraphs = [
                " ".join(rng.choice(WORDS, size=60)) + "." for _ in range(int(rng.integers(2, 6)))
            ]
            body = "\n\n".join(paragraphs)
            Path(tmp, f"doc{i}.md").write_text(f"# Document {i}\n\n{body}\n")
        store = RagStore.ephemeral(embedder=embedder)
        ingestor = Ingestor(store)
        docs = [load_file(p) for p in sorted(Path(tmp).glob("*.md"))]
        texts = [
            embedding_text(d.title, c.section, c.text)
            for d in docs
            for _, c in chunk_document(d, ingestor.chunker)
        ]
        embedder.model.encode(texts[:8])  # warm-up
        t0 = time.perf_counter()
        embedder.model.encode(texts, batch_size=32, normalize_embeddings=True)
        raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = ingestor.ingest([tmp], progress=False)
        full = time.perf_counter() - t0
    n = report.chunks_written
    print(f"ingest: {n_docs} docs -> {n} chunks")
    print(f"  raw SentenceTransformer.encode: {len(texts) / raw:8.1f} chunks/s")
    print(f"  q3agent ingest (parse+chunk+embed+write): {n / full:8.1f} chunks/s")
    print(f"  ratio ingest/raw: {(n / full) / (len(texts) / raw):.2f}")


def query_latency(size: int, queries: int) -> None:
    import numpy as np

    from q3agent.rag import RagStore, Retriever, shared_embedder

    embedder = shared_embedder()
    rng = np.random.default_rng(size)
    store = RagStore.ephemeral(embedder=embedder)
    t0 = time.perf_counter()
    batch = 5000
    for start in range(0, size, batch):
        n = min(batch, size - start)
        vectors = rng.standard_normal((n, embedder.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [
            " ".join(rng.choice(WORDS, size=40)) + f" part NR-{start + i:06d}" for i in range(n)
        ]
        ids = [f"c{start + i}" for i in range(n)]
        metas = [{"source": f"synthetic/{(start + i) // 10}.txt", "chunk_index": (start + i) % 10}
                 for i in range(n)]  # fmt: skip
        store.upsert(ids, texts, vectors, metas)
    build = time.perf_counter() - t0
    retriever = Retriever(store)
    t0 = time.perf_counter()
    retriever.bm25()
    bm25_build = time.perf_counter() - t0
    probes = [f"{' '.join(rng.choice(WORDS, size=5))} NR-{int(rng.integers(size)):06d}"
              for _ in range(queries)]  # fmt: skip
    vectors = embedder.embed_queries(probes)
    results: dict[str, list[float]] = {"hybrid": [], "dense": [], "embed+hybrid": []}
    for probe, vector in zip(probes, vectors, strict=True):
        for mode in ("hybrid", "dense"):
            t0 = time.perf_counter()
            retriever.search(probe, 5, mode=mode, query_embedding=vector)  # type: ignore[arg-type]
            results[mode].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        retriever.search(probe, 5)
        results["embed+hybrid"].append(time.perf_counter() - t0)
    print(
        f"query latency at {size} chunks (store built in {build:.1f}s, BM25 in {bm25_build:.1f}s):"
    )
    for mode, times in results.items():
        print(f"  {mode:13s} p50 {statistics.median(times) * 1000:7.1f} ms")


def query_embedding_latency(queries: int) -> None:
    """One query's embedding on its own (no store): ``embed_queries([q])`` one at a time."""
    import numpy as np

    from q3agent.rag import shared_embedder

    embedder = shared_embedder()
    rng = np.random.default_rng(1)
    probes = [f"{' '.join(rng.choice(WORDS, size=5))} NR-{int(rng.integers(10**6)):06d}"
              for _ in range(queries + 5)]  # fmt: skip
    for probe in probes[:5]:  # warm-up
        embedder.embed_queries([probe])
    times = []
    for probe in probes[5:]:
        t0 = time.perf_counter()
        embedder.embed_queries([probe])
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"query embedding alone ({queries} queries, {embedder.query_threads} torch thread):")
    print(f"  p50 {statistics.median(times) * 1000:7.1f} ms, p90 "
          f"{times[int(len(times) * 0.9)] * 1000:7.1f} ms")  # fmt: skip


def recall_at_5() -> None:
    from q3agent.rag import RagStore, Retriever, ingest, shared_embedder

    embedder = shared_embedder()
    store = RagStore.ephemeral(embedder=embedder)
    ingest(store, [FIXTURES / "corpus"], progress=False)
    queries = json.loads((FIXTURES / "queries.json").read_text())["queries"]
    vectors = embedder.embed_queries([q["query"] for q in queries])
    retriever = Retriever(store)
    print(f"recall@5 on {len(queries)} labeled queries ({store.count()} chunks):")
    for mode in ("hybrid", "dense", "bm25"):
        for subset, picked in (("all", queries), ("keyword", [q for q in queries if q["keyword"]])):
            hits = 0
            for q in picked:
                v = vectors[queries.index(q)]
                docs = [Path(p.source).stem
                        for p in retriever.search(q["query"], 5, mode=mode, query_embedding=v)]  # type: ignore[arg-type]  # fmt: skip
                hits += any(d in q["relevant"] for d in docs)
            print(f"  {mode:6s} {subset:7s} {hits / len(picked):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingest-docs", type=int, default=100)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    recall_at_5()
    query_embedding_latency(max(args.queries, 100))
    ingest_throughput(args.ingest_docs)
    for size in (int(s) for s in args.sizes.split(",") if s):
        query_latency(size, args.queries)


if __name__ == "__main__":
    main()
