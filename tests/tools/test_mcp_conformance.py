"""The official MCP conformance suite (npm ``@modelcontextprotocol/conformance`` 0.1.16).

Client scenarios run against q3agent's client (``mcp_conformance_client.py``); server
scenarios run against ``q3agent serve-mcp`` over streamable HTTP. Scenarios that cannot apply
are skipped with the reason: server scenarios that call the suite's own fixture tools,
resources and prompts (``test_*``), which serve-mcp does not have, and one client scenario the
MCP SDK's OAuth client cannot support. Needs ``.ci/mcp.sh`` (node 22 and the suite).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("mcp_conformance_client.py")

CLIENT_SCENARIOS = [
    "initialize",
    "tools_call",
    "elicitation-sep1034-client-defaults",
    "sse-retry",
    "auth/metadata-default",
    "auth/metadata-var1",
    "auth/metadata-var2",
    "auth/metadata-var3",
    "auth/basic-cimd",
    "auth/scope-from-www-authenticate",
    "auth/scope-from-scopes-supported",
    "auth/scope-omitted-when-undefined",
    "auth/scope-step-up",
    "auth/scope-retry-limit",
    "auth/token-endpoint-auth-basic",
    "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none",
    "auth/pre-registration",
    "auth/2025-03-26-oauth-metadata-backcompat",
    "auth/2025-03-26-oauth-endpoint-fallback",
    "auth/resource-mismatch",
    "auth/offline-access-scope",
    "auth/offline-access-not-supported",
    "auth/client-credentials-jwt",
    "auth/client-credentials-basic",
    "auth/cross-app-access-complete-flow",
]
CLIENT_NOT_APPLICABLE = {
    "auth/2025-03-26-oauth-metadata-backcompat": (
        "the MCP SDK's OAuth client requires the authorization server metadata's issuer to "
        "match where it was found (RFC 8414); this 2025-03-26 server's issuer does not"
    ),
}

FIXTURE = "needs the suite's fixture tools/resources/prompts (test_*), which serve-mcp lacks"
SERVER_SCENARIOS = {
    "server-initialize": None,
    "ping": None,
    "tools-list": None,
    "tools-call-simple-text": None,
    "tools-call-error": None,
    "server-sse-multiple-streams": None,
    "resources-list": None,
    "prompts-list": None,
    "dns-rebinding-protection": None,
    "logging-set-level": "serve-mcp does not offer logging (deprecated in MCP 2026-07-28)",
    "completion-complete": FIXTURE,
    "tools-call-image": FIXTURE,
    "tools-call-audio": FIXTURE,
    "tools-call-embedded-resource": FIXTURE,
    "tools-call-mixed-content": FIXTURE,
    "tools-call-with-logging": FIXTURE,
    "tools-call-with-progress": FIXTURE,
    "tools-call-sampling": FIXTURE,
    "tools-call-elicitation": FIXTURE,
    "elicitation-sep1034-defaults": FIXTURE,
    "elicitation-sep1330-enums": FIXTURE,
    "resources-read-text": FIXTURE,
    "resources-read-binary": FIXTURE,
    "resources-templates-read": FIXTURE,
    "resources-subscribe": FIXTURE,
    "resources-unsubscribe": FIXTURE,
    "prompts-get-simple": FIXTURE,
    "prompts-get-with-args": FIXTURE,
    "prompts-get-embedded-resource": FIXTURE,
    "prompts-get-with-image": FIXTURE,
}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def conformance(node_tools: Any, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*node_tools.command("conformance"), *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("scenario", CLIENT_SCENARIOS)
def test_client_scenario(scenario: str, node_tools: Any, tmp_path: Path) -> None:
    if scenario in CLIENT_NOT_APPLICABLE:
        pytest.skip(f"not applicable: {CLIENT_NOT_APPLICABLE[scenario]}")
    command = f"{sys.executable} {CLIENT}"
    done = conformance(
        node_tools, ["client", "--command", command, "--scenario", scenario], tmp_path
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "OVERALL: PASSED" in output, output[-4000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def serve_mcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve-mcp --transport streamable-http`` with a scripted model, on a free port."""
    folder = tmp_path_factory.mktemp("serve")
    script = folder / "completions.jsonl"
    script.write_text('"It is noon."\n' * 20)
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "q3agent.cli.mcp", "serve-mcp"),
            *("--transport", "streamable-http", "--port", str(port)),
            *("--runtime-script", str(script)),
        ],
        env={k: v for k, v in env().items() if k != "Q3AGENT_MCP_TOKEN"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("serve-mcp did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.parametrize("scenario", list(SERVER_SCENARIOS))
def test_server_scenario(scenario: str, node_tools: Any, serve_mcp: str, tmp_path: Path) -> None:
    reason = SERVER_SCENARIOS[scenario]
    if reason is not None:
        pytest.skip(f"not applicable: {reason}")
    done = conformance(node_tools, ["server", "--url", serve_mcp, "--scenario", scenario], tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and " 0 failed" in output, output[-4000:]
