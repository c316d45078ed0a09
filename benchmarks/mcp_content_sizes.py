"""Characters the model reads for two real server-filesystem results.

A 50,001-character text file (``read_text_file``) and a 120 KB PNG (``read_media_file``),
rendered by :func:`q3agent.tools.mcp.render_mcp_result`. Needs the node tools of
``.ci/mcp.sh``. Uses only APIs that existed before issue 12, so the same script measures an
older checkout: ``PYTHONPATH=/path/to/old python benchmarks/mcp_content_sizes.py``.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

import anyio

from q3agent.tools.mcp import MCPServerStdio, render_mcp_result

TOOLS = Path(os.environ.get("Q3AGENT_NODE_TOOLS", Path.home() / ".cache/q3agent/node-tools"))


def write_files(folder: str) -> tuple[Path, Path]:
    """The 50,001-character text file and the 120,000-byte PNG."""
    text_file = Path(folder, "big.txt")
    text_file.write_text(("0123456789" * 5001)[:50_001])
    png = Path(folder, "chart.png")
    rng = random.Random(0)
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(120_000 - 8)))
    return text_file, png


async def main() -> None:
    bin_dir = TOOLS / "node_modules" / ".bin"
    if not (bin_dir / "mcp-server-filesystem").exists():
        sys.exit("server-filesystem is not installed; run .ci/mcp.sh first")
    with tempfile.TemporaryDirectory() as folder:
        text_file, png = write_files(folder)
        command = [str((bin_dir / "mcp-server-filesystem").resolve()), folder]
        async with MCPServerStdio(str(bin_dir / "node"), command, name="fs") as server:
            text = await server.call_tool("read_text_file", {"path": str(text_file)})
            media = await server.call_tool("read_media_file", {"path": str(png)})
    print(f"50,001-char file → {len(render_mcp_result(text)):,} characters for the model")
    print(f"120,000-byte PNG → {len(render_mcp_result(media)):,} characters for the model")


if __name__ == "__main__":
    anyio.run(main)
