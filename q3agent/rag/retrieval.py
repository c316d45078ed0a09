"""Hybrid retrieval: dense (Chroma) and BM25 (bm25s) results fused by reciprocal rank fusion.

Dense vectors find paraphrases; BM25 finds the rare exact strings (error codes, part numbers,
identifiers) that embeddings blur. Both rankings are merged with reciprocal rank fusion, an
optional reranker reorders the fused candidates, and each result is a :class:`Passage` whose
``id`` is the chunk's stable content hash, usable as a citation id. When the query names
identifiers the corpus contains (``E-4012``, ``max_inflight_frames``, ``137``), passages that
contain them exactly come first, whatever a near miss (``E-4013``) scores on meaning.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread

from q3agent.rag.store import RagStore, StoredChunk

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SearchMode = Literal["hybrid", "dense", "bm25"]
RRF_K = 60
"""The constant in ``1 / (k + rank)`` from Cormack et al. (2009); damps the top ranks."""

Reranker = Callable[[str, Sequence[str]], Sequence[float]]
"""Scores ``(query, passage texts)``; higher is more relevant (e.g. a cross-encoder)."""


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with where it came from and why it ranked."""

    id: str
    """Stable citation id: the chunk's hash of source, position and text."""
    text: str
    source: str
    """File path or URL of the document."""
    title: str = ""
    section: str = ""
    page: int | None = None
    chunk_index: int = 0
    char_start: int = 0
    char_end: int = 0
    score: float = 0.0
    """Fused (or reranked) score; higher is better."""
    dense_rank: int | None = None
    bm25_rank: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stored(cls, chunk: StoredChunk, **extra: Any) -> Passage:
        """Build a passage from a store record."""
        meta = chunk.metadata
        page = meta.get("page")
        return cls(
            id=chunk.id,
            text=chunk.text,
            source=str(meta.get("source", "")),
            title=str(meta.get("title", "")),
            section=str(meta.get("section", "")),
            page=page if isinstance(page, int) else None,
            chunk_index=int(meta.get("chunk_index", 0)),
            char_start=int(meta.get("char_start", 0)),
            char_end=int(meta.get("char_end", 0)),
            metadata=dict(meta),
            **extra,
        )

    def label(self) -> str:
        """``Title, p. 3 (source)`` as shown next to a citation number."""
        text = self.title or self.source
        if self.page is not None:
            text += f", p. {self.page}"
        if self.source and self.source != text:
            text += f" ({self.source})"
        return text


