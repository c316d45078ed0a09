"""``serve-mcp``: the official MCP SDK client talks to q3agent over stdio and streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import mcp_types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from q3agent.mcp_server import (
    BearerTokenMiddleware,
    ReadPolicy,
    ServeConfigError,
    build_mcp_server,
    check_http_settings,
    http_app,
    is_loopback,
)
from q3agent.tools.mcp import MCPServerInProcess, MCPServerStreamableHTTP

pytestmark = pytest.mark.anyio

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-3f9a"


def tool_call(name: str, **arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>\n{body}\n</tool_call>"


@pytest.fixture
def served_files(tmp_path: Path) -> dict[str, str]:
    """A completion script that uses mcp-server-time, and the MCP config that provides it."""
    script = tmp_path / "completions.jsonl"
    lines = [
        tool_call("time.get_current_time", timezone="Asia/Tokyo"),
        "It is evening in Tokyo (see the time above).",
    ]
    script.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps({"mcpServers": {"time": {"command": str(BIN / "mcp-server-time")}}})
    )
    return {"script": str(script), "config": str(config)}


def serve_args(files: dict[str, str], *extra: str) -> list[str]:
    return [
        "-m",
        "q3agent.cli.mcp",
        "serve-mcp",
        "--runtime-script",
        files["script"],
        "--mcp-config",
        files["config"],
        *extra,
    ]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def check_ask(result: mcp_types.CallToolResult, progress: list[tuple[float, float | None]]) -> None:
    assert not result.is_error
    structured = result.structured_content
    assert structured is not None
    assert structured["status"] == "answer"
    assert structured["answer"] == "It is evening in Tokyo (see the time above)."
    (source,) = structured["sources"]
    assert source["kind"] == "tool"
    assert source["ref"] == "time.get_current_time"
    assert json.loads(source["location"]) == {"timezone": "Asia/Tokyo"}
    assert '"timezone": "Asia/Tokyo"' in source["excerpt"]
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("It is evening in Tokyo")
    assert "Sources:\n- tool time.get_current_time" in text
    # Progress: each step, the tool call, and the end; strictly increasing.
    assert len(progress) >= 4
    values = [p for p, _ in progress]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    assert progress[-1][0] == progress[-1][1]


async def test_stdio_server_with_the_official_client(served_files: dict[str, str]) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=serve_args(served_files), env=subprocess_env()
    )
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async with Client(params) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"ask"}
        assert tools["ask"].input_schema["required"] == ["task"]
        assert tools["ask"].output_schema is not None
        result = await client.call_tool(
            "ask", {"task": "What time is it in Tokyo?"}, progress_callback=on_progress
        )
    check_ask(result, progress)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_serve_mcp(args: list[str], host: str = "127.0.0.1") -> Iterator[str]:
    """``serve-mcp --transport streamable-http ARGS`` on a free port of ``host``; its URL.

    ``Q3AGENT_MCP_TOKEN`` is not passed on: a token comes only from ``args``.
    """
    port = free_port()
    serve = ["-m", "q3agent.cli.mcp", "serve-mcp", "--transport", "streamable-http"]
    proc = subprocess.Popen(
        [sys.executable, *serve, *args, "--host", host, "--port", str(port)],
        env={k: v for k, v in subprocess_env().items() if k != "Q3AGENT_MCP_TOKEN"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(proc, host, port)
        yield f"http://{host}:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def http_server(served_files: dict[str, str]) -> Iterator[str]:
    """``serve-mcp --transport streamable-http --token …`` on a free 127.0.0.1 port."""
    with running_serve_mcp([*serve_args(served_files)[3:], "--token", TOKEN]) as url:
        yield url


@asynccontextmanager
async def http_client(url: str, token: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


async def test_streamable_http_with_token(http_server: str) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient() as raw:
        missing = await raw.post(http_server, json=INITIALIZE, headers=headers)
        wrong = await raw.post(
            http_server, json=INITIALIZE, headers={**headers, "Authorization": "Bearer nope"}
        )
    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert "bearer token" in missing.json()["error_description"]

    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async with http_client(http_server, TOKEN) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"ask"}
        result = await client.call_tool(
            "ask", {"task": "What time is it in Tokyo?"}, progress_callback=on_progress
        )
    check_ask(result, progress)


async def test_q3agent_client_handle_over_streamable_http(http_server: str) -> None:
    server = MCPServerStreamableHTTP(http_server, {"Authorization": f"Bearer {TOKEN}"}, name="qa")
    async with server:
        (ask,) = await server.list_tools()
        assert ask.name == "qa.ask"
        from q3agent.tools.context import RunContext

        text = await ask.call({"task": "Time in Tokyo?"}, RunContext(None, "r", 0, []))
    assert text.startswith("It is evening in Tokyo")


def test_refuses_public_bind_without_token() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "q3agent.cli.mcp",
            "serve-mcp",
            "--transport",
            "streamable-http",
            "--host",
            "0.0.0.0",
        ],
        env={k: v for k, v in subprocess_env().items() if k != "Q3AGENT_MCP_TOKEN"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a bearer token" in done.stderr
    assert "--token" in done.stderr


def test_loopback_detection_and_app_wrapping() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("localhost")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.10")
    from q3agent import Agent
    from q3agent.testing.runtimes import ScriptedRuntime

    server = build_mcp_server(Agent(runtime=ScriptedRuntime([])), lifespan_close=False)
    with pytest.raises(ServeConfigError, match="without a bearer token"):
        http_app(server, host="10.0.0.5", token=None)
    assert isinstance(http_app(server, host="10.0.0.5", token="t"), BearerTokenMiddleware)


async def test_ask_in_process_with_rag_citations_and_rag_tools(tmp_path: Path) -> None:
    from q3agent import Agent
    from q3agent.mcp_server import ServedAgent
    from q3agent.rag import Ingestor, RagStore, Retriever
    from q3agent.testing.runtimes import ScriptedRuntime

    doc = tmp_path / "fjords.md"
    doc.write_text(
        "# Fjords of Norway\n\nThe Sognefjord is the longest fjord in Norway, 205 km long.\n"
    )
    store = RagStore.ephemeral()
    runtime = ScriptedRuntime(
        [tool_call("rag_search", query="longest fjord"), "The Sognefjord, 205 km long [1]."]
    )
    served = ServedAgent(
        Agent(runtime=runtime),
        retriever=Retriever(store),
        ingestor=Ingestor(store),
        read_policy=ReadPolicy.of([tmp_path]),
    )
    served.closers.append(store.close)
    handle = MCPServerInProcess(build_mcp_server(served, lifespan_close=False), prefix="")
    from q3agent.tools.context import RunContext

    ctx: RunContext[None] = RunContext(None, "r", 0, [])
    try:
        async with handle:
            tools = {t.name: t for t in await handle.list_tools()}
            assert set(tools) == {"ask", "rag_search", "rag_ingest"}
            report = json.loads(await tools["rag_ingest"].call({"sources": [str(doc)]}, ctx))
            assert report["added"] == [str(doc)] or report["chunks_written"] >= 1
            hits = json.loads(await tools["rag_search"].call({"query": "Sognefjord"}, ctx))
            assert "205 km" in hits["passages"][0]["text"]
            answer = await tools["ask"].call({"task": "Which fjord is the longest?"}, ctx)
    finally:
        await served.aclose()
    assert answer.startswith("The Sognefjord, 205 km long [1].")
    assert "Sources:\n[1] Fjords of Norway — " in answer
    assert "fjords.md" in answer


async def test_research_tool_reports_progress_and_returns_a_cited_report() -> None:
    from q3agent import Agent
    from q3agent.mcp_server import ServedAgent
    from q3agent.research.fixture_runtime import ResearchFixtureRuntime
    from q3agent.research.pipeline import ResearchAgent
    from q3agent.testing.runtimes import ScriptedRuntime

    docs = ROOT / "tests" / "research" / "fixtures" / "docs"
    research = ResearchAgent(None, runtime=ResearchFixtureRuntime(), docs=[docs])
    served = ServedAgent(Agent(runtime=ScriptedRuntime([])), research=research)
    server = build_mcp_server(served, lifespan_close=False)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with Client(server) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"ask", "research"}
        topic = sorted(p.stem for p in docs.iterdir())[0].replace("_", " ")
        result = await client.call_tool(
            "research",
            {"question": f"What do the documents say about {topic}?"},
            progress_callback=on_progress,
        )
    assert not result.is_error, result.content
    report = result.content[0].text  # type: ignore[union-attr]
    assert report.startswith("#")
    assert "[1]" in report
    values = [p for p, _, _ in progress]
    assert len(values) >= 3
    assert values == sorted(set(values))


# --------------------------------------------------------------------------------------------
# What a client can reach through the server


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    """A local web server: /docs/page.md, /docs/away (redirects to /secret.md), /secret.md."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/docs/away":
                self.send_response(302)
                self.send_header("Location", "/secret.md")
                self.end_headers()
                return
            pages = {
                "/docs/page.md": b"# Public page\n\nThe harbour opens at six.\n",
                "/secret.md": b"# Internal\n\nThe vault code is 4711.\n",
            }
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/markdown")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_rag_ingest_reads_only_what_the_operator_allowed(tmp_path: Path, web: str) -> None:
    from q3agent import Agent
    from q3agent.mcp_server import ServedAgent
    from q3agent.rag import Ingestor, RagStore, Retriever
    from q3agent.testing.runtimes import ScriptedRuntime

    allowed = tmp_path / "docs"
    allowed.mkdir()
    (allowed / "ok.md").write_text("# Allowed\n\nThe ferry leaves at noon.\n")
    secret = tmp_path / "private.md"
    secret.write_text("# Private\n\nThe password is hunter2.\n")
    (allowed / "link.md").symlink_to(secret)
    store = RagStore.ephemeral()

    def served_with(policy: ReadPolicy) -> ServedAgent:
        return ServedAgent(
            Agent(runtime=ScriptedRuntime([])),
            retriever=Retriever(store),
            ingestor=Ingestor(store),
            read_policy=policy,
        )

    try:
        # Nothing granted: rag_ingest is not offered at all.
        async with Client(build_mcp_server(served_with(ReadPolicy()), lifespan_close=False)) as c:
            assert {t.name for t in (await c.list_tools()).tools} == {"ask", "rag_search"}

        policy = ReadPolicy.of([allowed], [f"{web}/docs/"])
        served = served_with(policy)
        async with Client(build_mcp_server(served, lifespan_close=False)) as client:
            refused = await client.call_tool("rag_ingest", {"sources": [str(secret)]})
            assert refused.is_error
            text = refused.content[0].text  # type: ignore[union-attr]
            assert "outside the folders this server may read" in text
            assert "--allow-folder" in text
            internal = await client.call_tool("rag_ingest", {"sources": [f"{web}/secret.md"]})
            assert internal.is_error
            assert "outside the URL prefixes" in internal.content[0].text  # type: ignore[union-attr]

            mixed = await client.call_tool(
                "rag_ingest",
                {"sources": [str(allowed), f"{web}/docs/page.md", f"{web}/docs/away"]},
            )
            assert not mixed.is_error, mixed.content
            report = mixed.structured_content
            assert report is not None
            assert str(allowed / "ok.md") in report["added"]
            assert f"{web}/docs/page.md" in report["added"]
            failed = "\n".join(report["failed"])
            assert "link.md" in failed and "outside the allowed folders" in failed
            assert f"{web}/docs/away" in failed and "refused" in failed
            hits = await client.call_tool("rag_search", {"query": "password vault code", "k": 10})
            found = json.dumps(hits.structured_content)
            assert "hunter2" not in found and "4711" not in found
            assert "ferry" in found
        for close in served.closers:
            close()
    finally:
        store.close()


