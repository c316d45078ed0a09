"""Tiny random Qwen3 and Qwen3-MoE model directories for tests, examples and benchmarks.

The models have the real Qwen3 architecture (QK-norm, GQA, the 151,936-row vocabulary, MoE
routing) at a toy size, random weights, and the offline Qwen3 tokenizer saved beside them, so
:class:`~q3agent.serving.transformers_runtime.TransformersRuntime` loads them exactly like a
downloaded checkpoint. They produce nonsense text, which is what the tests want: the runtime's
plumbing (sampling, stops, KV reuse, grammar constraints) must work whatever the model says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from q3agent.qwen3.models import QWEN3_VOCAB_SIZE

TINY_HIDDEN = 64
TINY_LAYERS = 2


def make_tiny_qwen3(directory: str | Path, *, moe: bool = False, seed: int = 0) -> Path:
    """Create (or reuse) a tiny random Qwen3 model directory and return its path.

    Dense: 2 layers, hidden 64, 4 query / 2 KV heads of dim 16, MLP 128. MoE: the same with 8
    experts, top-2, expert width 32, every layer sparse. Weights are drawn from ``seed``, saved
    in float32 with ``save_pretrained`` next to the offline tokenizer. A directory that already
    holds a complete model is returned as is.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

    path = Path(directory)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Qwen3Tokenizer.offline()
    common: dict[str, Any] = {
        "vocab_size": QWEN3_VOCAB_SIZE,
        "hidden_size": TINY_HIDDEN,
        "num_hidden_layers": TINY_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 128,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.eos_id,
        "eos_token_id": tokenizer.im_end_id,
        "pad_token_id": tokenizer.eos_id,
    }
    torch.manual_seed(seed)
    if moe:
        config = Qwen3MoeConfig(
            **common,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            decoder_sparse_step=1,
            norm_topk_prob=True,
        )
        model: torch.nn.Module = Qwen3MoeForCausalLM(config)
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**common))
    model.save_pretrained(path)  # type: ignore[operator]
    tokenizer.save_pretrained(path)
    return path
