"""Grounded question answering: ingest documents, let a Qwen3 agent search them, check citations.

    python examples/rag_qa.py                                  # sample corpus, scripted model
    python examples/rag_qa.py DOCS "question" --model Qwen3-8B # your documents, a local model
    python examples/rag_qa.py DOCS "question" --model Qwen3-8B \\
        --base-url http://localhost:8000                       # an OpenAI-compatible server

The agent gets a ``rag_search`` tool over a Chroma store (dense + BM25 retrieval). Its answer
cites sources as [n]; citations of sources that were never retrieved are removed and reported.
Without a model only the sample runs: a scripted stand-in searches for real, then gives a
canned answer citing one real source and one it never saw, to show that check. Your own
documents and questions need a model (``--model``, ``--base-url``, or ``Q3AGENT_MODEL`` /
``Q3AGENT_BASE_URL``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from q3agent import Agent, PlanAct, ScriptedRuntime
from q3agent.rag import (
    CitationBank,
    RagStore,
    Retriever,
    check_citations,
    ingest,
    make_rag_search_tool,
)
from q3agent.serving.base import Runtime
from q3agent.serving.select import select_runtime
from q3agent.serving.settings import RuntimeSettings

SAMPLE_DOCS = Path(__file__).resolve().parents[1] / "tests" / "rag" / "fixtures" / "corpus"
SAMPLE_QUESTION = "What does error E-4012 mean, and how do I fix it?"
SYSTEM = (
    "Answer from the documents only. Search them with rag_search, then answer and cite each "
    "claim with the source number in brackets, like [1]."
)


def scripted(question: str) -> ScriptedRuntime:
    """What a Qwen3 model would write: a search, then an answer citing [1] (and a bogus [7])."""
    search = json.dumps({"name": "rag_search", "arguments": {"query": question}})
    return ScriptedRuntime(
        [
            f"<think>\nSearch the docs for the error code.\n</think>\n\n<tool_call>\n{search}"
            "\n</tool_call>",
            "E-4012 is explained in the support notes [1]; see also the hardware guide [7].",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", nargs="?", default=str(SAMPLE_DOCS))
    parser.add_argument("question", nargs="?", default=SAMPLE_QUESTION)
    parser.add_argument("--store", help="persistent store directory (default: a temp dir)")
    parser.add_argument("--base-url", help="an OpenAI-compatible server serving Qwen3")
    parser.add_argument(
        "--model",
        default=os.environ.get("Q3AGENT_MODEL"),
        help="the registry model, e.g. Qwen3-8B (see `q3agent models`)",
    )
    parser.add_argument("-k", type=int, default=4, help="passages per search")
    args = parser.parse_args()
    settings = RuntimeSettings(base_url=args.base_url).over(RuntimeSettings.from_env())
    has_model = bool(args.model or settings.base_url)
    sample = args.docs == str(SAMPLE_DOCS) and args.question == SAMPLE_QUESTION
    if not has_model and not sample:
        raise SystemExit(
            "rag_qa.py: answering your own question needs a model. Pass --model NAME (add "
            "--base-url URL for a server) or set Q3AGENT_MODEL / Q3AGENT_BASE_URL; without "
            "one only the sample question runs, with a scripted stand-in."
        )

    with tempfile.TemporaryDirectory() as scratch:
        store = RagStore.open(args.store or scratch)
        report = ingest(store, [args.docs], progress=False)
        print(
            f"ingested {args.docs}: {len(report.added) + len(report.updated)} new or changed "
            f"documents, {len(report.unchanged)} unchanged, {report.chunks_written} chunks"
        )
        bank = CitationBank()
        search = make_rag_search_tool(Retriever(store), bank)

        model = args.model or "Qwen3-8B"
        runtime: Runtime
        if has_model:
            runtime = select_runtime(model, settings)
        else:
            runtime = scripted(args.question)
            print("no model given: a scripted stand-in answers (a canned answer, not grounded)")
        agent = Agent(
            model, runtime=runtime, tools=[search], system_prompt=SYSTEM, policy=PlanAct()
        )
        result = agent.run(args.question)

        grounded = check_citations(result.answer, bank)
        print(f"\nquestion: {args.question}\n")
        print(grounded.render())
        if grounded.invalid:
            print(f"\nremoved citations of sources never retrieved: {grounded.invalid}")
        store.close()


if __name__ == "__main__":
    main()
