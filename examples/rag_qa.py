"""Grounded question answering over your documents: ingest, retrieve, answer with [n] citations.

Usage:
    python examples/rag_qa.py DOCS_DIR "your question" [--store DIR] [--base-url URL]

Without --base-url the example stops after retrieval and prints the grounded prompt a Qwen3
model would receive. With --base-url (an OpenAI-compatible server such as `sglang serve` or
vLLM serving Qwen3), it asks the model, checks the citations, and prints the answer with its
numbered sources. Citations of sources that were never retrieved are removed and reported.
"""

from __future__ import annotations

import argparse
import os

import httpx

from q3agent.rag import (
    GROUNDING_INSTRUCTIONS,
    CitationBank,
    RagStore,
    Retriever,
    check_citations,
    grounded_prompt,
    ingest,
)


def ask_model(base_url: str, model: str, prompt: str) -> str:
    """One non-thinking chat completion from an OpenAI-compatible server."""
    response = httpx.post(
        f"{base_url.rstrip('/')}/v1/chat/completions",
        json={
            "model": model,
            "messages": [
                {"role": "system", "content": GROUNDING_INSTRUCTIONS},
                {"role": "user", "content": prompt},
            ],
            "temperature": 0.7,
            "top_p": 0.8,
            "chat_template_kwargs": {"enable_thinking": False},
        },
        timeout=120,
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", help="folder (or file) of documents to ingest")
    parser.add_argument("question")
    parser.add_argument("--store", default=None, help="store directory (default: per-user dir)")
    parser.add_argument("--base-url", default=os.environ.get("Q3AGENT_BASE_URL"))
    parser.add_argument("--model", default="Qwen/Qwen3-8B")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()

    with RagStore.open(args.store) as store:
        report = ingest(store, [args.docs])
        print(f"ingest: {report.summary()}")
        passages = Retriever(store).search(args.question, args.k)

    bank = CitationBank()
    prompt = grounded_prompt(args.question, passages, bank)
    if not args.base_url:
        print("\n--- grounded prompt (pass --base-url to ask a Qwen3 server) ---\n")
        print(prompt)
        return
    answer = check_citations(ask_model(args.base_url, args.model, prompt), bank)
    print(answer.render())
    if answer.invalid:
        print(f"\n(removed citations of sources never retrieved: {answer.invalid})")


if __name__ == "__main__":
    main()
