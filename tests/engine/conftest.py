"""The vLLM engine tier: one real vLLM CPU server per model kind, shared by the whole session.

The fixture finds a server (``Q3AGENT_VLLM_DENSE_URL`` / ``Q3AGENT_VLLM_MOE_URL``, started with
``python -m q3agent.testing.vllm_server MODEL_DIR PORT`` so it loads the scripted-token
processor) or starts one from the engine venv (``.ci/engines.sh``). Only one server runs at a
time (each takes about 4 GiB): asking for the MoE server stops the dense one. Tests skip with
the reason when the engine venv is absent.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import pytest

from q3agent.policy.base import RunState, StepMode
from q3agent.qwen3.models import NON_THINKING_SAMPLING, THINKING_SAMPLING
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.openai_runtime import OpenAICompatibleRuntime
from q3agent.testing.models import QWEN3_CONTEXT, VLLM_CPU_HEAD_DIM, make_tiny_qwen3
from q3agent.testing.vllm_server import VLLMServer, engine_missing_reason, script_body

Kind = Literal["dense", "moe"]
TEMPLATE = Path(__file__).parents[2].parent / "shared" / "reference" / "qwen3_chat_template.jinja"
PORTS: dict[Kind, int] = {"dense": 18011, "moe": 18012}
SERVED_MODEL = "tiny-qwen3"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is an engine test. They run after the rest of the suite, dense first,
    MoE last, so one server runs at a time and none idles while other tests run; each may
    take a server start (1.5-2.5 minutes on two cores) beyond the suite's timeout."""
    here = Path(__file__).parent

    def order(item: pytest.Item) -> int:
        if here not in item.path.parents:
            return 0
        return 2 if "moe" in item.nodeid.lower() else 1

    for item in items:
        if order(item):
            item.add_marker(pytest.mark.engine)
            item.add_marker(pytest.mark.timeout(900))
    items.sort(key=order)


@dataclass
class Engine:
    """A running vLLM server and how to talk to it."""

    kind: Kind
    base_url: str
    model_dir: Path

    def runtime(
        self,
        turns: Sequence[str | Sequence[int]] = (),
        *,
        chat: bool = False,
        extra_body: dict[str, object] | None = None,
        **kwargs: object,
    ) -> OpenAICompatibleRuntime:
        """A q3agent runtime for this server whose model follows ``turns`` (one per reply).

        A turn given as text is encoded with control tokens (``<think>``, ``<tool_call>``) as
        the control ids; give ids to script anything else.
        """
        tok = Qwen3Tokenizer.offline()
        ids = [tok.encode_trusted(t) if isinstance(t, str) else list(t) for t in turns]
        extra = {**(script_body(ids) if ids else {}), **(extra_body or {})}
        return OpenAICompatibleRuntime(
            self.base_url,
            SERVED_MODEL,
            chat=chat,
            extra_body=extra,
            **kwargs,  # type: ignore[arg-type]
        )


@functools.cache
def whitespace_bias() -> dict[str, float]:
    """``logit_bias`` pushing every whitespace-only token down (not out: a grammar that
    allows only whitespace still gets it). An unscripted random model under a JSON grammar
    otherwise pads with whitespace until the token limit."""
    tok = Qwen3Tokenizer.offline()
    return {str(i): -100.0 for i in range(tok.eos_id) if not tok.decode([i]).strip()}


class EngineServers:
    """Starts vLLM servers on demand, at most one at a time; stops them at the end."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.running: dict[Kind, VLLMServer] = {}
        self.engines: dict[Kind, Engine] = {}

    def model_dir(self, kind: Kind) -> Path:
        return make_tiny_qwen3(
            self.scratch / kind,
            moe=kind == "moe",
            seed=0 if kind == "dense" else 1,
            head_dim=VLLM_CPU_HEAD_DIM,
            max_position_embeddings=QWEN3_CONTEXT,
            chat_template=TEMPLATE,
        )

    def get(self, kind: Kind) -> Engine:
        if kind in self.engines:
            return self.engines[kind]
        found = os.environ.get(f"Q3AGENT_VLLM_{kind.upper()}_URL")
        if found:
            engine = Engine(kind, found.rstrip("/"), self.model_dir(kind))
            _check_scripted(engine)
        else:
            for other in list(self.running):
                self.running.pop(other).stop()
                self.engines.pop(other, None)
            server = VLLMServer(
                self.model_dir(kind),
                port=PORTS[kind],
                served_model_name=SERVED_MODEL,
                log_path=self.scratch / f"vllm-{kind}.log",
            )
            self.running[kind] = server
            server.start()
            server.wait_ready()
            engine = Engine(kind, server.base_url, server.model)
        self.engines[kind] = engine
        return engine

    def stop_all(self) -> None:
        for server in self.running.values():
            server.stop()
        self.running.clear()


def _check_scripted(engine: Engine) -> None:
    """Fail early, and say why, when a found server does not follow scripts."""
    tok = Qwen3Tokenizer.offline()
    body = {
        "model": SERVED_MODEL,
        "prompt": tok.encode_trusted("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
        "max_tokens": 4,
        **script_body([tok.encode_trusted("OK<|im_end|>")]),
    }
    try:
        reply = httpx.post(f"{engine.base_url}/v1/completions", json=body, timeout=60).json()
        text = reply["choices"][0]["text"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        pytest.fail(f"the vLLM server at {engine.base_url} did not answer a completion: {exc}")
    if text != "OK":
        pytest.fail(
            f"the vLLM server at {engine.base_url} does not follow scripts (got {text!r}): "
            "start it with `python -m q3agent.testing.vllm_server MODEL_DIR PORT`"
        )


@pytest.fixture(scope="session")
def engine_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServers]:
    """The session's vLLM servers (skips when the engine venv or the template is missing)."""
    reason = engine_missing_reason()
    if reason:
        pytest.skip(reason)
    if not TEMPLATE.is_file():
        pytest.skip(f"the official Qwen3 chat template is missing at {TEMPLATE}")
    servers = EngineServers(tmp_path_factory.mktemp("engine"))
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture
def dense(engine_servers: EngineServers) -> Engine:
    """The dense tiny Qwen3 on vLLM."""
    return engine_servers.get("dense")


@pytest.fixture
def moe(engine_servers: EngineServers) -> Engine:
    """The tiny Qwen3-MoE on vLLM."""
    return engine_servers.get("moe")


class Fixed:
    """A policy with one mode for every step and a small output cap (a safety net: the
    scripted model ends its turns itself)."""

    def __init__(self, thinking: bool, budget: int | None = None, max_tokens: int = 400) -> None:
        preset = THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING
        reason = f"test: {'thinking' if thinking else 'no thinking'}"
        self.mode = StepMode(thinking, budget, preset.with_(max_tokens=max_tokens), reason)

    def decide(self, state: RunState) -> StepMode:
        """The fixed mode."""
        return self.mode
