"""The model and runtime flags every command shares, with their ``Q3AGENT_*`` variables.

``--model`` is the registry model (it decides thinking modes and context); ``--served-model``
is the name the server knows (default: the model's Hugging Face id). Each flag falls back to
its environment variable, then to the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from q3agent.serving.settings import (
    API_KEY_ENV,
    BASE_URL_ENV,
    CONTEXT_LENGTH_ENV,
    MAX_TOKENS_ENV,
    PROMPT_FORMAT_ENV,
    RUNTIME_ENV,
    RUNTIME_KINDS,
    SERVED_MODEL_ENV,
    RuntimeSettings,
    SettingsError,
)

if TYPE_CHECKING:
    from q3agent.policy.base import ThinkingCapability
    from q3agent.serving.base import Runtime

DEFAULT_MODEL = "Qwen3-30B-A3B"
MODEL_ENV = "Q3AGENT_MODEL"
"""The registry model when ``--model`` is not given."""
CAPABILITY_ENV = "Q3AGENT_CAPABILITY"
"""What a model outside the registry can do: ``hybrid``, ``thinking_only``, ``non_thinking``."""
CAPABILITIES = ("hybrid", "thinking_only", "non_thinking")

ENVIRONMENT_HELP = f"""\
environment variables (a flag wins over its variable):
  {MODEL_ENV}           --model
  {RUNTIME_ENV}         --runtime
  {BASE_URL_ENV}        --base-url
  {API_KEY_ENV}         --api-key
  {SERVED_MODEL_ENV}    --served-model
  {MAX_TOKENS_ENV}      --max-tokens
  {CONTEXT_LENGTH_ENV}  --context-length
  {CAPABILITY_ENV}      --capability
  {PROMPT_FORMAT_ENV}   --prompt-format"""


def add_runtime_options(
    parser: argparse.ArgumentParser,
    *,
    extra_runtimes: Sequence[str] = (),
    extra_runtimes_help: str = "",
    model: bool = True,
    max_tokens_help: str = "at most this many completion tokens per request",
) -> None:
    """Add ``--model``, ``--runtime``, ``--base-url`` … to ``parser`` (one argument group)."""
    group = parser.add_argument_group(
        "model and runtime",
        "Name the Qwen3 model and where it runs. Against a server (vLLM, SGLang, any "
        "OpenAI-compatible one): --base-url http://HOST:PORT; the server is asked for the "
        "model's Hugging Face id unless --served-model says otherwise.",
    )
    if model:
        group.add_argument(
            "--model",
            metavar="NAME",
            help=f"registry model (see `q3agent models`) or a local model directory; it decides "
            f"thinking modes and context (default {DEFAULT_MODEL}; ${MODEL_ENV})",
        )
    group.add_argument(
        "--runtime",
        choices=("auto", *RUNTIME_KINDS, *extra_runtimes),
        help=f"auto: a server when --base-url is given, embedded SGLang on a CUDA GPU, else "
        f"local transformers weights{extra_runtimes_help} (${RUNTIME_ENV})",
    )
    group.add_argument(
        "--base-url", metavar="URL", help=f"the server's URL, e.g. http://127.0.0.1:8000 "
        f"(${BASE_URL_ENV}; implies --runtime openai)"
    )  # fmt: skip
    group.add_argument("--api-key", metavar="KEY", help=f"the server's API key (${API_KEY_ENV})")
    group.add_argument(
        "--served-model",
        metavar="NAME",
        help=f"the model name the server knows (default: the model's Hugging Face id, e.g. "
        f"Qwen/Qwen3-8B; ${SERVED_MODEL_ENV})",
    )
    group.add_argument(
        "--max-tokens", type=int, metavar="N", help=f"{max_tokens_help} (${MAX_TOKENS_ENV})"
    )
    group.add_argument(
        "--context-length",
        type=int,
        metavar="N",
        help=f"the server's context window in tokens; requests never ask beyond it "
        f"(${CONTEXT_LENGTH_ENV})",
    )
    group.add_argument(
        "--capability",
        choices=CAPABILITIES,
        help=f"what the model can do, for a model outside the registry (default: from the "
        f"registry; ${CAPABILITY_ENV})",
    )
    group.add_argument(
        "--prompt-format",
        choices=("ids", "text"),
        help=f"ids: token-id prompts (default); text: for servers that take strings only "
        f"(${PROMPT_FORMAT_ENV})",
    )


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The resolved ``--model``, ``--capability`` and runtime settings of one command."""

    model: str
    capability: ThinkingCapability | None
    settings: RuntimeSettings
    runtime_flag: str | None = None
    """``--runtime`` as given (``oracle`` and other command-specific runtimes included)."""

    def limit(self, runtime: Runtime) -> Runtime:
        """``runtime`` (a scripted or built-in one) under ``--max-tokens``/``--context-length``,
        as :meth:`build_runtime`'s runtimes are."""
        if self.settings.max_tokens is None and self.settings.context_length is None:
            return runtime
        from q3agent.serving.settings import LimitedRuntime

        return LimitedRuntime(
            runtime,
            max_tokens=self.settings.max_tokens,
            context_length=self.settings.context_length,
        )

    def build_runtime(self) -> Runtime:
        """The runtime these settings name (may raise :class:`RuntimeUnavailableError`)."""
        from q3agent.serving.select import select_runtime

        return select_runtime(self.model, self.settings)


