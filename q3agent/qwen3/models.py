"""The Qwen3 model registry: architecture figures, memory estimates and sampling presets.

Sources (checked April 2025 – September 2025 releases):

* Architecture numbers are the ``config.json`` values of the Hugging Face repositories
  ``Qwen/Qwen3-*`` (``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``,
  ``head_dim``, ``hidden_size``, ``intermediate_size``, ``moe_intermediate_size``,
  ``num_experts``, ``num_experts_per_tok``, ``tie_word_embeddings``, ``vocab_size`` 151,936).
  The 2507 updates keep the architecture of the model they update.
* Parameter counts and context lengths are the model cards' "Model Overview" lines:
  0.6B and 1.7B: "Context Length: 32,768" (no YaRN extension listed); 4B and larger:
  "32,768 natively and 131,072 tokens with YaRN"; the 2507 releases: "262,144 natively"
  (the 30B/235B 2507 cards add an extension to about 1M tokens through Dual Chunk Attention
  and sparse attention, which is not YaRN and is not modelled here). The released configs say
  ``max_position_embeddings`` 40,960 for the April models: 32,768 of context plus room for
  8,192 output tokens; the registry reports the cards' figure.
* Sampling presets: the Qwen3 technical report and model cards' "Best Practices": thinking
  mode T=0.6, top-p 0.95, top-k 20, min-p 0; non-thinking mode T=0.7, top-p 0.8, top-k 20,
  min-p 0, and a presence penalty between 0 and 2 (1.5 recommended for the 2507 instruct
  models and against endless repetition); output length up to 32,768 tokens.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from q3agent.errors import UsageError
from q3agent.types import SamplingParams

ThinkingMode = Literal["hybrid", "thinking_only", "non_thinking"]
"""``hybrid``: ``enable_thinking`` switches per request; the others are fixed by the model."""

QWEN3_VOCAB_SIZE = 151_936
"""Rows of the embedding matrix (padded; the tokenizer has 151,669 ids)."""

MAX_OUTPUT_TOKENS = 32_768
"""Output length the Qwen3 cards recommend for most queries."""

THINKING_SAMPLING = SamplingParams(
    temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, max_tokens=MAX_OUTPUT_TOKENS
)
"""Sampling for thinking mode (greedy decoding is discouraged: it loops)."""

NON_THINKING_SAMPLING = SamplingParams(
    temperature=0.7,
    top_p=0.8,
    top_k=20,
    min_p=0.0,
    presence_penalty=1.5,
    max_tokens=MAX_OUTPUT_TOKENS,
)
"""Sampling for non-thinking mode."""


def sampling_for(thinking: bool) -> SamplingParams:
    """The recommended sampling preset for thinking (``True``) or non-thinking mode."""
    return THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One Qwen3 model's architecture, context and mode, with derived memory figures."""

    name: str
    """Short name, e.g. ``Qwen3-30B-A3B``."""
    hf_id: str
    """Hugging Face repository id (empty for a local directory)."""
    params_total: float
    """Total parameters in billions, as the model card states it."""
    params_active: float
    """Parameters used per token in billions (equal to ``params_total`` for dense models)."""
    layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    """Dense MLP width (MoE models carry it in the config but use experts instead)."""
    moe_intermediate_size: int = 0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    vocab_size: int = QWEN3_VOCAB_SIZE
    native_context: int = 32_768
    yarn_context: int = 0
    """Context reachable with YaRN rope scaling; 0 where the card lists no YaRN extension."""
    tie_word_embeddings: bool = False
    thinking: ThinkingMode = "hybrid"
    local_path: str | None = None
    """The directory a spec was read from, for local models."""

    @property
    def is_moe(self) -> bool:
        """Whether the MLPs are mixtures of experts."""
        return self.num_experts > 0

    @property
    def max_context(self) -> int:
        """The longest supported context, with YaRN where available."""
        return max(self.native_context, self.yarn_context)

    @property
    def param_count(self) -> int:
        """Parameters computed from the architecture (embeddings, attention with QK-norm, MLPs)."""
        embed = self.vocab_size * self.hidden_size
        lm_head = 0 if self.tie_word_embeddings else embed
        return embed + lm_head + self.layers * self._layer_params(active=False) + self.hidden_size

    @property
    def active_param_count(self) -> int:
        """Parameters a token passes through (top-k experts only), embeddings included."""
        embed = self.vocab_size * self.hidden_size
        lm_head = 0 if self.tie_word_embeddings else embed
        return embed + lm_head + self.layers * self._layer_params(active=True) + self.hidden_size

    def _layer_params(self, *, active: bool) -> int:
        h, hd = self.hidden_size, self.head_dim
        q, kv = self.num_attention_heads, self.num_key_value_heads
        attention = h * q * hd + 2 * h * kv * hd + q * hd * h + 2 * hd  # q,k,v,o + q/k norms
        norms = 2 * h
        if self.is_moe:
            experts = self.num_experts_per_tok if active else self.num_experts
            mlp = h * self.num_experts + experts * 3 * h * self.moe_intermediate_size
        else:
            mlp = 3 * h * self.intermediate_size
        return attention + norms + mlp

    @property
    def weight_bytes_bf16(self) -> int:
        """Bytes of the weights in bfloat16 (2 bytes per parameter)."""
        return 2 * self.param_count

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token in bf16: layers × kv heads × head dim × 2 (K, V) × 2 bytes."""
        return self.layers * self.num_key_value_heads * self.head_dim * 2 * 2

    def gpus_needed(
        self,
        gpu_memory_gb: float = 80.0,
        context: int | None = None,
        *,
        concurrent_sequences: int = 1,
    ) -> int:
        """GPUs of ``gpu_memory_gb`` GB needed to serve the model in bf16.

        The rule: bf16 weights plus a KV reserve of ``context`` tokens (default: the native
        context) for each of ``concurrent_sequences``, divided by 90% of a GPU's memory (10% kept
        for activations, CUDA graphs and fragmentation), rounded up. Tensor parallelism splits the
        attention heads evenly, and every Qwen3 head count (16, 32, 40, 64 query heads; 4 or 8 KV
        heads, replicated beyond that) divides by 1, 2, 4 and 8, so more than one GPU rounds up to
        the next power of two up to 8; beyond 8 GPUs (several nodes) the count rounds up to a
        multiple of 8.
        """
        if gpu_memory_gb <= 0:
            raise ValueError(f"gpu_memory_gb must be positive, got {gpu_memory_gb}")
        tokens = self.native_context if context is None else context
        need = self.weight_bytes_bf16 + self.kv_bytes_per_token * tokens * concurrent_sequences
        usable = gpu_memory_gb * 1e9 * 0.9
        count = max(1, math.ceil(need / usable))
        if count <= 8:
            return 1 << (count - 1).bit_length()
        return 8 * math.ceil(count / 8)


def _dense(
    name: str,
    params: float,
    layers: int,
    q: int,
    kv: int,
    hidden: int,
    inter: int,
    *,
    tie: bool,
    native: int = 32_768,
    yarn: int = 131_072,
    thinking: ThinkingMode = "hybrid",
) -> ModelSpec:
    return ModelSpec(
        name=name,
        hf_id=f"Qwen/{name}",
        params_total=params,
        params_active=params,
        layers=layers,
        num_attention_heads=q,
        num_key_value_heads=kv,
        head_dim=128,
        hidden_size=hidden,
        intermediate_size=inter,
        native_context=native,
        yarn_context=yarn,
        tie_word_embeddings=tie,
        thinking=thinking,
    )


def _moe(
    name: str,
    params: float,
    active: float,
    layers: int,
    q: int,
    hidden: int,
    inter: int,
    moe_inter: int,
    *,
    native: int = 32_768,
    yarn: int = 131_072,
    thinking: ThinkingMode = "hybrid",
) -> ModelSpec:
    dense = _dense(name, params, layers, q, 4, hidden, inter, tie=False, native=native, yarn=yarn)
    return replace(
        dense,
        thinking=thinking,
        params_active=active,
        moe_intermediate_size=moe_inter,
        num_experts=128,
        num_experts_per_tok=8,
    )


def _release_2507(base: ModelSpec, kind: Literal["Instruct", "Thinking"]) -> ModelSpec:
    """A July 2025 update: same architecture, one fixed mode, 262,144 tokens native context."""
    name = f"{base.name}-{kind}-2507"
    thinking: ThinkingMode = "non_thinking" if kind == "Instruct" else "thinking_only"
    return replace(
        base,
        name=name,
        hf_id=f"Qwen/{name}",
        native_context=262_144,
        yarn_context=0,
        thinking=thinking,
    )


_APRIL_2025 = (
    _dense("Qwen3-0.6B", 0.6, 28, 16, 8, 1024, 3072, tie=True, yarn=0),
    _dense("Qwen3-1.7B", 1.7, 28, 16, 8, 2048, 6144, tie=True, yarn=0),
    _dense("Qwen3-4B", 4.0, 36, 32, 8, 2560, 9728, tie=True),
    _dense("Qwen3-8B", 8.2, 36, 32, 8, 4096, 12288, tie=False),
    _dense("Qwen3-14B", 14.8, 40, 40, 8, 5120, 17408, tie=False),
    _dense("Qwen3-32B", 32.8, 64, 64, 8, 5120, 25600, tie=False),
    _moe("Qwen3-30B-A3B", 30.5, 3.3, 48, 32, 2048, 6144, 768),
    _moe("Qwen3-235B-A22B", 235.0, 22.0, 94, 64, 4096, 12288, 1536),
)
_UPDATED_IN_2507 = ("Qwen3-4B", "Qwen3-30B-A3B", "Qwen3-235B-A22B")

MODELS: tuple[ModelSpec, ...] = (
    *_APRIL_2025,
    *(
        _release_2507(base, kind)
        for base in _APRIL_2025
        if base.name in _UPDATED_IN_2507
        for kind in ("Instruct", "Thinking")
    ),
)
"""Every Qwen3 text model the registry knows, in release order."""

_BY_KEY: dict[str, ModelSpec] = {}
for _spec in MODELS:
    _BY_KEY[_spec.name.lower()] = _spec
    _BY_KEY[_spec.hf_id.lower()] = _spec


class UnknownModelError(UsageError, ValueError):
    """A model name that is neither a registry name, an HF id, nor a directory with a config."""


def model_names() -> list[str]:
    """The registry's short names, in release order."""
    return [spec.name for spec in MODELS]


