"""The Qwen3 model registry: lookups, architecture figures, memory estimates, presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from q3agent.qwen3.models import (
    MAX_OUTPUT_TOKENS,
    MODELS,
    NON_THINKING_SAMPLING,
    THINKING_SAMPLING,
    ModelSpec,
    UnknownModelError,
    get_model,
    model_names,
    registry_table,
    sampling_for,
)

ALL_NAMES = [
    "Qwen3-0.6B",
    "Qwen3-1.7B",
    "Qwen3-4B",
    "Qwen3-8B",
    "Qwen3-14B",
    "Qwen3-32B",
    "Qwen3-30B-A3B",
    "Qwen3-235B-A22B",
    "Qwen3-4B-Instruct-2507",
    "Qwen3-4B-Thinking-2507",
    "Qwen3-30B-A3B-Instruct-2507",
    "Qwen3-30B-A3B-Thinking-2507",
    "Qwen3-235B-A22B-Instruct-2507",
    "Qwen3-235B-A22B-Thinking-2507",
]


def test_every_qwen3_model_is_registered() -> None:
    assert model_names() == ALL_NAMES
    for name in ALL_NAMES:
        spec = get_model(name)
        assert spec.hf_id == f"Qwen/{name}"
        assert get_model(spec.hf_id) is spec
        assert get_model(name.upper()) is spec
        assert spec.vocab_size == 151_936 and spec.head_dim == 128


@pytest.mark.parametrize(
    ("name", "layers", "q", "kv", "hidden", "experts", "active"),
    [
        ("Qwen3-0.6B", 28, 16, 8, 1024, 0, 0),
        ("Qwen3-1.7B", 28, 16, 8, 2048, 0, 0),
        ("Qwen3-4B", 36, 32, 8, 2560, 0, 0),
        ("Qwen3-8B", 36, 32, 8, 4096, 0, 0),
        ("Qwen3-14B", 40, 40, 8, 5120, 0, 0),
        ("Qwen3-32B", 64, 64, 8, 5120, 0, 0),
        ("Qwen3-30B-A3B", 48, 32, 4, 2048, 128, 8),
        ("Qwen3-235B-A22B", 94, 64, 4, 4096, 128, 8),
    ],
)
def test_architecture_matches_the_released_configs(
    name: str, layers: int, q: int, kv: int, hidden: int, experts: int, active: int
) -> None:
    spec = get_model(name)
    assert (spec.layers, spec.num_attention_heads, spec.num_key_value_heads) == (layers, q, kv)
    assert (spec.hidden_size, spec.num_experts, spec.num_experts_per_tok) == (
        hidden,
        experts,
        active,
    )
    assert spec.is_moe == bool(experts)


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_parameter_counts_computed_from_the_architecture_match_the_model_cards(
    spec: ModelSpec,
) -> None:
    # the cards round to one decimal (0.6B, 30.5B, 3.3B activated, 235B, 22B activated)
    assert spec.param_count / 1e9 == pytest.approx(spec.params_total, rel=0.02)
    assert spec.active_param_count / 1e9 == pytest.approx(spec.params_active, rel=0.03)
    assert spec.weight_bytes_bf16 == 2 * spec.param_count
    assert spec.kv_bytes_per_token == spec.layers * spec.num_key_value_heads * 128 * 2 * 2


def test_kv_cache_and_context_figures() -> None:
    assert get_model("Qwen3-8B").kv_bytes_per_token == 36 * 8 * 128 * 2 * 2 == 147_456
    assert get_model("Qwen3-30B-A3B").kv_bytes_per_token == 48 * 4 * 128 * 4 == 98_304
    small = get_model("Qwen3-1.7B")
    assert (small.native_context, small.yarn_context, small.max_context) == (32_768, 0, 32_768)
    assert get_model("Qwen3-32B").max_context == 131_072
    for name in ALL_NAMES[8:]:
        assert get_model(name).native_context == 262_144
    assert [get_model(n).tie_word_embeddings for n in ALL_NAMES[:4]] == [True, True, True, False]


def test_thinking_modes() -> None:
    assert {get_model(n).thinking for n in ALL_NAMES[:8]} == {"hybrid"}
    assert get_model("Qwen3-4B-Instruct-2507").thinking == "non_thinking"
    assert get_model("Qwen3-235B-A22B-Thinking-2507").thinking == "thinking_only"


def test_gpu_estimate_rounds_to_tensor_parallel_sizes() -> None:
    assert get_model("Qwen3-8B").gpus_needed() == 1
    assert get_model("Qwen3-32B").gpus_needed() == 2  # 65.5 GB weights + 8.6 GB KV > 72 GB
    assert get_model("Qwen3-235B-A22B").gpus_needed() == 8  # 470 GB → 7 → 8
    assert get_model("Qwen3-235B-A22B").gpus_needed(gpu_memory_gb=40) == 16
    assert get_model("Qwen3-14B").gpus_needed(gpu_memory_gb=24) == 2
    # a longer context needs more KV memory
    moe = get_model("Qwen3-30B-A3B")
    assert moe.gpus_needed(context=4096) == 1 < moe.gpus_needed(context=131_072)
    for spec in MODELS:
        count = spec.gpus_needed()
        assert count in (1, 2, 4, 8) or count % 8 == 0
    with pytest.raises(ValueError, match="positive"):
        get_model("Qwen3-8B").gpus_needed(gpu_memory_gb=0)


def test_unknown_names_list_the_valid_ones_and_suggest_close_matches() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model("Qwen3-30B-A3")
    message = str(info.value)
    assert "Did you mean 'Qwen3-30B-A3B'" in message
    assert all(name in message for name in ALL_NAMES)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownModelError, match="Known models"):
        get_model("llama-3")


def test_local_directories_are_read_from_their_config(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny-qwen3"
    tiny.mkdir()
    config = {
        "model_type": "qwen3",
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_size": 64,
        "intermediate_size": 128,
        "max_position_embeddings": 4096,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
    }
    (tiny / "config.json").write_text(json.dumps(config))
    spec = get_model(tiny)
    assert spec.name == "tiny-qwen3" and spec.hf_id == ""
    assert spec.local_path == str(tiny.resolve())
    assert (spec.layers, spec.num_attention_heads, spec.num_key_value_heads) == (2, 4, 2)
    assert spec.head_dim == 16 and spec.native_context == 4096 and not spec.is_moe
    assert spec.kv_bytes_per_token == 2 * 2 * 16 * 2 * 2
    assert spec.params_total == pytest.approx(2 * 151_936 * 64 / 1e9, rel=0.05)
    assert get_model(str(tiny)) == spec


def test_local_moe_and_yarn_configs(tmp_path: Path) -> None:
    moe_dir = tmp_path / "Qwen3-30B-A3B-Thinking-2507"
    moe_dir.mkdir()
    config = {
        "model_type": "qwen3_moe",
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "max_position_embeddings": 32768,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 32768,
        },
        "vocab_size": 151936,
    }
    (moe_dir / "config.json").write_text(json.dumps(config))
    spec = get_model(str(moe_dir))
    assert spec.is_moe and spec.thinking == "thinking_only"
    assert spec.yarn_context == 131_072
    assert spec.params_total == pytest.approx(30.5, rel=0.01)
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UnknownModelError, match="runs Qwen3 models"):
        get_model(other)


def test_sampling_presets_follow_the_qwen3_report() -> None:
    assert sampling_for(True) is THINKING_SAMPLING
    assert sampling_for(False) is NON_THINKING_SAMPLING
    t = THINKING_SAMPLING
    assert (t.temperature, t.top_p, t.top_k, t.min_p, t.presence_penalty) == (0.6, 0.95, 20, 0, 0)
    n = NON_THINKING_SAMPLING
    assert (n.temperature, n.top_p, n.top_k, n.min_p, n.presence_penalty) == (0.7, 0.8, 20, 0, 1.5)
    assert t.max_tokens == n.max_tokens == MAX_OUTPUT_TOKENS == 32_768


def test_registry_table_rows() -> None:
    rows = registry_table()
    assert [row["name"] for row in rows] == ALL_NAMES
    row = rows[ALL_NAMES.index("Qwen3-30B-A3B")]
    assert row["experts"] == "8/128" and row["heads"] == "32/4"
    assert row["context"] == "32,768 (131,072 YaRN)"
    assert row["gpus_80gb"] == 1 and row["kv_kib_per_token"] == 96
    assert rows[0]["bf16_gb"] == pytest.approx(1.2, abs=0.05)
