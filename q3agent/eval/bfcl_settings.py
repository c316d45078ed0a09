"""Named BFCL settings: the Qwen3 report's and BFCL's own handler's, and what each request gets.

Two settings reproduce two different published numbers:

* ``report`` (the Qwen3 technical report, Table "BFCL v3"): functions in Qwen3's tools block
  (FC), thinking on, the report's sampling presets (thinking: temperature 0.6, top-p 0.95,
  top-k 20; non-thinking: 0.7 / 0.8 / 20, presence penalty 1.5) with up to 32,768 new tokens,
  the served model's 40,960-token window for single-turn categories and YaRN at 64K
  (65,536 tokens, factor 2 over the native 32,768) for multi-turn ones. Held-out
  ``miss_func`` functions are added to the tools block (see :data:`HOLDOUT_NOTE`).
* ``bfcl`` (bfcl-eval's local ``Qwen3-*-FC`` handler, what the leaderboard runs): FC,
  thinking on (its template leaves it on), temperature 0.001 and nothing else sent, at most
  4,096 new tokens and never more than ``context - prompt - 2`` (its rule), the config's
  40,960-token window everywhere, held-out functions as a Python list in the user message.

A request never asks for more tokens than its context has left (:func:`request_max_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from q3agent.policy.base import ThinkingCapability
from q3agent.serving.base import CONTEXT_MARGIN
from q3agent.types import SamplingParams

__all__ = [
    "BFCL_MAX_TOKENS",
    "BFCL_SAMPLING",
    "HOLDOUT_NOTE",
    "PRESETS",
    "QWEN3_SERVED_CONTEXT",
    "REPORT_MULTI_TURN_CONTEXT",
    "Holdout",
    "Preset",
    "PresetValues",
    "SamplingName",
    "model_capability",
    "request_max_tokens",
    "step_sampling",
    "yarn_factor",
]

SamplingName = Literal["report", "bfcl"]
Holdout = Literal["tools", "message"]
Preset = Literal["report", "bfcl"]

QWEN3_NATIVE_CONTEXT = 32_768
"""Qwen3's pre-training context; YaRN factors are relative to it."""
QWEN3_SERVED_CONTEXT = 40_960
"""``max_position_embeddings`` in the Qwen3 configs: what SGLang and vLLM serve by default and
what BFCL's handler sizes requests against."""
REPORT_MULTI_TURN_CONTEXT = 65_536
"""The report: "yarn was used to deploy the models to a context length of 64k" (multi-turn)."""

BFCL_MAX_TOKENS = 4096
"""BFCL's handler caps every request at 4,096 new tokens."""
BFCL_SAMPLING = SamplingParams(
    temperature=0.001,
    top_p=1.0,
    top_k=-1,
    min_p=0.0,
    presence_penalty=0.0,
    repetition_penalty=1.0,
    max_tokens=BFCL_MAX_TOKENS,
)
"""BFCL's handler sends only ``temperature=0.001`` and ``max_tokens``: the rest are the
completions API's neutral values."""

HOLDOUT_NOTE = (
    "the report names only the FC format, and BFCL's FC path puts held-out functions in the "
    "tools block; bfcl-eval's local Qwen3 handler, added after the report, uses the message"
)
"""Why ``--preset report`` uses ``--holdout tools``: the report's own pipeline is not public."""


@dataclass(frozen=True)
class PresetValues:
    """What a preset sets (explicit command-line options still win)."""

    mode: Literal["fc", "prompt"]
    thinking: Literal["on", "off", "policy"]
    sampling: SamplingName
    holdout: Holdout
    context_length: int
    multi_turn_context_length: int


PRESETS: dict[str, PresetValues] = {
    "report": PresetValues(
        "fc", "on", "report", "tools", QWEN3_SERVED_CONTEXT, REPORT_MULTI_TURN_CONTEXT
    ),
    "bfcl": PresetValues("fc", "on", "bfcl", "message", QWEN3_SERVED_CONTEXT, QWEN3_SERVED_CONTEXT),
}
"""``--preset report`` and ``--preset bfcl`` (see the module docstring)."""


def step_sampling(
    name: SamplingName,
    preset: SamplingParams,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> SamplingParams:
    """A step's sampling: the report's preset as the policy chose it, or BFCL's; then the
    ``--max-tokens`` / ``--temperature`` overrides."""
    sampling = preset if name == "report" else BFCL_SAMPLING
    if max_tokens is not None:
        sampling = sampling.with_(max_tokens=max_tokens)
    if temperature is not None:
        sampling = sampling.with_(temperature=temperature)
    return sampling


def model_capability(
    model: str | None, capability: ThinkingCapability | None = None
) -> ThinkingCapability:
    """What the model can do (thinking modes): ``capability`` when given, else the registry's
    entry; a hybrid Qwen3 otherwise."""
    if capability is not None:
        return capability
    if model is None:
        return "hybrid"
    from q3agent.qwen3.models import get_model

    try:
        return get_model(model).thinking
    except Exception:  # unknown names and paths: assume a hybrid Qwen3
        return "hybrid"


def request_max_tokens(
    name: SamplingName, wanted: int, prompt_tokens: int, context_length: int | None
) -> int:
    """New tokens to ask for: ``wanted`` within what the context has left.

    ``bfcl`` follows BFCL's handler: ``min(4096, context - prompt - 2)``, and 1,000 when the
    prompt already fills the context (BFCL lets the server reject it). ``report`` asks for
    ``min(wanted, context - prompt - 1)`` (SGLang rejects ``prompt + new >= context``).
    Raises ``ValueError`` when nothing fits (``report``): the entry is then scored as an
    inference error with that reason.
    """
    if context_length is None:
        return wanted
    if name == "bfcl":
        if context_length < prompt_tokens + 2:
            return 1000
        return min(wanted, context_length - prompt_tokens - 2)
    left = context_length - prompt_tokens - CONTEXT_MARGIN
    if left < 1:
        raise ValueError(
            f"the prompt has {prompt_tokens:,} tokens and the context is {context_length:,}: "
            "raise --context-length / --multi-turn-context-length (YaRN) to run this entry"
        )
    return min(wanted, left)


def yarn_factor(context_length: int | None) -> float | None:
    """The YaRN factor a context needs over Qwen3's native 32,768 (``None``: no YaRN).

    Up to 40,960 (the configs' ``max_position_embeddings``) needs none; above it the smallest of
    2 or 4 that covers the context, as the Qwen3 model cards advise.
    """
    if context_length is None or context_length <= QWEN3_SERVED_CONTEXT:
        return None
    factor = 2.0 if context_length <= 2 * QWEN3_NATIVE_CONTEXT else 4.0
    return max(factor, float(-(-context_length // QWEN3_NATIVE_CONTEXT)))