_WORD = re.compile(r"[^\W_]+(?:[-_./:#][^\W_]+)*")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def _light_stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def identifier_terms(text: str) -> list[str]:
    """Terms of ``text`` that look like identifiers: they contain a digit or join parts with
    ``-_./:#`` (``E-4012``, ``NR-7731-C``, ``max_inflight_frames``, ``137``)."""
    return [
        m.group()
        for m in _WORD.finditer(text.lower())
        if any(ch.isdigit() for ch in m.group()) or re.search(r"[-_./:#]", m.group())
    ]


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased terms for BM25: words (lightly stemmed) plus compound identifiers kept whole
    (``E-4012``, ``v2.3.1``, ``snake_case``) alongside their parts, stopwords dropped."""
    tokens: list[str] = []
    for match in _WORD.finditer(text.lower()):
        word = match.group()
        parts = re.split(r"[-_./:#]", word)
        if len(parts) > 1:
            tokens.append(word)
        tokens.extend(_light_stem(p) for p in parts if p and p not in _STOPWORDS)
    return tokens


class Bm25Index:
    """A bm25s index over chunk texts, keyed by chunk id."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        import bm25s

        self.ids = list(ids)
        self._position = {chunk_id: i for i, chunk_id in enumerate(self.ids)}
        self._index = bm25s.BM25()
        if self.ids:
            self._index.index([bm25_tokens(t) for t in texts], show_progress=False)
        self._vocab: Mapping[str, int] = self._index.vocab_dict if self.ids else {}

    def __len__(self) -> int:
        return len(self.ids)

    def knows(self, term: str) -> bool:
        """Whether ``term`` occurs in the indexed texts."""
        return term in self._vocab

    def exact_matches(self, terms: Sequence[str]) -> dict[str, int]:
        """For each chunk that contains some of ``terms`` (BM25 terms), how many it contains."""
        import numpy as np

        known = [t for t in dict.fromkeys(terms) if t in self._vocab]
        if not known or not self.ids:
            return {}
        counts = np.zeros(len(self.ids), dtype=np.int32)
        for term in known:
            counts += np.asarray(self._index.get_scores([term])) > 0
        return {self.ids[i]: int(counts[i]) for i in np.nonzero(counts)[0]}

    def search(
        self, query: str, n: int, *, allowed: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top ``n`` ``(chunk id, score)`` with a positive score, optionally only ``allowed``."""
        import numpy as np

        terms = [t for t in bm25_tokens(query) if t in self._vocab]
        if not terms or not self.ids or n <= 0:
            return []
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self.ids), dtype=np.float32)
            for chunk_id in allowed:
                pos = self._position.get(chunk_id)
                if pos is not None:
                    mask[pos] = 1.0
        scores: npt.NDArray[np.float32] = np.asarray(
            self._index.get_scores(terms, weight_mask=mask), dtype=np.float32
        )
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]],
    *,
    k: int = RRF_K,
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: each id scores ``sum(weight / (k + rank))`` (rank from 1)."""
    scores: dict[str, float] = {}
    for n, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[n]
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder used as a :data:`Reranker` (local files only)."""

    def __init__(self, model: str, *, device: str | None = None) -> None:
        from pathlib import Path

        from sentence_transformers import CrossEncoder

        local = Path(model).expanduser()
        try:
            self._model = CrossEncoder(
                str(local) if local.is_dir() else model,
                device=device or "cpu",
                local_files_only=not local.is_dir(),
            )
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"reranker model {model!r} is not available locally ({exc}). Download it on a "
                f"connected machine (`hf download {model}`) and copy the Hugging Face cache "
                "here, pass a local model directory, or search without --rerank."
            ) from exc
        self.name = model
        self._lock = threading.Lock()

    def __call__(self, query: str, texts: Sequence[str]) -> list[float]:
        """Relevance scores of ``texts`` for ``query``."""
        if not texts:
            return []
        with self._lock:
            scores = self._model.predict(
                [(query, t) for t in texts], show_progress_bar=False, convert_to_numpy=True
            )
        return [float(s) for s in scores]


@dataclass(eq=False)
class Retriever:
    """Searches a :class:`RagStore` (hybrid by default), returning :class:`Passage` objects.

    The BM25 index is built from the store on first use and rebuilt when the store changes
    (through this process, or when the chunk count moves on a shared server).
    """

    store: RagStore = field(repr=False)
    _: KW_ONLY
    reranker: Reranker | None = None
    candidates: int = 50
    rrf_k: int = RRF_K
    identifier_weight: float = 2.0
    exact_identifiers_first: bool = True
    """Passages containing the query's identifiers exactly rank above those that do not."""
    _bm25: Bm25Index | None = field(default=None, init=False, repr=False)
    _bm25_key: tuple[int, int] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def bm25(self) -> Bm25Index:
        """The BM25 index, (re)built if the store changed since it was last built."""
        key = (self.store.revision, self.store.count())
        with self._lock:
            if self._bm25 is None or self._bm25_key != key:
                ids: list[str] = []
                texts: list[str] = []
                for chunk in self.store.iter_all():
                    ids.append(chunk.id)
                    meta = chunk.metadata
                    texts.append(f"{meta.get('title', '')} {meta.get('section', '')}\n{chunk.text}")
                self._bm25 = Bm25Index(ids, texts)
                self._bm25_key = key
            return self._bm25

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        where: Mapping[str, Any] | None = None,
        mode: SearchMode = "hybrid",
        rerank: bool | Reranker | None = None,
        query_embedding: npt.NDArray[np.float32] | None = None,
    ) -> list[Passage]:
        """The ``k`` best passages for ``query``.

        ``where`` is a Chroma metadata filter (``{"source": path}``, ``{"page": {"$gte": 3}}``,
        ``{"kind": {"$in": ["markdown", "pdf"]}}``) applied to both retrievers. ``rerank``
        uses the retriever's reranker (``True``, the default when one is set) or the one
        given.
        """
        if k <= 0 or not query.strip():
            return []
        pool = max(self.candidates, k)
        dense: list[StoredChunk] = []
        if mode in ("hybrid", "dense"):
            vector = (
                query_embedding
                if query_embedding is not None
                else self.store.embedder.embed_queries([query])[0]
            )
            dense = self.store.query(vector, pool, where=where)
        sparse: list[tuple[str, float]] = []
        bm25_weight = 1.0
        exact: dict[str, int] = {}
        if mode in ("hybrid", "bm25"):
            allowed = self.store.ids_where(where) if where else None
            index = self.bm25()
            sparse = index.search(query, pool, allowed=allowed)
            # An identifier that occurs in the corpus makes this an exact-match question:
            # embeddings blur "E-4012" into "some error code", so lexical ranks count more,
            # and passages that contain the identifiers exactly come first.
            named = [t for t in identifier_terms(query) if index.knows(t)]
            if named:
                bm25_weight = self.identifier_weight
                if self.exact_identifiers_first:
                    exact = index.exact_matches(named)
        dense_ids = [c.id for c in dense]
        sparse_ids = [i for i, _ in sparse]
        fused = reciprocal_rank_fusion(
            [dense_ids, sparse_ids], k=self.rrf_k, weights=[1.0, bm25_weight]
        )
        if exact:  # stable: the fused order stays within each group
            fused.sort(key=lambda item: -exact.get(item[0], 0))
        reranker = self._pick_reranker(rerank)
        keep = max(k * 3, 20) if reranker else k
        chosen = fused[:keep]
        known = {c.id: c for c in dense}
        missing = [i for i, _ in chosen if i not in known]
        known.update({c.id: c for c in self.store.get(missing)})
        dense_rank = {chunk_id: r for r, chunk_id in enumerate(dense_ids, 1)}
        sparse_rank = {chunk_id: r for r, chunk_id in enumerate(sparse_ids, 1)}
        passages = [
            Passage.from_stored(
                known[i], score=score, dense_rank=dense_rank.get(i), bm25_rank=sparse_rank.get(i)
            )
            for i, score in chosen
            if i in known
        ]
        if reranker and passages:
            scores = list(reranker(query, [p.text for p in passages]))
            order = sorted(range(len(passages)), key=lambda n: -scores[n])
            passages = [_with_score(passages[n], scores[n]) for n in order]
        return passages[:k]

    def _pick_reranker(self, rerank: bool | Reranker | None) -> Reranker | None:
        if rerank is None or rerank is True:
            if rerank is True and self.reranker is None:
                raise ValueError(
                    "rerank=True but this retriever has no reranker: pass "
                    "reranker=CrossEncoderReranker(model_dir) (or any callable) to Retriever."
                )
            return self.reranker
        if rerank is False:
            return None
        return rerank

    async def asearch(
        self,
        query: str,
        k: int = 5,
        *,
        where: Mapping[str, Any] | None = None,
        mode: SearchMode = "hybrid",
        rerank: bool | Reranker | None = None,
    ) -> list[Passage]:
        """:meth:`search` in a worker thread (embedding and BM25 stay off the event loop)."""

        def run() -> list[Passage]:
            return self.search(query, k, where=where, mode=mode, rerank=rerank)

        return await anyio.to_thread.run_sync(run)


def _with_score(passage: Passage, score: float) -> Passage:
    from dataclasses import replace

    return replace(passage, score=score)


def iter_sources(passages: Sequence[Passage]) -> Iterator[str]:
    """Distinct sources of ``passages`` in rank order."""
    seen: set[str] = set()
    for passage in passages:
        if passage.source not in seen:
            seen.add(passage.source)
            yield passage.source
