"""Tiny random Qwen3 and Qwen3-MoE model directories for tests, examples and benchmarks.

The models have the real Qwen3 architecture (QK-norm, GQA, the 151,936-row vocabulary, MoE
routing) at a toy size, random weights, and the offline Qwen3 tokenizer saved beside them, so
:class:`~q3agent.serving.transformers_runtime.TransformersRuntime` loads them exactly like a
downloaded checkpoint, and so does a vLLM server (give ``head_dim=32`` for vLLM's CPU
attention, ``max_position_embeddings=40960`` for the April Qwen3 context, and the official chat
template for its chat endpoint). They produce nonsense text, which is what the tests want: the
runtime's plumbing (sampling, stops, KV reuse, grammar constraints) must work whatever the
model says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from q3agent.qwen3.models import QWEN3_VOCAB_SIZE

TINY_HIDDEN = 64
TINY_LAYERS = 2

VLLM_CPU_HEAD_DIM = 32
"""The smallest head size vLLM's CPU attention accepts (it refuses 16)."""
QWEN3_CONTEXT = 40960
"""``max_position_embeddings`` of the April 2025 Qwen3 checkpoints."""


def make_tiny_qwen3(
    directory: str | Path,
    *,
    moe: bool = False,
    seed: int = 0,
    head_dim: int = 16,
    max_position_embeddings: int = 4096,
    chat_template: str | Path | None = None,
) -> Path:
    """Create (or reuse) a tiny random Qwen3 model directory and return its path.

    Dense: 2 layers, hidden 64, 4 query / 2 KV heads of dim ``head_dim``, MLP 128. MoE: the
    same with 8 experts, top-2, expert width 32, every layer sparse. Weights are drawn from
    ``seed``, saved in float32 with ``save_pretrained`` next to the offline tokenizer.
    ``chat_template`` (the template's text, or a path to a ``.jinja`` file) is written into
    ``tokenizer_config.json`` so a server can render chat requests. A directory that already
    holds a complete model with the same settings is returned as is; one with other settings
    is rebuilt.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

    path = Path(directory)
    template = _template_text(chat_template)
    common: dict[str, Any] = {
        "vocab_size": QWEN3_VOCAB_SIZE,
        "hidden_size": TINY_HIDDEN,
        "num_hidden_layers": TINY_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": head_dim,
        "intermediate_size": 128,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": False,
    }
    if _complete(path, common, moe=moe, chat_template=template):
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Qwen3Tokenizer.offline()
    ids: dict[str, Any] = {
        "bos_token_id": tokenizer.eos_id,
        "eos_token_id": tokenizer.im_end_id,
        "pad_token_id": tokenizer.eos_id,
    }
    torch.manual_seed(seed)
    if moe:
        config = Qwen3MoeConfig(
            **common,
            **ids,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            decoder_sparse_step=1,
            norm_topk_prob=True,
        )
        model: torch.nn.Module = Qwen3MoeForCausalLM(config)
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**common, **ids))
    model.save_pretrained(path)  # type: ignore[operator]
    tokenizer.save_pretrained(path, chat_template=template)
    return path


def _template_text(chat_template: str | Path | None) -> str | None:
    if chat_template is None:
        return None
    if isinstance(chat_template, Path) or not chat_template.lstrip().startswith("{"):
        return Path(chat_template).read_text(encoding="utf-8")
    return chat_template


def _complete(path: Path, wanted: dict[str, Any], *, moe: bool, chat_template: str | None) -> bool:
    """Whether ``path`` already holds a model with these settings (config, weights, template)."""
    config_file, tokenizer_config = path / "config.json", path / "tokenizer_config.json"
    if not (config_file.is_file() and (path / "model.safetensors").is_file()):
        return False
    if not tokenizer_config.is_file():
        return False
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if ("num_experts" in config) != moe or any(config.get(k) != v for k, v in wanted.items()):
        return False
    saved = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("chat_template")
    return chat_template is None or saved == chat_template