def test_read_policy_matches_whole_hosts_and_path_segments(tmp_path: Path) -> None:
    policy = ReadPolicy.of([tmp_path], ["https://docs.example.com/guide"])
    policy.check_url("https://docs.example.com/guide")
    policy.check_url("https://docs.example.com/guide/intro.html")
    for url in (
        "https://docs.example.com/guidebook",
        "https://docs.example.com.evil.net/guide/x",
        "https://docs.example.com@127.0.0.1/guide/x",
        "http://docs.example.com/guide/x",
        "https://docs.example.com:8443/guide/x",
        "file:///etc/passwd",
    ):
        with pytest.raises(ValueError, match="outside the URL prefixes"):
            policy.check_url(url)
    with pytest.raises(ValueError, match="outside the folders"):
        policy.check_path(str(tmp_path / ".." / "elsewhere.md"))
    assert policy.check_path("notes.md") == tmp_path.resolve() / "notes.md"
    with pytest.raises(ServeConfigError, match="no such folder"):
        ReadPolicy.of([tmp_path / "missing"])


def test_blank_tokens_are_refused() -> None:
    for blank in ("", "   ", "\t\n"):
        with pytest.raises(ServeConfigError, match="empty or only whitespace"):
            check_http_settings("10.0.0.5", blank)
    done = subprocess.run(
        [sys.executable, "-m", "q3agent.cli.mcp", "serve-mcp", "--transport", "streamable-http"],
        env={**subprocess_env(), "Q3AGENT_MCP_TOKEN": "  "},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "empty or only whitespace" in done.stderr


def wait_for_port(proc: subprocess.Popen[bytes], host: str, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"serve-mcp did not start: {err}")
            time.sleep(0.1)


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "0"},
    },
}


