"""Runtimes behind one async protocol: SGLang (embedded, remote), OpenAI-compatible,
transformers, and the scripted/function test doubles. Heavy imports stay inside each runtime."""

from q3agent.serving.base import (
    ContextLengthError,
    Generation,
    GenerationChunk,
    GenerationRequest,
    Runtime,
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
    "RuntimeUnavailableError",
    "RuntimeWrapper",
    "SamplingParams",
    "ToolCallConstraint",
    "Usage",
]
