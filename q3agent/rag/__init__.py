"""Retrieval-augmented generation: a Chroma store, ingestion, hybrid search and grounding.

Importing this package is cheap: chromadb, sentence-transformers and bm25s load only when a
store is opened, a model is loaded or an index is built.
"""

from q3agent.rag.chunking import Chunk, TokenChunker, markdown_sections
from q3agent.rag.embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    EmbeddingModelNotFoundError,
    qwen3_query_prompt,
    shared_embedder,
)
from q3agent.rag.grounding import (
    GROUNDING_INSTRUCTIONS,
    CitationBank,
    CitedSource,
    GroundedAnswer,
    check_citations,
    grounded_prompt,
    make_rag_search_tool,
    source_key,
)
from q3agent.rag.ingest import (
    IngestError,
    Ingestor,
    IngestReport,
    IngestWarning,
    SourceDocument,
    ingest,
)
from q3agent.rag.retrieval import (
    Bm25Index,
    CrossEncoderReranker,
    Passage,
    Reranker,
    Retriever,
    bm25_tokens,
    reciprocal_rank_fusion,
)
from q3agent.rag.store import (
    DEFAULT_COLLECTION,
    EmbeddingMismatchError,
    RagStore,
    StoreError,
    StoreLockedError,
    default_store_dir,
)

EvidenceBank = CitationBank
"""Alias used by deep research: the same numbering of sources, filled with web evidence."""

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_EMBEDDING_MODEL",
    "GROUNDING_INSTRUCTIONS",
    "Bm25Index",
    "Chunk",
    "CitationBank",
    "CitedSource",
    "CrossEncoderReranker",
    "Embedder",
    "EmbeddingMismatchError",
    "EmbeddingModelNotFoundError",
    "EvidenceBank",
    "GroundedAnswer",
    "IngestError",
    "IngestReport",
    "IngestWarning",
    "Ingestor",
    "Passage",
    "RagStore",
    "Reranker",
    "Retriever",
    "SourceDocument",
    "StoreError",
    "StoreLockedError",
    "TokenChunker",
    "bm25_tokens",
    "check_citations",
    "default_store_dir",
    "grounded_prompt",
    "ingest",
    "make_rag_search_tool",
    "markdown_sections",
    "qwen3_query_prompt",
    "reciprocal_rank_fusion",
    "shared_embedder",
    "source_key",
]