@pytest.fixture
def other_loopback_server(served_files: dict[str, str]) -> Iterator[str]:
    """``serve-mcp --transport streamable-http --host 127.0.0.2`` without a token."""
    with running_serve_mcp(serve_args(served_files)[3:], host="127.0.0.2") as url:
        yield url


async def test_host_and_origin_are_checked_on_other_loopback_addresses(
    other_loopback_server: str,
) -> None:
    url = other_loopback_server
    port = url.rsplit(":", 1)[1].split("/")[0]
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient() as raw:
        rebinding = await raw.post(
            url, json=INITIALIZE, headers={**headers, "Host": "evil.example.com"}
        )
        evil_port = await raw.post(
            url, json=INITIALIZE, headers={**headers, "Host": f"evil.example.com:{port}"}
        )
        cross_origin = await raw.post(
            url, json=INITIALIZE, headers={**headers, "Origin": "http://evil.example.com"}
        )
        same = await raw.post(url, json=INITIALIZE, headers=headers)
    assert rebinding.status_code == 421
    assert evil_port.status_code == 421
    assert cross_origin.status_code == 403
    assert same.status_code == 200
    info = same.json() if "json" in same.headers["content-type"] else None
    if info is None:  # an SSE stream with one message
        data = next(line for line in same.text.splitlines() if line.startswith("data:"))
        info = json.loads(data[5:])
    from q3agent import __version__

    assert info["result"]["serverInfo"]["version"] == __version__