def resolve_model_choice(args: argparse.Namespace) -> ModelChoice:
    """Flags over ``Q3AGENT_*`` variables over defaults; the model name is checked here.

    Raises :class:`SettingsError` for a bad value and
    :class:`~q3agent.qwen3.models.UnknownModelError` for a model the registry does not know
    (unless ``--capability`` says what it can do).
    """
    runtime_flag = getattr(args, "runtime", None)
    kind = runtime_flag if runtime_flag in (None, "auto", *RUNTIME_KINDS) else None
    flags = RuntimeSettings.parse(
        kind=kind,
        base_url=getattr(args, "base_url", None),
        api_key=getattr(args, "api_key", None),
        served_model=getattr(args, "served_model", None),
        prompt_format=getattr(args, "prompt_format", None),
        max_tokens=getattr(args, "max_tokens", None),
        context_length=getattr(args, "context_length", None),
    )
    env = RuntimeSettings.from_env()
    if runtime_flag == "auto" or (flags.base_url and flags.kind is None):
        env = replace(env, kind=None)  # a URL or "auto" on the command line beats the env's kind
    settings = flags.over(env)
    if settings.base_url:
        check_base_url(settings.base_url, "--base-url" if flags.base_url else f"${BASE_URL_ENV}")
    model = getattr(args, "model", None) or os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL
    raw_capability = getattr(args, "capability", None) or os.environ.get(CAPABILITY_ENV, "")
    capability = raw_capability.strip() or None
    if capability is not None and capability not in CAPABILITIES:
        raise SettingsError(
            f"{CAPABILITY_ENV}={capability!r}: choose one of {', '.join(CAPABILITIES)}"
        )
    if capability is None:
        from q3agent.agent import capability_for

        capability_for(model)  # an unknown name fails now, with the valid ones listed
    return ModelChoice(
        model=model,
        capability=cast("ThinkingCapability | None", capability),
        settings=settings,
        runtime_flag=runtime_flag,
    )


def check_base_url(url: str, source: str) -> None:
    """Refuse a server URL that cannot work before anything connects (no retries, no waits).

    ``source`` names where the value came from (``--base-url`` or its variable).
    """
    from urllib.parse import urlsplit

    example = "http://127.0.0.1:8000"
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError as exc:
        raise SettingsError(
            f"{source} {url!r} is not a valid URL ({exc}); e.g. {example}"
        ) from None
    if parts.scheme not in ("http", "https"):
        hint = f"http://{url}" if "://" not in url else example
        raise SettingsError(f"{source} {url!r} needs http:// or https:// and a host, e.g. {hint}")
    if not parts.hostname:
        raise SettingsError(f"{source} {url!r} has no host name; e.g. {example}")
    if port == 0:
        raise SettingsError(f"{source} {url!r}: port 0 is not a server's port; e.g. {example}")
