"""q3agent's ``router=True`` path through a real ``sglang-router`` (0.3.2) in front of two CPU
SGLang workers with the tiny dense Qwen3.

The router drops ``custom_params`` (docs/serving.md lists what it forwards), so the tier's
scripted processor cannot steer the model through it: these runs let the random model write
freely (thinking off, a short output cap) and check what does not depend on its words.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from q3agent import Agent
from q3agent.serving.sglang_runtime import RemoteSGLangRuntime
from q3agent.testing.sglang_server import engine_env, sglang_venv
from tests.engine.conftest import Fixed
from tests.engine.sglang.conftest import SGLangServers

ROUTER_PORT = 18036
WORKER_PORTS = (18034, 18035)


@pytest.fixture(scope="module")
def router(
    sglang_servers: SGLangServers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A router on two fresh workers; yields its URL."""
    workdir = tmp_path_factory.mktemp("router")
    model = sglang_servers.model_dir("dense")
    workers = [
        sglang_servers.start(f"router-worker-{port}", model, port=port) for port in WORKER_PORTS
    ]
    log = open(workdir / "router.log", "wb")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        [
            str(sglang_venv() / "bin" / "sglang-router"),
            "launch",
            "--host",
            "127.0.0.1",
            "--port",
            str(ROUTER_PORT),
            "--policy",
            "cache_aware",
            "--worker-urls",
            *(w.base_url for w in workers),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=engine_env(workdir),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{ROUTER_PORT}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert process.poll() is None, Path(workdir / "router.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("sglang-router was not ready after 300 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        for worker in workers:
            worker.stop()


def test_two_sync_runs_through_the_router_reuse_the_prefix(router: str) -> None:
    runtime = RemoteSGLangRuntime(router, router=True, engine_budget=True)
    # the router drops custom_params: the in-engine budget cannot apply behind it
    assert not runtime.capabilities.engine_budget
    agent = Agent(None, runtime=runtime, policy=Fixed(thinking=False, max_tokens=24))
    # Two runs of the same task: the second prompt repeats the first whatever the random model
    # wrote. (A session's second task would not do: the random model's first answer is cut at
    # the cap, so that task re-renders the history and shares only ~12 tokens with the first
    # prompt, under the router's cache threshold; it then went to the other worker.)
    try:
        first = agent.run("Say something short.")
        second = agent.run("Say something short.")
    finally:
        agent.close()
    for result in (first, second):
        # random words until the cap: "truncated" (an answer would do as well)
        assert result.status in ("answer", "truncated") and result.steps, result.detail
        assert result.steps[0].usage.requests == 1
    # cache-aware routing sends the second task to the worker that holds the first one
    assert second.steps[0].usage.cached_tokens > 0


def test_flush_cache_reaches_every_worker_and_abort_is_not_routed(router: str) -> None:
    assert httpx.post(f"{router}/flush_cache", timeout=60).status_code == 200
    assert (
        httpx.post(f"{router}/abort_request", json={"rid": "none"}, timeout=60).status_code == 404
    )
