"""q3agent's MCP client driven by the official conformance suite's client scenarios.

The suite (``@modelcontextprotocol/conformance client --command "python this.py"``) starts a
test server per scenario, then runs this script with the server URL as the last argument,
``MCP_CONFORMANCE_SCENARIO`` naming the scenario and, for some auth scenarios,
``MCP_CONFORMANCE_CONTEXT`` holding credentials as JSON. Every scenario goes through
:class:`q3agent.tools.mcp.MCPServerStreamableHTTP`; auth scenarios pass the MCP SDK's OAuth
providers as its ``auth``. Exits 0 when the scenario ran, 1 with the error otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx

from q3agent.tools.context import RunContext
from q3agent.tools.mcp import Elicitation, MCPServerStreamableHTTP

REDIRECT_URI = "http://localhost:3000/callback"


def context() -> dict[str, Any]:
    raw = os.environ.get("MCP_CONFORMANCE_CONTEXT")
    return json.loads(raw) if raw else {}


class MemoryStorage:
    """OAuth tokens and client registration kept for the life of the process."""

    def __init__(self) -> None:
        self.tokens: Any = None
        self.client_info: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


class AutoApprove:
    """Plays the browser: opens the authorization URL and reads the code from its redirect."""

    def __init__(self) -> None:
        self.code: tuple[str, str | None] | None = None

    async def redirect(self, url: str) -> None:
        async with httpx.AsyncClient() as http:
            response = await http.get(url, follow_redirects=False)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise RuntimeError(f"authorization gave {response.status_code}, not a redirect")
        query = parse_qs(urlsplit(location).query)
        if "code" not in query:
            raise RuntimeError(f"no code in the redirect {location}")
        self.code = (query["code"][0], (query.get("state") or [None])[0])

    async def callback(self) -> Any:
        from mcp.client.auth import AuthorizationCodeResult

        if self.code is None:
            raise RuntimeError("the authorization redirect was never followed")
        (code, state), self.code = self.code, None
        return AuthorizationCodeResult(code=code, state=state)


async def authorization_code(url: str) -> Any:
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata
    from pydantic import AnyUrl

    storage = MemoryStorage()
    ctx = context()
    if ctx.get("client_id"):  # pre-registered client
        secret = ctx.get("client_secret")
        storage.client_info = OAuthClientInformationFull(
            client_id=ctx["client_id"],
            client_secret=secret,
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
        )
    browser = AutoApprove()
    return OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="q3agent-conformance",
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
        client_metadata_url="https://conformance-test.local/client-metadata.json",
    )


async def client_credentials(url: str, scenario: str) -> Any:
    from mcp.client.auth.extensions.client_credentials import (
        ClientCredentialsOAuthProvider,
        PrivateKeyJWTOAuthProvider,
        SignedJWTParameters,
    )

    ctx = context()
    if scenario.endswith("-jwt"):
        params = SignedJWTParameters(
            issuer=ctx["client_id"],
            subject=ctx["client_id"],
            signing_algorithm=ctx.get("signing_algorithm", "ES256"),
            signing_key=ctx["private_key_pem"],
        )
        return PrivateKeyJWTOAuthProvider(
            server_url=url,
            storage=MemoryStorage(),
            client_id=ctx["client_id"],
            assertion_provider=params.create_assertion_provider(),
        )
    return ClientCredentialsOAuthProvider(
        server_url=url,
        storage=MemoryStorage(),
        client_id=ctx["client_id"],
        client_secret=ctx["client_secret"],
        token_endpoint_auth_method="client_secret_basic",
    )


async def cross_app_access(url: str) -> Any:
    """SEP-990: exchange the IdP's ID token for an ID-JAG, then use it at the MCP server's AS."""
    from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider

    ctx = context()
    parts = urlsplit(url)
    async with httpx.AsyncClient() as http:
        metadata = await http.get(
            f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path}"
        )
        if metadata.status_code != 200:
            metadata = await http.get(
                f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource"
            )
        issuer = str(metadata.json()["authorization_servers"][0]).rstrip("/")

    async def id_jag(audience: str, resource: str) -> str:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                ctx["idp_token_endpoint"],
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                    "subject_token": ctx["idp_id_token"],
                    "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
                    "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
                    "audience": audience,
                    "resource": resource,
                    "client_id": ctx.get("idp_client_id", ""),
                },
            )
        response.raise_for_status()
        return str(response.json()["access_token"])

    return IdentityAssertionOAuthProvider(
        server_url=url,
        storage=MemoryStorage(),
        client_id=ctx["client_id"],
        client_secret=ctx["client_secret"],
        issuer=issuer,
        assertion_provider=id_jag,
        scope=ctx.get("scope"),
        token_endpoint_auth_method="client_secret_basic",
    )


async def accept_with_defaults(request: Elicitation) -> dict[str, Any]:
    return {}  # the client fills in the schema's defaults


async def run(url: str, scenario: str) -> None:
    auth = None
    if scenario.startswith("auth/client-credentials"):
        auth = await client_credentials(url, scenario)
    elif scenario == "auth/cross-app-access-complete-flow":
        auth = await cross_app_access(url)
    elif scenario.startswith("auth/"):
        auth = await authorization_code(url)
    server = MCPServerStreamableHTTP(
        url,
        name="conformance",
        auth=auth,
        protocol="legacy",
        timeout=20,
        connect_timeout=20,
        elicitation=accept_with_defaults,
    )
    calls = {
        "tools_call": ("add_numbers", {"a": 5, "b": 3}),
        "sse-retry": ("test_reconnection", {}),
        "elicitation-sep1034-client-defaults": ("test_client_elicitation_defaults", {}),
    }
    ctx: RunContext[None] = RunContext(deps=None, run_id="conformance", step=0, messages=[])
    async with server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        name, arguments = calls.get(scenario, ("", {}))
        if name:
            print(await tools[name].call(arguments, ctx))
        elif scenario.startswith("auth/") and tools:
            first = next(iter(tools.values()))
            if not first.parameters.get("required"):
                print(await first.call({}, ctx))


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "initialize")
    try:
        anyio.run(run, sys.argv[-1], scenario)
    except Exception as exc:
        print(f"scenario {scenario} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
