"""How a user names a runtime: settings from flags or ``Q3AGENT_*`` environment variables.

The registry model (``Qwen3-8B``) decides what the model can do (thinking modes, context);
the *served* name (``--served-model``, default the registry's Hugging Face id) only goes on the
wire to a server. :class:`RuntimeSettings` carries the rest: which runtime, the server's URL and
key, the prompt format for string-only servers, a completion-token cap and the context length.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

from q3agent.serving.base import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    Runtime,
    RuntimeUnavailableError,
    RuntimeWrapper,
    fit_to_context,
)

RuntimeKind = Literal["sglang", "transformers", "sglang-remote", "openai"]
"""The runtimes :func:`q3agent.serving.select.select_runtime` can build."""
RUNTIME_KINDS: tuple[str, ...] = get_args(RuntimeKind)
PromptFormat = Literal["ids", "text"]

RUNTIME_ENV = "Q3AGENT_RUNTIME"
"""``sglang``, ``transformers``, ``sglang-remote`` or ``openai``."""
BASE_URL_ENV = "Q3AGENT_BASE_URL"
"""URL of a server for the ``sglang-remote`` and ``openai`` runtimes."""
API_KEY_ENV = "Q3AGENT_API_KEY"
"""Bearer key sent to that server."""
SERVED_MODEL_ENV = "Q3AGENT_SERVED_MODEL"
"""The model name the server knows (default: the registry model's Hugging Face id)."""
PROMPT_FORMAT_ENV = "Q3AGENT_PROMPT_FORMAT"
"""``ids`` (token-id prompts, the default) or ``text`` for servers that take strings only."""
MAX_TOKENS_ENV = "Q3AGENT_MAX_TOKENS"
"""Upper limit on completion tokens per request."""
CONTEXT_LENGTH_ENV = "Q3AGENT_CONTEXT_LENGTH"
"""The server's context window in tokens (prompt plus completion)."""

ENVIRONMENT: dict[str, str] = {
    "kind": RUNTIME_ENV,
    "base_url": BASE_URL_ENV,
    "api_key": API_KEY_ENV,
    "served_model": SERVED_MODEL_ENV,
    "prompt_format": PROMPT_FORMAT_ENV,
    "max_tokens": MAX_TOKENS_ENV,
    "context_length": CONTEXT_LENGTH_ENV,
}
"""Each :class:`RuntimeSettings` field and the environment variable that sets it."""


class SettingsError(RuntimeUnavailableError):
    """A runtime setting has a value q3agent cannot use; the message names the setting."""


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Which runtime to build and how to reach it; ``None`` means "not set"."""

    kind: RuntimeKind | None = None
    base_url: str | None = None
    api_key: str | None = None
    served_model: str | None = None
    prompt_format: PromptFormat | None = None
    max_tokens: int | None = None
    context_length: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Settings from the ``Q3AGENT_*`` variables (empty values count as unset)."""
        env = os.environ if environ is None else environ
        raw = {name: (env.get(var) or "").strip() or None for name, var in ENVIRONMENT.items()}
        return cls.parse(**raw, source="environment")

    @classmethod
    def parse(cls, *, source: str = "flags", **values: str | int | None) -> RuntimeSettings:
        """Validate raw values (strings from flags or the environment) into settings."""
        out: dict[str, object] = {}
        for name, value in values.items():
            if value is None:
                continue
            where = ENVIRONMENT[name] if source == "environment" else name.replace("_", "-")
            if name == "kind":
                kind = str(value).lower()
                if kind == "auto":
                    continue
                if kind not in RUNTIME_KINDS:
                    raise SettingsError(
                        f"{where}={value!r} is not a runtime; choose one of "
                        f"{', '.join(RUNTIME_KINDS)}"
                    )
                out[name] = kind
            elif name == "prompt_format":
                if value not in ("ids", "text"):
                    raise SettingsError(f"{where}={value!r}: choose 'ids' or 'text'")
                out[name] = value
            elif name in ("max_tokens", "context_length"):
                try:
                    number = int(value)
                except ValueError:
                    raise SettingsError(f"{where}={value!r} is not a whole number") from None
                if number < 1:
                    raise SettingsError(f"{where} must be at least 1, got {number}")
                out[name] = number
            else:
                out[name] = str(value)
        return cls(**out)  # type: ignore[arg-type]

    def over(self, base: RuntimeSettings) -> RuntimeSettings:
        """These settings, with ``base`` filling what they leave unset (flags over env)."""
        return replace(
            base, **{f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}
        )


def served_name(model: str, settings: RuntimeSettings | None = None) -> str:
    """The model name to send to a server: ``--served-model``, else the registry's HF id."""
    if settings is not None and settings.served_model:
        return settings.served_model
    from q3agent.qwen3.models import UnknownModelError, get_model

    try:
        spec = get_model(model)
    except (UnknownModelError, OSError):
        return model
    return spec.hf_id or model


class LimitedRuntime(RuntimeWrapper):
    """A runtime whose requests ask for at most ``max_tokens`` and fit in ``context_length``.

    ``context_length`` (``--context-length``) is the window the user declares for the server;
    without it the wrapped runtime's own (learned from the server) applies. The agent sizes its
    context window from it too.
    """

    def __init__(
        self, inner: Runtime, *, max_tokens: int | None = None, context_length: int | None = None
    ) -> None:
        super().__init__(inner)
        self._max_tokens = max_tokens
        self._declared_context = context_length

    @property
    def max_tokens(self) -> int | None:
        """The declared completion cap, else the wrapped runtime's."""
        return self._max_tokens if self._max_tokens is not None else self.inner.max_tokens

    @property
    def context_length(self) -> int | None:
        """The declared context length, else the wrapped runtime's."""
        return self._declared_context or super().context_length

    async def fetch_context_length(self) -> int | None:
        """The declared context length, else what the wrapped runtime learns."""
        return self._declared_context or await super().fetch_context_length()

    def _limit(self, request: GenerationRequest) -> GenerationRequest:
        cap = self._max_tokens
        if cap is not None and request.sampling.max_tokens > cap:
            request = replace(request, sampling=request.sampling.with_(max_tokens=cap))
        return fit_to_context(request, self._declared_context, model=self.model_name)

    async def generate(self, request: GenerationRequest) -> Generation:
        """The inner runtime's completion of the limited request."""
        return await self.inner.generate(self._limit(request))

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The inner runtime's stream of the limited request."""
        return self.inner.stream(self._limit(request))
