"""Deep research end to end: documents plus web pages in, a cited Markdown/HTML/PDF report out.

Runs on a CPU with the built-in stand-in model (``ResearchFixtureRuntime``) over the test
corpus: three Markdown documents and web pages served from 127.0.0.1. Pass ``--model
Qwen3-30B-A3B`` (with a GPU and weights) to have a real Qwen3 write the report instead.

    python examples/deep_research.py                              # writes to a new temp folder
    python examples/deep_research.py --out-dir examples/output    # refresh the committed copy
    python examples/deep_research.py --model Qwen3-8B             # a real model (GPU or server)

Document paths in the report are written relative to the repository and the pages are served
on a fixed port (8765 unless taken), so a re-run reproduces the committed output.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import tempfile
import threading
from pathlib import Path
from typing import Any

from q3agent.research import ResearchAgent, ResearchFixtureRuntime, ResearchOptions
from q3agent.research.render import write_report

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "research" / "fixtures"
QUESTION = (
    "How do the Aurora, Borealis and Cirrus vector databases compare on query latency, "
    "cost and durability?"
)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No request log on the console."""


def serve_pages(port: int = 8765) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve the fixture web pages on 127.0.0.1:``port`` (a free port if that one is taken)."""
    handler = functools.partial(_Quiet, directory=str(FIXTURES / "pages"))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="a Qwen3 model instead of the stand-in (Q3AGENT_BASE_URL for a server)"
    )
    parser.add_argument(
        "--out-dir", help="where to write (default: a new temporary folder; each file is printed)"
    )
    parser.add_argument("--port", type=int, default=8765, help="port for the fixture pages")
    args = parser.parse_args()

    server, base = serve_pages(args.port)
    agent = ResearchAgent(
        args.model,
        runtime=None if args.model else ResearchFixtureRuntime(),
        docs=[FIXTURES / "docs"],
        web=True,
        urls=[f"{base}/index.html"],
        options=ResearchOptions(max_researchers=3),
    )
    try:
        report = agent.run(QUESTION)
    finally:
        server.shutdown()

    out = Path(args.out_dir or tempfile.mkdtemp(prefix="q3agent-deep-research-"))
    markdown = report.markdown.replace(f"{ROOT}/", "")  # repository-relative document paths
    for suffix in ("md", "html", "pdf"):  # Markdown first: a failed PDF loses nothing
        path = write_report(markdown, out / f"deep_research_report.{suffix}")
        print(f"wrote {path}")
    print()
    print(report.summary())
    print("\nseconds per stage:")
    for stage, seconds in report.timings.items():
        print(f"  {stage:<10} {seconds:8.3f}")
    for issue in report.issues:
        print("citation issue:", issue.kind, issue.detail)


if __name__ == "__main__":
    main()