def test_allowed_hosts_cover_every_bind_address() -> None:
    from q3agent.mcp_server import allowed_hosts_for

    assert "127.0.0.2:8000" in allowed_hosts_for("127.0.0.2", 8000)
    assert "localhost:8000" in allowed_hosts_for("127.0.0.2", 8000)
    assert allowed_hosts_for("::1", 9000)[0] == "[::1]:9000"
    assert allowed_hosts_for("10.0.0.5", 8000) == ["10.0.0.5:8000"]
    assert allowed_hosts_for("0.0.0.0", 8000) == []
    assert allowed_hosts_for("0.0.0.0", 8000, ["box.lan"]) == ["box.lan:8000"]
    from q3agent import Agent
    from q3agent.testing.runtimes import ScriptedRuntime

    server = build_mcp_server(Agent(runtime=ScriptedRuntime([])), lifespan_close=False)
    with pytest.raises(ServeConfigError, match="--allowed-host"):
        http_app(server, host="0.0.0.0", token="secret")


async def test_a_huge_task_is_refused_in_tokens_without_running_the_agent() -> None:
    from q3agent import Agent
    from q3agent.mcp_server import ServedAgent
    from q3agent.testing.runtimes import ScriptedRuntime

    runtime = ScriptedRuntime(["never used"])
    served = ServedAgent(Agent(runtime=runtime), max_task_tokens=2_000)
    big = "lorem ipsum dolor sit amet " * 120_000  # 3.2 MB, under the 4 MiB body limit
    async with Client(build_mcp_server(served, lifespan_close=False)) as client:
        result = await client.call_tool("ask", {"task": big})
        small = await client.call_tool("ask", {"task": "word " * 500})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "this server accepts at most 2,000" in text
    assert f"{len(big):,} characters" in text
    assert not small.is_error
    assert len(runtime.requests) == 1  # only the small task reached the model
    assert "lorem" not in runtime.requests[0].prompt_text


async def test_unknown_prompt_is_invalid_params() -> None:
    from mcp import MCPError

    from q3agent import Agent
    from q3agent.testing.runtimes import ScriptedRuntime

    server = build_mcp_server(Agent(runtime=ScriptedRuntime([])), lifespan_close=False)
    async with Client(server) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("nope")
    assert caught.value.error.code == mcp_types.INVALID_PARAMS
    assert "nope" in caught.value.error.message


