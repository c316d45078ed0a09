"""The ``q3agent rag`` subcommands: ``ingest`` documents into a store and ``search`` it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from q3agent.cli.exits import FAILURE, OK, USAGE
from q3agent.errors import UsageError
from q3agent.rag.embeddings import DEFAULT_EMBEDDING_MODEL


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="store directory (default: the per-user data dir, see `q3agent rag --help`)",
    )
    parser.add_argument(
        "--chroma-url",
        dest="url",
        metavar="URL",
        help="use a Chroma server instead of a directory (`chroma run --path DIR --port 8000`)",
    )
    parser.add_argument("--url", dest="url", help=argparse.SUPPRESS)  # the old name
    parser.add_argument(
        "--collection", default=None, help="collection name (default: q3agent-docs)"
    )
    parser.add_argument(
        "--embedding-model",
        default=DEFAULT_EMBEDDING_MODEL,
        metavar="NAME",
        help="all-MiniLM-L6-v2 (bundled, default), Qwen3-Embedding-0.6B/4B/8B, or a local dir",
    )


def add_rag_commands(subparsers: Any) -> None:
    """Register ``rag ingest`` and ``rag search`` on an argparse subparsers object.

    Each leaf parser sets ``func``: call ``args.func(args)``; it returns the exit status.
    """
    rag = subparsers.add_parser(
        "rag",
        help="ingest documents into a RAG store and search it",
        description="Ingest files, folders and URLs into a Chroma store and search it "
        "(dense + BM25 hybrid). One process may use a store directory at a time; share one "
        "between processes with `chroma run --path DIR --port 8000` and --chroma-url.",
    )
    commands = rag.add_subparsers(dest="rag_command", required=True, metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest",
        help="add or refresh documents (md, txt, html, pdf, code, URLs)",
        description="Ingest files, folders and http(s) URLs. Re-running is idempotent: "
        "unchanged documents are skipped, changed ones replaced, and files removed from an "
        "ingested folder are deleted from the store.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="file, folder or URL")
    _store_options(ingest)
    ingest.add_argument(
        "--chunk-tokens", type=int, default=256, help="chunk size in tokens (default 256)"
    )
    ingest.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="overlap in tokens (default 15%% of --chunk-tokens)",
    )
    ingest.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ingest.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object on stdout (no progress bar)",
    )
    ingest.add_argument(
        "--no-prune", action="store_true", help="keep documents whose files were removed"
    )
    ingest.set_defaults(func=run_ingest)

    search = commands.add_parser("search", help="search a store", description="Search a store.")
    search.add_argument("query", help="question or keywords")
    _store_options(search)
    search.add_argument("-k", type=int, default=5, help="number of passages (default 5)")
    search.add_argument("--json", action="store_true", help="print JSON instead of text")
    search.add_argument(
        "--mode",
        choices=["hybrid", "dense", "bm25"],
        default="hybrid",
        help="hybrid (default): dense and BM25 fused; dense; or bm25 (exact words)",
    )
    search.add_argument(
        "--rerank", metavar="MODEL", help="cross-encoder model (local dir or cached id)"
    )
    search.add_argument(
        "--where", metavar="JSON", help='Chroma metadata filter, e.g. \'{"kind": "pdf"}\''
    )
    search.set_defaults(func=run_search)


class MissingStoreError(UsageError, FileNotFoundError):
    """``--store`` names a directory that does not exist (and the command would not create it)."""


def _open_store(args: argparse.Namespace, *, create: bool) -> Any:
    """Open the store, saying on stderr that the embedding model is loading (it takes a while).

    Without ``create``, a ``--store`` directory that does not exist is an error before anything
    is loaded or created, so a mistyped path never leaves an empty store behind.
    """
    from q3agent.rag.embeddings import shared_embedder
    from q3agent.rag.store import DEFAULT_COLLECTION, RagStore, default_store_dir

    if not create and not args.url:
        directory = Path(args.store).expanduser() if args.store else default_store_dir()
        if not directory.is_dir():
            raise MissingStoreError(
                f"no RAG store at {directory}: check --store, or create one with "
                f"`q3agent rag ingest PATH --store {directory}`"
            )
    print(f"loading the embedding model {args.embedding_model}…", file=sys.stderr, flush=True)
    embedder = shared_embedder(args.embedding_model)
    return RagStore.open(
        args.store,
        url=args.url,
        embedder=embedder,
        collection=args.collection or DEFAULT_COLLECTION,
    )


class MissingInputError(UsageError, FileNotFoundError):
    """None of the paths given to ``rag ingest`` exists (checked before the model loads)."""


def _check_inputs(paths: list[str]) -> None:
    """Fail before the model loads (and before a store is created) when no input exists; an
    input missing among others is reported with the others ingested (docs/rag.md)."""
    missing = [p for p in paths if "://" not in p and not Path(p).exists()]
    if missing and len(missing) == len(paths):
        raise MissingInputError(
            f"no such file or folder: {', '.join(missing)}; nothing was ingested (check the "
            "paths; URLs need http:// or https://)"
        )


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USAGE


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def run_ingest(args: argparse.Namespace) -> int:
    """``q3agent rag ingest``: returns 0, or 1 when some documents failed, 2 on errors."""
    from q3agent.rag.embeddings import EmbeddingModelNotFoundError
    from q3agent.rag.ingest import Ingestor
    from q3agent.rag.store import StoreError

    _check_inputs(args.paths)
    try:
        with _open_store(args, create=True) as store:
            ingestor = Ingestor(store, chunk_tokens=args.chunk_tokens, overlap_tokens=args.overlap)
            if not args.json:
                print(f"ingesting into {store.location}…", file=sys.stderr, flush=True)
            report = ingestor.ingest(
                args.paths, progress=not (args.no_progress or args.json), prune=not args.no_prune
            )
            total = store.count()
            location = store.location
    except (StoreError, EmbeddingModelNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    if args.json:
        fields = ("added", "updated", "unchanged", "removed", "chunks_written")
        body = {name: getattr(report, name) for name in fields}
        body["failed"] = [{"source": source, "error": error} for source, error in report.failed]
        body |= {"store": str(location), "chunks_in_store": total}
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        print(f"{report.summary()}; {total} chunks in {location}")
    for source, error in report.failed:
        print(f"error: {source}: {error}", file=sys.stderr)
    if report.failed:
        print(
            f"error: {_plural(len(report.failed), 'input')} could not be ingested (above); "
            "fix the paths or URLs and run the same command again (done ones are skipped)",
            file=sys.stderr,
        )
    return FAILURE if report.failed else OK


def run_search(args: argparse.Namespace) -> int:
    """``q3agent rag search``: prints passages (text or JSON); returns 0, or 2 on errors."""
    from q3agent.rag.embeddings import EmbeddingModelNotFoundError
    from q3agent.rag.grounding import CitationBank, passages_json
    from q3agent.rag.retrieval import CrossEncoderReranker, Retriever
    from q3agent.rag.store import StoreError

    if not args.query.strip():
        raise UsageError('the query is empty: q3agent rag search "WORDS OR A QUESTION"')
    where = None
    if args.where:
        try:
            where = json.loads(args.where)
        except json.JSONDecodeError as exc:
            return _fail(f'--where is not valid JSON ({exc}); e.g. --where \'{{"kind": "pdf"}}\'')
    try:
        reranker = CrossEncoderReranker(args.rerank) if args.rerank else None
        with _open_store(args, create=False) as store:
            if store.count() == 0:
                return _fail(
                    f"the store at {store.location} is empty: run `q3agent rag ingest PATH "
                    "--store DIR` first"
                )
            retriever = Retriever(store, reranker=reranker)
            passages = retriever.search(args.query, args.k, where=where, mode=args.mode)
    except (
        StoreError,
        EmbeddingModelNotFoundError,
        MissingStoreError,
        RuntimeError,
        ValueError,
    ) as exc:
        return _fail(str(exc))
    bank = CitationBank()
    if args.json:
        print(json.dumps(passages_json(passages, bank), ensure_ascii=False, indent=2))
    else:
        print(bank.format_passages(passages) if passages else "no results")
    return OK
