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


def test_the_served_name_is_the_hf_id_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from q3agent.serving.openai_runtime import OpenAICompatibleRuntime
    from q3agent.serving.settings import RuntimeSettings

    for var in ("Q3AGENT_RUNTIME", "Q3AGENT_BASE_URL", "Q3AGENT_SERVED_MODEL"):
        monkeypatch.delenv(var, raising=False)
    runtime = select_runtime("Qwen3-8B", RuntimeSettings(base_url="http://127.0.0.1:9"))
    assert isinstance(runtime, OpenAICompatibleRuntime)
    assert runtime.model_name == "Qwen/Qwen3-8B"  # what a server knows it by
    named = select_runtime(
        "Qwen3-8B",
        RuntimeSettings(base_url="http://127.0.0.1:9", served_model="qwen", prompt_format="text"),
    )
    assert isinstance(named, OpenAICompatibleRuntime)
    assert (named.model_name, named.prompt_format) == ("qwen", "text")


def test_environment_settings_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from q3agent.serving.settings import LimitedRuntime, RuntimeSettings, SettingsError

    monkeypatch.setenv("Q3AGENT_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("Q3AGENT_API_KEY", "sk-1")
    monkeypatch.setenv("Q3AGENT_MAX_TOKENS", "256")
    monkeypatch.setenv("Q3AGENT_CONTEXT_LENGTH", "4096")
    settings = RuntimeSettings.from_env()
    assert (settings.api_key, settings.max_tokens, settings.context_length) == ("sk-1", 256, 4096)
    runtime = select_runtime("Qwen3-8B")
    assert isinstance(runtime, LimitedRuntime) and runtime.context_length == 4096
    monkeypatch.setenv("Q3AGENT_MAX_TOKENS", "lots")
    with pytest.raises(SettingsError, match="Q3AGENT_MAX_TOKENS='lots' is not a whole number"):
        RuntimeSettings.from_env()
