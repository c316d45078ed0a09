"""The SGLang engine tier: SGLang's own CPU engine (``.ci/sglang.sh``) with tiny random Qwen3s.

Servers are started on demand by :class:`SGLangServers` (one session fixture) from the SGLang
venv with the shims of ``q3agent/testing/sglang_cpu_shims`` and the scripted-token processor
(:mod:`q3agent.testing.sglang_server`). The models' words are forced inside the engine by that
processor, so SGLang's scheduler, RadixAttention, detokenizer, stop handling and grammar
backend are what q3agent meets. Only one "main" server (dense, MoE, or one started with extra
flags) runs at a time; helpers that need several at once (the router's workers) start them
with :meth:`SGLangServers.start` and stop them themselves.

The tier fails loudly at teardown if any server called a shimmed ``sgl_kernel`` function.
Another session's SGLang tier on this machine is waited for (``flock`` on
``/tmp/q3agent-sglang-tier.lock``): the ports are fixed. Tests skip with the reason when the
SGLang venv is absent. ``Q3AGENT_SGLANG_DENSE_URL`` / ``Q3AGENT_SGLANG_MOE_URL`` point the tier
at long-lived servers (``python -m q3agent.testing.sglang_server MODEL_DIR PORT``).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.sglang_runtime import RemoteSGLangRuntime, SGLangRequestOptions
from q3agent.testing.models import QWEN3_CONTEXT, VLLM_CPU_HEAD_DIM, make_tiny_qwen3
from q3agent.testing.sglang_server import (
    SGLangServer,
    script_params,
    scripted_processor_str,
    sglang_missing_reason,
)

Kind = Literal["dense", "moe"]
TEMPLATE = Path(__file__).parents[3].parent / "shared" / "reference" / "qwen3_chat_template.jinja"
PORTS: dict[str, int] = {"dense": 18031, "moe": 18032, "custom": 18033}
"""Fixed ports of the tier's main servers (18034-18039 are left for the router tests)."""
LOCK_PATH = Path("/tmp/q3agent-sglang-tier.lock")
HERE = Path(__file__).parent


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """SGLang tests run last (after the vLLM tier, whose servers are then stopped), dense
    first, then the ones on servers with extra flags, MoE last; each may wait for a server
    start (30 s quiet, minutes under load) beyond the suite's timeout."""

    def order(item: pytest.Item) -> int:
        if HERE not in item.path.parents:
            return 0
        name = item.nodeid.lower()
        return 3 if "moe" in name else 2 if "router" in name else 1

    for item in items:
        if order(item):
            item.add_marker(pytest.mark.engine)
            item.add_marker(pytest.mark.sglang)
            item.add_marker(pytest.mark.timeout(900))
    items.sort(key=order)


def make_yarn_qwen3(directory: Path, *, native: int, factor: float) -> Path:
    """The tiny dense Qwen3 with a native window of ``native`` positions whose ``config.json``
    lists YaRN (``factor`` over ``native``), as the Qwen3 cards tell users to add it."""
    model = make_tiny_qwen3(
        directory,
        seed=0,
        head_dim=VLLM_CPU_HEAD_DIM,
        max_position_embeddings=native,
        chat_template=TEMPLATE,
    )
    config_file = model / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    rope = dict(config.get("rope_parameters") or {"rope_theta": 10000.0})
    rope.update(rope_type="yarn", factor=factor, original_max_position_embeddings=native)
    config["rope_parameters"] = rope
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return model


def encode_turns(turns: Sequence[str | Sequence[int]]) -> list[list[int]]:
    """Turns as ids: text is encoded with control tokens as their control ids."""
    tok = Qwen3Tokenizer.offline()
    return [tok.encode_trusted(t) if isinstance(t, str) else [int(i) for i in t] for t in turns]


@dataclass
class SGLangEngine:
    """A running SGLang server and how to talk to it."""

    kind: str
    base_url: str
    model_dir: Path
    server: SGLangServer | None = None

    def runtime(
        self, turns: Sequence[str | Sequence[int]] = (), **kwargs: Any
    ) -> RemoteSGLangRuntime:
        """q3agent's remote runtime for this server whose model follows ``turns`` (one per
        assistant reply of the conversation; none: the random model samples freely)."""
        if turns:
            kwargs.setdefault(
                "request_options",
                SGLangRequestOptions(
                    custom_logit_processor=scripted_processor_str(),
                    custom_params=script_params(encode_turns(turns)),
                ),
            )
        kwargs.setdefault("model_name", f"tiny-qwen3-{self.kind}")
        return RemoteSGLangRuntime(self.base_url, **kwargs)

    def generate(self, body: Mapping[str, Any], *, timeout: float = 300) -> Any:
        """POST ``body`` to the server's ``/generate`` and return the JSON reply."""
        reply = httpx.post(f"{self.base_url}/generate", json=dict(body), timeout=timeout)
        reply.raise_for_status()
        return reply.json()

    def flush_cache(self) -> None:
        """Empty the radix cache (so a test's ``cached_tokens`` are its own)."""
        httpx.post(f"{self.base_url}/flush_cache", timeout=60)


