"""Runtimes behind one async protocol: SGLang (embedded, remote), OpenAI-compatible,
transformers (the test runtimes and doubles live in :mod:`q3agent.testing`). Heavy imports
stay inside each runtime."""

from q3agent.serving.base import (
    ContextLengthError,
    Generation,
    GenerationChunk,
    GenerationRequest,
    Runtime,
    RuntimeBase,
    RuntimeCapabilities,
    RuntimeUnavailableError,
    RuntimeWrapper,
    ToolCallConstraint,
)
from q3agent.types import SamplingParams, Usage

__all__ = [
    "ContextLengthError",
    "Generation",
    "GenerationChunk",
    "GenerationRequest",
    "Runtime",
    "RuntimeBase",
    "RuntimeCapabilities",
    "RuntimeUnavailableError",
    "RuntimeWrapper",
    "SamplingParams",
    "ToolCallConstraint",
    "Usage",
]
