"""The official MCP conformance suite's client scenarios against q3agent's MCP client.

``@modelcontextprotocol/conformance`` 0.1.16 starts a test server per scenario and runs
``mcp_conformance_client.py`` against it. A scenario the MCP SDK's OAuth client cannot support
is skipped with the reason. Needs ``.ci/mcp.sh`` (node 22 and the suite). The server scenarios
(against serve-mcp) are in ``tests/test_mcp_server.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