@dataclass
class SGLangServers:
    """Starts SGLang servers on demand; one main server at a time; all stopped at the end."""

    scratch: Path
    main: dict[str, SGLangEngine] = field(default_factory=dict)
    started: list[SGLangServer] = field(default_factory=list)
    start_seconds: list[tuple[str, float]] = field(default_factory=list)

    def model_dir(self, kind: Kind) -> Path:
        """The tiny random model of ``kind`` (built once per session)."""
        return make_tiny_qwen3(
            self.scratch / kind,
            moe=kind == "moe",
            seed=0 if kind == "dense" else 1,
            head_dim=VLLM_CPU_HEAD_DIM,
            max_position_embeddings=QWEN3_CONTEXT,
            chat_template=TEMPLATE,
        )

    def start(
        self, name: str, model: Path, *, port: int, extra_args: Sequence[str] = ()
    ) -> SGLangServer:
        """Start a server and wait until it is ready; stopped at the session's end (or by the
        caller). Its shimmed-kernel calls are checked at teardown like every other one's."""
        server = SGLangServer(
            model, port=port, extra_args=extra_args, log_path=self.scratch / f"sglang-{name}.log"
        )
        self.started.append(server)
        server.start()
        server.wait_ready(timeout=900)
        assert server.ready_after is not None
        self.start_seconds.append((name, server.ready_after))
        return server

    def get(self, kind: Kind, extra_args: Sequence[str] = ()) -> SGLangEngine:
        """The main server for ``kind`` (with ``extra_args``: a server started with them),
        stopping any other main server first."""
        key = kind if not extra_args else f"{kind}:{' '.join(extra_args)}"
        if key in self.main:
            return self.main[key]
        found = None if extra_args else os.environ.get(f"Q3AGENT_SGLANG_{kind.upper()}_URL")
        if found:
            engine = SGLangEngine(kind, found.rstrip("/"), self.model_dir(kind))
        else:
            for other in list(self.main):
                stopped = self.main.pop(other)
                if stopped.server is not None:
                    stopped.server.stop()
            port = PORTS["custom"] if extra_args else PORTS[kind]
            server = self.start(key, self.model_dir(kind), port=port, extra_args=extra_args)
            engine = SGLangEngine(kind, server.base_url, server.model, server)
        self.main[key] = engine
        return engine

    def kernel_calls(self) -> list[str]:
        """Every shimmed ``sgl_kernel`` function any server of the session called."""
        return [call for server in self.started for call in server.kernel_calls()]

    def stop_all(self) -> None:
        """Stop every server this session started."""
        for server in self.started:
            server.stop()
        self.main.clear()


@pytest.fixture(scope="session")
def sglang_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SGLangServers]:
    """The session's SGLang servers (skips when the SGLang venv or the template is missing);
    fails the tier when a shimmed kernel was called."""
    reason = sglang_missing_reason()
    if reason:
        pytest.skip(reason)
    if not TEMPLATE.is_file():
        pytest.skip(f"the official Qwen3 chat template is missing at {TEMPLATE}")
    LOCK_PATH.touch(exist_ok=True)
    with open(LOCK_PATH) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        servers = SGLangServers(tmp_path_factory.mktemp("sglang"))
        try:
            yield servers
        finally:
            servers.stop_all()
            for name, seconds in servers.start_seconds:
                print(f"\nSGLang server {name!r} was ready {seconds:.0f} s after its start")
            calls = servers.kernel_calls()
            for server in servers.started:
                server.cleanup()  # the kernel-call records are read: remove the work folders
            if calls:
                pytest.fail(
                    "SGLang called shimmed sgl_kernel functions (the shim raised; the engine "
                    f"needs the real kernel library for this path): {sorted(set(calls))}",
                    pytrace=False,
                )


@pytest.fixture
def sglang_dense(sglang_servers: SGLangServers) -> SGLangEngine:
    """The dense tiny Qwen3 on an SGLang CPU server."""
    return sglang_servers.get("dense")


@pytest.fixture
def sglang_moe(sglang_servers: SGLangServers) -> SGLangEngine:
    """The tiny Qwen3-MoE on an SGLang CPU server."""
    return sglang_servers.get("moe")
