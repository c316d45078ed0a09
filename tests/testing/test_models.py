"""The tiny-model maker: the settings a vLLM CPU server needs, and reuse of a built model."""

from __future__ import annotations

import json
from pathlib import Path

from q3agent.testing.models import QWEN3_CONTEXT, VLLM_CPU_HEAD_DIM, make_tiny_qwen3

TEMPLATE = Path(__file__).parents[2].parent / "shared" / "reference" / "qwen3_chat_template.jinja"


def test_a_vllm_ready_model_carries_its_settings_and_the_chat_template(tmp_path: Path) -> None:
    path = make_tiny_qwen3(
        tmp_path / "m",
        head_dim=VLLM_CPU_HEAD_DIM,
        max_position_embeddings=QWEN3_CONTEXT,
        chat_template=TEMPLATE,
    )
    config = json.loads((path / "config.json").read_text())
    assert config["head_dim"] == 32 and config["max_position_embeddings"] == 40960
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == TEMPLATE.read_text()
    weights = (path / "model.safetensors").stat().st_mtime_ns

    # the same settings reuse the directory; other settings rebuild it
    make_tiny_qwen3(path, head_dim=32, max_position_embeddings=40960, chat_template=TEMPLATE)
    assert (path / "model.safetensors").stat().st_mtime_ns == weights
    make_tiny_qwen3(path)
    assert json.loads((path / "config.json").read_text())["head_dim"] == 16
