"""Choosing a runtime for a model name: embedded SGLang, local transformers, or a server.

Order: an explicit runtime (``--runtime`` / ``Q3AGENT_RUNTIME``, or a server URL) wins;
otherwise embedded SGLang when it is importable and a CUDA GPU is present; otherwise
transformers when the weights are on disk (a local directory or the Hugging Face cache);
otherwise an error that says how to get one of the three.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from q3agent.serving.base import Runtime, RuntimeUnavailableError
from q3agent.serving.settings import (
    API_KEY_ENV,
    BASE_URL_ENV,
    RUNTIME_ENV,
    SERVED_MODEL_ENV,
    LimitedRuntime,
    RuntimeSettings,
    served_name,
)

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "RUNTIME_ENV",
    "RuntimeSettings",
    "local_weights",
    "runtime_for",
    "select_runtime",
]


def _has_cuda_gpu() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _has_sglang() -> bool:
    return importlib.util.find_spec("sglang") is not None


def local_weights(model: str) -> Path | None:
    """The directory holding ``model``'s weights, if they are on this machine."""
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    from q3agent.qwen3.models import UnknownModelError, get_model

    try:
        hf_id = get_model(model).hf_id
    except (UnknownModelError, ValueError):
        return None
    try:
        from huggingface_hub import snapshot_download

        found = Path(snapshot_download(hf_id, local_files_only=True))
    except Exception:
        return None
    return found if (found / "config.json").is_file() else None


def _server_runtime(kind: str, model: str, settings: RuntimeSettings) -> Runtime:
    url = settings.base_url
    if not url:
        raise RuntimeUnavailableError(
            f"the {kind} runtime needs the server's URL: pass --base-url http://HOST:PORT "
            f"(or set {BASE_URL_ENV}), for example http://127.0.0.1:8000"
        )
    name = served_name(model, settings)
    if kind == "sglang-remote":
        from q3agent.serving.sglang_runtime import RemoteSGLangRuntime

        return RemoteSGLangRuntime(url, model_name=name, api_key=settings.api_key)
    from q3agent.serving.openai_runtime import OpenAICompatibleRuntime

    return OpenAICompatibleRuntime(
        url, model=name, api_key=settings.api_key, prompt_format=settings.prompt_format or "ids"
    )


def select_runtime(model: str, settings: RuntimeSettings | None = None) -> Runtime:
    """The runtime ``Agent(model=...)`` uses when none is given (see the module docstring).

    ``settings`` default to the ``Q3AGENT_*`` environment variables
    (:meth:`RuntimeSettings.from_env`). ``model`` is the registry model (or a local directory);
    a server is sent ``settings.served_model``, else the model's Hugging Face id. With
    ``max_tokens`` or ``context_length`` set the runtime is wrapped so that no request asks
    for more.
    """
    settings = settings if settings is not None else RuntimeSettings.from_env()
    runtime = _select(model, settings)
    if settings.max_tokens is None and settings.context_length is None:
        return runtime
    return LimitedRuntime(
        runtime, max_tokens=settings.max_tokens, context_length=settings.context_length
    )


def runtime_for(owner: str, model: str | None) -> Runtime:
    """:func:`select_runtime` for an agent made without ``runtime=``; ``owner`` names the agent
    class in the error ``model=None`` gets."""
    if model is None:
        raise ValueError(f"{owner}(model=None) needs runtime=...; pass one or a model name")
    return select_runtime(model)


def _select(model: str, settings: RuntimeSettings) -> Runtime:
    kind = settings.kind
    if kind is None and settings.base_url:
        kind = "openai"
    if kind in ("sglang-remote", "openai"):
        return _server_runtime(kind, model, settings)
    if kind == "sglang" or (kind is None and _has_sglang() and _has_cuda_gpu()):
        from q3agent.serving.sglang_runtime import SGLangRuntime

        return SGLangRuntime(model, context_length=settings.context_length)
    weights = local_weights(model)
    if kind == "transformers" or weights is not None:
        from q3agent.serving.transformers_runtime import TransformersRuntime

        return TransformersRuntime(weights or model)
    hf_id = served_name(model)
    raise RuntimeUnavailableError(
        f"No runtime can serve {model!r} here: SGLang "
        f"{'has no CUDA GPU' if _has_sglang() else 'is not installed'}, and no weights for it "
        "are on disk. Do one of:\n"
        f"  - point at a running server (vLLM, SGLang, any OpenAI-compatible one): "
        f"--runtime openai --base-url http://HOST:PORT, or {RUNTIME_ENV}=openai "
        f"{BASE_URL_ENV}=http://HOST:PORT ({RUNTIME_ENV}=sglang-remote for SGLang's native "
        f"API); the server is asked for {hf_id!r} unless --served-model "
        f"({SERVED_MODEL_ENV}) names it otherwise;\n"
        '  - on a CUDA machine: pip install "q3agent[sglang]" (embedded SGLang);\n'
        f"  - download the weights: hf download {hf_id} (or pass a local model directory as "
        "the model);\n"
        "  - for demos without a model: --script completions.jsonl on the command line, "
        "runtime=ScriptedRuntime([...]) in Python."
    )
