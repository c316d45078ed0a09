"""MCP servers as q3agent toolsets: real stdio servers, an in-memory server, crashes, config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import anyio
import mcp_types
import pytest
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError as ServerToolError

from q3agent.events import ToolCallEvent
from q3agent.qwen3.messages import ToolCall, ToolMessage
from q3agent.testing.runtimes import ScriptedRuntime
from q3agent.tools.base import ToolError
from q3agent.tools.context import RunContext
from q3agent.tools.executor import execute_tool_calls
from q3agent.tools.mcp import (
    MCPServerError,
    MCPServerInProcess,
    MCPServerSSE,
    MCPServerStdio,
    MCPServerStreamableHTTP,
    MCPTool,
    load_mcp_config,
    render_mcp_result,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaked_processes")]

BIN = Path(sys.executable).parent


def ctx() -> RunContext[None]:
    return RunContext(deps=None, run_id="test", step=0, messages=[])


def tool_call(name: str, **arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>\n{body}\n</tool_call>"


# --------------------------------------------------------------------------------------------
# Real third-party servers over stdio


async def test_time_server_lists_namespaced_tools_with_their_schemas() -> None:
    async with MCPServerStdio(str(BIN / "mcp-server-time")) as server:
        tools = {t.name: t for t in await server.list_tools()}
        assert set(tools) == {"time.get_current_time", "time.convert_time"}
        get_time = tools["time.get_current_time"]
        assert get_time.mcp_name == "get_current_time"
        schema = get_time.schema()["function"]
        assert schema["parameters"]["required"] == ["timezone"]
        assert "IANA timezone" in schema["parameters"]["properties"]["timezone"]["description"]
        assert "time" in schema["description"].lower()
        # The same list is served from the cache.
        assert [t.name for t in await server.list_tools()] == list(tools)


async def test_time_server_call_and_error_through_the_executor() -> None:
    async with MCPServerStdio("mcp-server-time", env={"PATH": str(BIN)}) as server:
        tools = {t.name: t for t in await server.list_tools()}
        calls = [
            ToolCall(name="time.get_current_time", arguments={"timezone": "UTC"}, index=0),
            ToolCall(name="time.get_current_time", arguments={"timezone": "Mars/Olympus"}, index=1),
            ToolCall(name="time.get_current_time", arguments={}, index=2),
        ]
        ok, bad_zone, missing = await execute_tool_calls(calls, tools, ctx())
    assert not ok.is_error
    assert json.loads(ok.content)["timezone"] == "UTC"
    assert bad_zone.is_error
    assert "Invalid timezone" in bad_zone.content
    # Argument validation happens client-side against the server's own schema.
    assert missing.is_error
    assert missing.error_kind == "invalid_arguments"
    assert "timezone" in missing.content


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "notes.txt").write_text("first line\n")
    subprocess.run(["git", "-C", str(repo), "add", "notes.txt"], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "-m", "Add the notes file"], check=True, env=env
    )
    (repo / "notes.txt").write_text("first line\nsecond line\n")
    return repo


async def test_git_server_on_a_temporary_repository(git_repo: Path) -> None:
    server = MCPServerStdio(
        str(BIN / "mcp-server-git"),
        ["--repository", str(git_repo)],
        allow=["git_log", "git_status", "git_diff*"],
        prefix="git_",
    )
    assert server.name == "git"
    async with server:
        tools = {t.name: t for t in await server.list_tools()}
        assert set(tools) == {
            "git_git_log",
            "git_git_status",
            "git_git_diff_unstaged",
            "git_git_diff_staged",
            "git_git_diff",
        }
        log = await tools["git_git_log"].call({"repo_path": str(git_repo)}, ctx())
        status = await tools["git_git_status"].call({"repo_path": str(git_repo)}, ctx())
        diff = await tools["git_git_diff_unstaged"].call({"repo_path": str(git_repo)}, ctx())
    assert "Add the notes file" in log
    assert "notes.txt" in status
    assert "+second line" in diff


async def test_agent_uses_an_mcp_tool_and_closes_the_server_after_each_run() -> None:
    time_server = MCPServerStdio("mcp-server-time", env={"PATH": str(BIN)})
    runtime = ScriptedRuntime(
        [
            tool_call("time.get_current_time", timezone="Europe/Paris"),
            "It is now the time shown above in Paris.",
            tool_call(
                "time.convert_time",
                source_timezone="UTC",
                time="12:00",
                target_timezone="Asia/Tokyo",
            ),
            "12:00 UTC is 21:00 in Tokyo.",
        ]
    )
    from q3agent import Agent

    agent = Agent(runtime=runtime, mcp_servers=[time_server])
    first = await agent.arun("What time is it in Paris?")
    assert first.status == "answer"
    assert not time_server.is_open
    tool_messages = [m for m in first.messages if isinstance(m, ToolMessage)]
    assert json.loads(tool_messages[0].content)["timezone"] == "Europe/Paris"
    # The tools block of the prompt carries the server's schema under the namespaced name.
    assert '"name": "time.get_current_time"' in runtime.requests[0].prompt_text

    second = await agent.arun("And noon UTC in Tokyo?")  # the handle is re-entered
    assert second.status == "answer"
    result = json.loads([m for m in second.messages if isinstance(m, ToolMessage)][-1].content)
    assert result["target"]["datetime"].endswith("21:00:00+09:00")
    assert not time_server.is_open


# --------------------------------------------------------------------------------------------
# In-memory transport with a server defined here


def demo_server() -> MCPServer:
    server = MCPServer("demo")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def forecast(city: str) -> dict[str, Any]:
        """A structured forecast."""
        return {"city": city, "high_c": 21, "rain": False}

    @server.tool()
    def divide(a: float, b: float) -> float:
        """Divide a by b."""
        if b == 0:
            raise ServerToolError("cannot divide by zero; pass a non-zero b")
        return a / b

    @server.tool(structured_output=False)
    def chart() -> list[Any]:
        """A caption and a PNG image."""
        return ["Sales went up.", Image(data=b"\x89PNG\r\n\x1a\n" + b"\0" * 2000, format="png")]

    @server.tool()
    async def unlock_admin(ctx: Context) -> str:
        """Add the admin tool and tell clients the tool list changed."""

        def reset_all() -> str:
            """Reset everything."""
            return "reset"

        server.add_tool(reset_all)
        if ctx.request_context.protocol_version.startswith("2026"):
            await ctx.notify_tools_changed()  # to subscriptions/listen streams
        else:
            await ctx.request_context.session.send_tool_list_changed()
        return "admin tools unlocked"

    return server


async def test_in_memory_results_structured_error_and_image_note() -> None:
    async with MCPServerInProcess(demo_server()) as server:
        tools = {t.name: t for t in await server.list_tools()}
        assert await tools["demo.add"].call({"a": 2, "b": 40}, ctx()) == "42"
        forecast = await tools["demo.forecast"].call({"city": "Oslo"}, ctx())
        assert json.loads(forecast) == {"city": "Oslo", "high_c": 21, "rain": False}
        with pytest.raises(ToolError, match="cannot divide by zero; pass a non-zero b"):
            await tools["demo.divide"].call({"a": 1, "b": 0}, ctx())
        chart = await tools["demo.chart"].call({}, ctx())
    assert chart.startswith("Sales went up.")
    assert "[image: image/png, 2.0 KB; not shown as text]" in chart
    assert "iVBOR" not in chart  # no base64 in the prompt
    (image,) = chart.media
    assert image.kind == "image" and image.mime_type == "image/png" and len(image.data) == 2008


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_tool_list_changed_drops_the_cache(protocol: Literal["auto", "legacy"]) -> None:
    # auto negotiates 2026-07-28 (changes arrive on subscriptions/listen); legacy gets
    # notifications/tools/list_changed.
    async with MCPServerInProcess(demo_server(), prefix="", protocol=protocol) as server:
        before = {t.name for t in await server.list_tools()}
        assert "reset_all" not in before
        assert "add" in before
        unlock = next(t for t in await server.list_tools() if t.name == "unlock_admin")
        assert await unlock.call({}, ctx()) == "admin tools unlocked"
        # The notification is handled concurrently with the call's response: wait for it.
        with anyio.fail_after(5):
            while "reset_all" not in {t.name for t in await server.list_tools()}:  # noqa: ASYNC110
                await anyio.sleep(0.01)


async def test_allow_block_and_approval_settings() -> None:
    server = MCPServerInProcess(
        demo_server(), name="calc", block=["chart", "unlock_*"], requires_approval=["divide"]
    )
    async with server:
        tools = {t.name: t for t in await server.list_tools()}
    assert set(tools) == {"calc.add", "calc.forecast", "calc.divide"}
    assert tools["calc.divide"].requires_approval
    assert not tools["calc.add"].requires_approval


def test_embedded_text_resources_reach_the_model_and_links_are_noted() -> None:
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(type="text", text="See attached."),
            mcp_types.EmbeddedResource(
                type="resource",
                resource=mcp_types.TextResourceContents(
                    uri="file:///tmp/report.md", mime_type="text/markdown", text="# Report\n" * 50
                ),
            ),
            mcp_types.ResourceLink(
                type="resource_link",
                uri="file:///tmp/data.csv",
                name="data.csv",
                mime_type="text/csv",
            ),
        ]
    )
    text = render_mcp_result(result)
    assert text.splitlines() == [
        "See attached.",
        "[resource file:///tmp/report.md (text/markdown)]",
        *["# Report"] * 50,
        "[resource link: file:///tmp/data.csv (data.csv, text/csv)]",
    ]


async def test_using_a_server_that_is_not_open_says_how_to_open_it() -> None:
    server = MCPServerInProcess(demo_server())
    with pytest.raises(MCPServerError, match="async with server"):
        await server.list_tools()


# --------------------------------------------------------------------------------------------
# Crashes, restarts, timeouts and cleanup


async def test_crash_mid_call_is_a_tool_error_then_the_server_is_restarted_once(
    crashy_server: list[str],
) -> None:
    server = MCPServerStdio(crashy_server[0], crashy_server[1:], name="crashy")
    async with server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        first_pid = int(await tools["pid"].call({}, ctx()))

        with pytest.raises(ToolError, match=r"stopped while running 'crash'.*being restarted"):
            await tools["crash"].call({}, ctx())
        assert await tools["echo"].call({"text": "still here"}, ctx()) == "still here"
        assert server.restarts == 1
        assert int(await tools["pid"].call({}, ctx())) != first_pid

        with pytest.raises(ToolError, match="will not be restarted again"):
            await tools["crash"].call({}, ctx())
        with pytest.raises(ToolError, match=r"'crashy' is unavailable.*lost 2 time"):
            await tools["echo"].call({"text": "anyone?"}, ctx())
        # The tools stay listed, so a running task's tools block does not change under it.
        assert {t.mcp_name for t in await server.list_tools()} == set(tools)


async def test_a_server_that_keeps_dying_is_reported_unavailable(
    crashy_server: list[str], tmp_path: Path
) -> None:
    env = {"CRASHY_REFUSE_RESTART": str(tmp_path / "started")}
    server = MCPServerStdio(crashy_server[0], crashy_server[1:], env=env, name="flaky")
    async with server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        with pytest.raises(ToolError, match="stopped while running 'crash'"):
            await tools["crash"].call({}, ctx())
        results = await execute_tool_calls(
            [ToolCall(name="flaky.echo", arguments={"text": "hi"})],
            {t.name: t for t in tools.values()},
            ctx(),
        )
    message = results[0].content
    assert results[0].is_error
    assert "MCP server 'flaky' is unavailable" in message
    assert "refusing to start again" in message  # the server's own stderr explains why
    assert "Do not call its tools again in this run" in message


async def test_a_server_that_cannot_start_raises_with_its_stderr(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(
        "import sys\nprint('missing API key FOO_KEY', file=sys.stderr)\nsys.exit(2)\n"
    )
    with pytest.raises(MCPServerError) as info:
        async with MCPServerStdio(sys.executable, [str(script)], name="broken"):
            pass
    assert "could not start MCP server 'broken'" in str(info.value)
    assert "missing API key FOO_KEY" in str(info.value)


async def test_slow_call_times_out_with_a_message_for_the_model(crashy_server: list[str]) -> None:
    server = MCPServerStdio(crashy_server[0], crashy_server[1:], name="slow", timeout=0.5)
    async with server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        with pytest.raises(ToolError, match=r"slow\.sleep did not finish within 0\.5 s"):
            await tools["sleep"].call({"seconds": 5}, ctx())
        assert await tools["echo"].call({"text": "ok"}, ctx()) == "ok"


async def test_no_orphans_after_failure_or_cancellation(crashy_server: list[str]) -> None:
    server = MCPServerStdio(crashy_server[0], crashy_server[1:], name="crashy")

    async def failing_run() -> None:
        async with server:
            await server.list_tools()
            raise ValueError("the run failed")

    with pytest.raises(ValueError, match="the run failed"):
        await failing_run()
    assert not server.is_open

    with anyio.move_on_after(1.0) as scope:
        async with server:
            sleep = next(t for t in await server.list_tools() if t.mcp_name == "sleep")
            await sleep.call({"seconds": 30}, ctx())
    assert scope.cancelled_caught
    assert not server.is_open
    # The fixture checks the process table: the server (and its stuck call) is gone.


async def test_agent_run_cancelled_mid_tool_call_leaves_no_server(
    crashy_server: list[str],
) -> None:
    server = MCPServerStdio(crashy_server[0], crashy_server[1:], name="crashy")
    runtime = ScriptedRuntime([tool_call("crashy.sleep", seconds=30), "done"])
    from q3agent import Agent

    agent = Agent(runtime=runtime, mcp_servers=[server])
    with anyio.CancelScope() as scope:
        async for event in agent.stream("Sleep for a while."):
            if isinstance(event, ToolCallEvent):  # cancel 1 s into the 30 s tool call
                scope.deadline = anyio.current_time() + 1.0
    assert scope.cancelled_caught
    assert len(runtime.requests) == 1
    assert not server.is_open
    # The fixture checks the process table: the server and its stuck call are gone.


# --------------------------------------------------------------------------------------------
# Configuration


def test_load_config_from_dict_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCS_TOKEN", "s3cret")
    config = {
        "mcpServers": {
            "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
            "git": {
                "command": "uvx",
                "args": ["mcp-server-git"],
                "env": {"GIT_DIR": "/x"},
                "prefix": "git_",
                "allow": ["git_log"],
            },
            "docs": {
                "url": "http://127.0.0.1:9/mcp",
                "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"},
            },
            "legacy": {"url": "http://127.0.0.1:9/sse"},
            "typed": {"type": "http", "url": "http://127.0.0.1:9/api"},
            "off": {"command": "nothing", "disabled": True},
        }
    }
    servers = load_mcp_config(config)
    by_name = {s.name: s for s in servers}
    assert list(by_name) == ["time", "git", "docs", "legacy", "typed"]
    time_server = by_name["time"]
    assert isinstance(time_server, MCPServerStdio)
    assert time_server.args == ["--local-timezone", "UTC"]
    assert time_server.prefix == "time."
    git = by_name["git"]
    assert isinstance(git, MCPServerStdio)
    assert git.env == {"GIT_DIR": "/x"}
    assert git.prefix == "git_"
    assert git.allow == ("git_log",)
    docs = by_name["docs"]
    assert isinstance(docs, MCPServerStreamableHTTP)
    assert docs.headers == {"Authorization": "Bearer s3cret"}
    assert isinstance(by_name["legacy"], MCPServerSSE)
    assert isinstance(by_name["typed"], MCPServerStreamableHTTP)

    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    assert [s.name for s in load_mcp_config(path)] == list(by_name)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"servers": {}}, "no 'mcpServers' object"),
        ({"mcpServers": {"x": {"args": []}}}, "needs either 'command'"),
        ({"mcpServers": {"x": {"url": "http://h/mcp", "transport": "ws"}}}, "unknown transport"),
        ({"mcpServers": {"x": {"command": "c", "env": {"K": "${NOPE_Q3}"}}}}, "NOPE_Q3 is not set"),
    ],
)
def test_config_errors_say_what_to_fix(config: dict[str, Any], message: str) -> None:
    with pytest.raises(MCPServerError, match=message):
        load_mcp_config(config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(MCPServerError, match="does not exist"):
        load_mcp_config(tmp_path / "nope.json")


def test_default_names_come_from_the_command_or_url() -> None:
    assert MCPServerStdio("mcp-server-time").name == "time"
    assert MCPServerStdio("uvx", ["mcp-server-git", "--repository", "."]).name == "git"
    assert MCPServerStdio("python", ["-m", "mcp_server_fetch"]).name == "fetch"
    assert MCPServerStdio("npx", ["-y", "@modelcontextprotocol/server-github"]).name == "github"
    assert MCPServerStreamableHTTP("http://docs.example.com/mcp").name == "docs"
    assert isinstance(MCPServerStdio.from_command_line("mcp-server-time --x 1"), MCPServerStdio)


def test_mcp_tool_is_a_q3agent_tool() -> None:
    server = MCPServerInProcess(demo_server(), prefix="d_")
    definition = mcp_types.Tool(
        name="weird",
        input_schema={
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "additionalProperties": False,
            "$defs": {"X": {}},
        },
    )
    t = MCPTool(server, definition)
    assert t.schema() == {
        "type": "function",
        "function": {"name": "d_weird", "description": "", "parameters": definition.input_schema},
    }


# --------------------------------------------------------------------------------------------
# CLI: q3agent mcp tools / call


def test_cli_mcp_tools_lists_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    from q3agent.cli.mcp import main

    assert main(["mcp", "tools", "--stdio", str(BIN / "mcp-server-time")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("time (")
    assert "2 tool(s)" in out
    assert "\n  time.get_current_time\n" in out
    assert '"required": [\n' in out
    assert "IANA timezone name" in out

    assert main(["mcp", "tools", "--stdio", str(BIN / "mcp-server-time"), "--json"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert [s["function"]["name"] for s in schemas] == [
        "time.get_current_time",
        "time.convert_time",
    ]


def test_cli_mcp_call_with_config_and_stdio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from q3agent.cli.mcp import main

    config = tmp_path / "mcp.json"
    clock = {"command": str(BIN / "mcp-server-time")}
    config.write_text(json.dumps({"mcpServers": {"clock": clock}}))
    args = '{"timezone": "America/New_York"}'
    assert main(["mcp", "call", "clock.get_current_time", args, "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["timezone"] == "America/New_York"

    stdio = ["--stdio", str(BIN / "mcp-server-time")]
    assert main(["mcp", "call", "get_current_time", '{"timezone": "UTC"}', *stdio]) == 0
    assert json.loads(capsys.readouterr().out)["timezone"] == "UTC"

    # A tool error exits 1 and prints the server's message; bad input exits 2 with a hint.
    assert main(["mcp", "call", "time.get_current_time", '{"timezone": "Nowhere"}', *stdio]) == 1
    assert "Invalid timezone" in capsys.readouterr().out
    assert main(["mcp", "call", "clock.get_current_time", "{oops", "--config", str(config)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["mcp", "call", "nope.get_current_time", "{}", "--config", str(config)]) == 2
    assert "no server named 'nope'" in capsys.readouterr().err
