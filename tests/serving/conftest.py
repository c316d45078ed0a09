"""Fixtures for runtime tests: tiny random Qwen3 dense and MoE model directories (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from q3agent.testing.models import make_tiny_qwen3


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3 (dense) checkpoint with the offline tokenizer beside it."""
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"), seed=0)


@pytest.fixture(scope="session")
def tiny_moe_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3-MoE checkpoint (8 experts, top-2) with the offline tokenizer."""
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3-moe"), moe=True, seed=1)
