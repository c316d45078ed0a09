"""Choosing a runtime for a model name: embedded SGLang, local transformers, or a server.

Order: an explicit ``Q3AGENT_RUNTIME`` (or ``Q3AGENT_BASE_URL``) wins; otherwise embedded
SGLang when it is importable and a CUDA GPU is present; otherwise transformers when the
weights are on disk (a local directory or the Hugging Face cache); otherwise an error that
says how to get one of the three.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from q3agent.serving.base import Runtime, RuntimeUnavailableError

RUNTIME_ENV = "Q3AGENT_RUNTIME"
"""``sglang``, ``transformers``, ``sglang-remote`` or ``openai``."""
BASE_URL_ENV = "Q3AGENT_BASE_URL"
"""URL of a server for the ``sglang-remote`` and ``openai`` runtimes."""
API_KEY_ENV = "Q3AGENT_API_KEY"

_CHOICES = ("sglang", "transformers", "sglang-remote", "openai")


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


def _server_runtime(kind: str, model: str, url: str | None) -> Runtime:
    if not url:
        raise RuntimeUnavailableError(
            f"{RUNTIME_ENV}={kind} needs the server's URL in {BASE_URL_ENV} "
            "(for example http://127.0.0.1:30000)."
        )
    key = os.environ.get(API_KEY_ENV)
    if kind == "sglang-remote":
        from q3agent.serving.sglang_runtime import RemoteSGLangRuntime

        return RemoteSGLangRuntime(url, model_name=model, api_key=key)
    from q3agent.serving.openai_runtime import OpenAICompatibleRuntime

    return OpenAICompatibleRuntime(url, model=model, api_key=key)


def select_runtime(model: str) -> Runtime:
    """The runtime ``Agent(model=...)`` uses when none is given (see the module docstring)."""
    kind = os.environ.get(RUNTIME_ENV, "").strip().lower()
    url = os.environ.get(BASE_URL_ENV)
    if kind and kind not in _CHOICES:
        raise RuntimeUnavailableError(
            f"{RUNTIME_ENV}={kind!r} is not a runtime; choose one of {', '.join(_CHOICES)}"
        )
    if not kind and url:
        kind = "openai"
    if kind in ("sglang-remote", "openai"):
        return _server_runtime(kind, model, url)
    if kind == "sglang" or (not kind and _has_sglang() and _has_cuda_gpu()):
        from q3agent.serving.sglang_runtime import SGLangRuntime

        return SGLangRuntime(model)
    weights = local_weights(model)
    if kind == "transformers" or weights is not None:
        from q3agent.serving.transformers_runtime import TransformersRuntime

        return TransformersRuntime(weights or model)
    raise RuntimeUnavailableError(
        f"No runtime can serve {model!r} here: SGLang "
        f"{'has no CUDA GPU' if _has_sglang() else 'is not installed'}, and no weights for it "
        "are on disk. Do one of:\n"
        '  - on a CUDA machine: pip install "q3agent[sglang]" (embedded SGLang);\n'
        f"  - point at a server: {BASE_URL_ENV}=http://HOST:PORT "
        f"(and {RUNTIME_ENV}=sglang-remote for SGLang's native API);\n"
        f"  - download weights (huggingface-cli download Qwen/{Path(model).name}) or pass "
        "a local model directory as model=...;\n"
        "  - for tests and demos: Agent(runtime=ScriptedRuntime([...]))."
    )
