"""Runtime selection for Agent(model=...): overrides, local weights, and the no-runtime error."""

from __future__ import annotations

from pathlib import Path

import pytest

from q3agent.serving.base import RuntimeUnavailableError
from q3agent.serving.select import select_runtime


def test_nothing_available_names_every_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("Q3AGENT_RUNTIME", raising=False)
    monkeypatch.delenv("Q3AGENT_BASE_URL", raising=False)
    with pytest.raises(RuntimeUnavailableError) as info:
        select_runtime("Qwen3-8B")
    message = str(info.value)
    assert "q3agent[sglang]" in message
    assert "Q3AGENT_BASE_URL" in message
    assert "Qwen/Qwen3-8B" in message
    assert "ScriptedRuntime" in message


def test_base_url_selects_the_openai_compatible_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    from q3agent.serving.openai_runtime import OpenAICompatibleRuntime

    monkeypatch.delenv("Q3AGENT_RUNTIME", raising=False)
    monkeypatch.setenv("Q3AGENT_BASE_URL", "http://127.0.0.1:9")
    assert isinstance(select_runtime("Qwen3-8B"), OpenAICompatibleRuntime)


def test_remote_sglang_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from q3agent.serving.sglang_runtime import RemoteSGLangRuntime

    monkeypatch.setenv("Q3AGENT_RUNTIME", "sglang-remote")
    monkeypatch.setenv("Q3AGENT_BASE_URL", "http://127.0.0.1:9")
    assert isinstance(select_runtime("Qwen3-8B"), RemoteSGLangRuntime)


def test_server_runtime_without_url_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Q3AGENT_RUNTIME", "openai")
    monkeypatch.delenv("Q3AGENT_BASE_URL", raising=False)
    with pytest.raises(RuntimeUnavailableError, match="Q3AGENT_BASE_URL"):
        select_runtime("Qwen3-8B")


def test_unknown_runtime_name_lists_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Q3AGENT_RUNTIME", "vllm")
    with pytest.raises(RuntimeUnavailableError, match="sglang, transformers"):
        select_runtime("Qwen3-8B")


def test_local_weights_select_transformers(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    from q3agent.serving.transformers_runtime import TransformersRuntime

    monkeypatch.delenv("Q3AGENT_RUNTIME", raising=False)
    monkeypatch.delenv("Q3AGENT_BASE_URL", raising=False)
    runtime = select_runtime(str(tiny_model_dir))
    assert isinstance(runtime, TransformersRuntime)
