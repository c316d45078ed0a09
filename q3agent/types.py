"""Plain value types every layer shares: decoding settings, token usage and finish reasons.

A leaf module: it imports nothing from q3agent, so the Qwen3 layer (model presets), the
policies, the runtimes and the run results can all use these without importing upward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort"]
"""``stop``: EOS or a stop string/id; ``length``: hit ``max_tokens``; ``abort``: cancelled."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding settings for one request (names follow SGLang's ``sampling_params``)."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 32768
    stop: tuple[str, ...] = ()
    """Stop strings; the matched string is not part of the returned text."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra stop ids besides EOS (``<|im_end|>``, ``<|endoftext|>``); the id is returned."""
    seed: int | None = None

    def with_(self, **changes: Any) -> SamplingParams:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts for one or more requests; ``+`` adds them up."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from a prefix cache (RadixAttention, the transformers KV reuse)."""
    reasoning_tokens: int = 0
    """Completion tokens inside ``<think>…</think>``."""
    requests: int = 0

    @property
    def prefilled_tokens(self) -> int:
        """Prompt tokens the runtime actually computed (not served from cache)."""
        return self.prompt_tokens - self.cached_tokens

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            requests=self.requests + other.requests,
        )
