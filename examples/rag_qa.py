"""Grounded question answering: ingest documents, let a Qwen3 agent search them, check citations.

    python examples/rag_qa.py                                  # sample corpus, scripted model
    python examples/rag_qa.py DOCS "question" [--store DIR]    # your documents
    Q3AGENT_MODEL=Qwen3-8B python examples/rag_qa.py DOCS "question"      # a local model
    python examples/rag_qa.py DOCS "question" --base-url http://localhost:30000/v1 \\
        --model Qwen/Qwen3-8B                                  # an OpenAI-compatible server

The agent gets a ``rag_search`` tool over a Chroma store (dense + BM25 retrieval). Its answer
cites sources as [n]; citations of sources that were never retrieved are removed and reported.
The scripted model cites one real source and one it never saw, to show that check.
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
    parser.add_argument("--model", default=os.environ.get("Q3AGENT_MODEL"))
    parser.add_argument("-k", type=int, default=4, help="passages per search")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        store = RagStore.open(args.store or scratch)
        report = ingest(store, [args.docs], progress=False)
        print(
            f"ingested {args.docs}: {len(report.added) + len(report.updated)} new or changed "
            f"documents, {len(report.unchanged)} unchanged, {report.chunks_written} chunks"
        )
        bank = CitationBank()
        search = make_rag_search_tool(Retriever(store), bank)

        runtime: Runtime | None = None
        if args.base_url:
            from q3agent.serving.openai_runtime import OpenAICompatibleRuntime

            runtime = OpenAICompatibleRuntime(args.base_url, args.model or "Qwen/Qwen3-8B")
        elif not args.model:
            runtime = scripted(args.question)
        agent = Agent(
            args.model, runtime=runtime, tools=[search], system_prompt=SYSTEM, policy=PlanAct()
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
