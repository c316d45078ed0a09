"""Everything Qwen3-specific and pure: models, chat format, prompt ids, parsing, thinking.

The common names are importable from here (``from q3agent.qwen3 import parse, render``);
each is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from q3agent._lazy import lazy_getattr

_EXPORTS = {
    "parse": "q3agent.qwen3.parsing",
    "Parsed": "q3agent.qwen3.parsing",
    "StreamParser": "q3agent.qwen3.streaming",
    "parse_pythonic": "q3agent.qwen3.pythonic",
    "render": "q3agent.qwen3.chat_format",
    "PromptBuilder": "q3agent.qwen3.prompt",
    "Qwen3Tokenizer": "q3agent.qwen3.tokenizer",
    "get_model": "q3agent.qwen3.models",
    "model_names": "q3agent.qwen3.models",
    "ModelSpec": "q3agent.qwen3.models",
    "UnknownModelError": "q3agent.qwen3.models",
}

if TYPE_CHECKING:
    from q3agent.qwen3.chat_format import render
    from q3agent.qwen3.models import ModelSpec, UnknownModelError, get_model, model_names
    from q3agent.qwen3.parsing import Parsed, parse
    from q3agent.qwen3.prompt import PromptBuilder
    from q3agent.qwen3.pythonic import parse_pythonic
    from q3agent.qwen3.streaming import StreamParser
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

__all__ = [
    "ModelSpec",
    "Parsed",
    "PromptBuilder",
    "Qwen3Tokenizer",
    "StreamParser",
    "UnknownModelError",
    "get_model",
    "model_names",
    "parse",
    "parse_pythonic",
    "render",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