def find_model(name_or_path: str | Path) -> ModelSpec | None:
    """:func:`get_model`, but ``None`` for an unknown name (no "did you mean" hint computed)."""
    key = str(name_or_path).strip()
    spec = _BY_KEY.get(key.lower())
    if spec is not None:
        return spec
    path = Path(key).expanduser()
    if (path / "config.json").is_file():
        return spec_from_config_dir(path)
    return None


def get_model(name_or_path: str | Path) -> ModelSpec:
    """Find a model by short name (any case), HF id, or local directory holding ``config.json``.

    A local directory is read from its config (``model_type`` ``qwen3`` or ``qwen3_moe``) and
    named after the directory.
    """
    key = str(name_or_path).strip()
    spec = find_model(key)
    if spec is not None:
        return spec
    names = model_names()
    candidates = [*names, *(s.hf_id for s in MODELS)]
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    where = " (it is not a directory with a config.json either)" if key else ""
    raise UnknownModelError(
        f"Unknown Qwen3 model {key!r}{where}.{hint} Known models: {', '.join(names)}; "
        "or pass a Hugging Face id from that list or a local model directory."
    )


def spec_from_config_dir(path: str | Path) -> ModelSpec:
    """Build a spec from a local model directory's ``config.json``.

    ``native_context`` is the config's ``max_position_embeddings``; a YaRN ``rope_scaling``
    (or ``rope_parameters``) block gives ``yarn_context`` = factor × original length. The
    thinking mode follows the 2507 naming (``-Instruct-2507`` non-thinking, ``-Thinking-2507``
    thinking-only), else hybrid. Parameter counts are computed from the architecture.
    """
    directory = Path(path).expanduser()
    try:
        config: dict[str, Any] = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UnknownModelError(
            f"Cannot read {directory / 'config.json'}: {exc}. Point to a directory saved with "
            "save_pretrained (config.json plus weights)."
        ) from exc
    model_type = config.get("model_type")
    if model_type not in ("qwen3", "qwen3_moe"):
        raise UnknownModelError(
            f"{directory} holds a {model_type!r} model; q3agent runs Qwen3 models "
            "(model_type 'qwen3' or 'qwen3_moe')."
        )
    moe = model_type == "qwen3_moe"
    q_heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    name = directory.resolve().name
    thinking: ThinkingMode = "hybrid"
    if "instruct-2507" in name.lower():
        thinking = "non_thinking"
    elif "thinking-2507" in name.lower():
        thinking = "thinking_only"
    native = int(config.get("max_position_embeddings", 32_768))
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    yarn = 0
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "yarn":
        original = int(scaling.get("original_max_position_embeddings", native))
        yarn = int(float(scaling.get("factor", 1.0)) * original)
    spec = ModelSpec(
        name=name,
        hf_id="",
        params_total=0.0,
        params_active=0.0,
        layers=int(config["num_hidden_layers"]),
        num_attention_heads=q_heads,
        num_key_value_heads=int(config.get("num_key_value_heads", q_heads)),
        head_dim=int(config.get("head_dim") or hidden // q_heads),
        hidden_size=hidden,
        intermediate_size=int(config.get("intermediate_size", 0)),
        moe_intermediate_size=int(config.get("moe_intermediate_size", 0)) if moe else 0,
        # transformers 5 writes ``num_local_experts``; the released configs say ``num_experts``
        num_experts=int(config.get("num_experts") or config.get("num_local_experts") or 0)
        if moe
        else 0,
        num_experts_per_tok=int(config.get("num_experts_per_tok", 0)) if moe else 0,
        vocab_size=int(config.get("vocab_size", QWEN3_VOCAB_SIZE)),
        native_context=native,
        yarn_context=yarn,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        thinking=thinking,
        local_path=str(directory.resolve()),
    )
    return _with_counts(spec)


def _with_counts(spec: ModelSpec) -> ModelSpec:
    return replace(
        spec,
        params_total=round(spec.param_count / 1e9, 3),
        params_active=round(spec.active_param_count / 1e9, 3),
    )


def registry_table(gpu_memory_gb: float = 80.0) -> list[dict[str, Any]]:
    """One row per registry model for ``q3agent models`` (plain values, ready to print)."""
    rows: list[dict[str, Any]] = []
    for spec in MODELS:
        context = f"{spec.native_context:,}"
        if spec.yarn_context:
            context += f" ({spec.yarn_context:,} YaRN)"
        rows.append(
            {
                "name": spec.name,
                "hf_id": spec.hf_id,
                "params_b": spec.params_total,
                "active_b": spec.params_active,
                "layers": spec.layers,
                "heads": f"{spec.num_attention_heads}/{spec.num_key_value_heads}",
                "experts": (
                    f"{spec.num_experts_per_tok}/{spec.num_experts}" if spec.is_moe else "-"
                ),
                "kv_kib_per_token": spec.kv_bytes_per_token / 1024,
                "bf16_gb": round(spec.weight_bytes_bf16 / 1e9, 1),
                f"gpus_{gpu_memory_gb:g}gb": spec.gpus_needed(gpu_memory_gb),
                "context": context,
                "thinking": spec.thinking,
            }
        )
    return rows