# --------------------------------------------------------------------------------------------
# The official conformance suite's server scenarios

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


@pytest.fixture(scope="module")
def conformance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve-mcp --transport streamable-http`` without a token, with a scripted model."""
    script = tmp_path_factory.mktemp("serve") / "completions.jsonl"
    script.write_text('"It is noon."\n' * 20)
    with running_serve_mcp(["--runtime-script", str(script)]) as url:
        yield url


@pytest.mark.parametrize("scenario", list(SERVER_SCENARIOS))
def test_conformance_server_scenario(
    scenario: str, node_tools: Any, conformance_server: str, tmp_path: Path
) -> None:
    reason = SERVER_SCENARIOS[scenario]
    if reason is not None:
        pytest.skip(f"not applicable: {reason}")
    url = ["--url", conformance_server]
    done = subprocess.run(
        [*node_tools.command("conformance"), "server", *url, "--scenario", scenario],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and " 0 failed" in output, output[-4000:]


# --------------------------------------------------------------------------------------------
# Binding: --port 0, a busy port, Host names in any case


@contextmanager
def serve_mcp_on_port_zero(args: list[str]) -> Iterator[str]:
    """``serve-mcp --transport streamable-http --port 0 ARGS``; the URL it says it listens on."""
    serve = ["-m", "q3agent.cli.mcp", "serve-mcp", "--transport", "streamable-http"]
    proc = subprocess.Popen(
        [sys.executable, *serve, *args, "--port", "0"],
        env={k: v for k, v in subprocess_env().items() if k != "Q3AGENT_MCP_TOKEN"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("listening on "):
                yield line.split()[2]
                break
        else:
            pytest.fail("serve-mcp --port 0 did not start: " + "".join(lines))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


async def test_port_zero_serves_on_the_port_it_bound_and_host_names_ignore_case(
    served_files: dict[str, str],
) -> None:
    with serve_mcp_on_port_zero(serve_args(served_files)[3:]) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port != 0
        headers = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient() as raw:
            plain = await raw.post(url, json=INITIALIZE, headers=headers)
            upper = await raw.post(
                url,
                json=INITIALIZE,
                headers={
                    **headers,
                    "Host": f"LOCALHOST:{port}",
                    "Origin": f"HTTP://LocalHost:{port}",
                },
            )
            evil = await raw.post(
                url, json=INITIALIZE, headers={**headers, "Host": f"EVIL.example.com:{port}"}
            )
        assert plain.status_code == 200, plain.text
        assert upper.status_code == 200, upper.text
        assert evil.status_code == 421


async def test_a_busy_port_is_one_typed_error_before_serving() -> None:
    from q3agent import Agent
    from q3agent.errors import UsageError
    from q3agent.mcp_server import PortInUse, serve
    from q3agent.testing.runtimes import ScriptedRuntime

    server = build_mcp_server(Agent(runtime=ScriptedRuntime([])), lifespan_close=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is already in use") as info:
            await serve(server, transport="streamable-http", host="127.0.0.1", port=port)
    assert isinstance(info.value, ServeConfigError)
    assert isinstance(info.value, UsageError)
    assert "--port" in str(info.value)


async def test_unreadable_ingest_paths_give_their_reason(tmp_path: Path) -> None:
    from q3agent import Agent
    from q3agent.mcp_server import ServedAgent
    from q3agent.rag import Ingestor, RagStore, Retriever
    from q3agent.testing.runtimes import ScriptedRuntime

    store = RagStore.ephemeral()
    served = ServedAgent(
        Agent(runtime=ScriptedRuntime([])),
        retriever=Retriever(store),
        ingestor=Ingestor(store),
        read_policy=ReadPolicy.of([tmp_path]),
    )
    try:
        async with Client(build_mcp_server(served, lifespan_close=False)) as client:
            for source in (f"{tmp_path}/a\x00b.md", "x" * 5000 + ".md"):
                result = await client.call_tool("rag_ingest", {"sources": [source]})
                assert result.is_error
                text = result.content[0].text  # type: ignore[union-attr]
                assert "NUL byte" in text or "not a readable path" in text, text
    finally:
        store.close()
