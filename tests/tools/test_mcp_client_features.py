"""What servers may ask of q3agent's MCP client: sampling, elicitation, roots; annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mcp_types
import pytest
from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel

from q3agent import Agent, RunOptions
from q3agent.qwen3.messages import ToolCall
from q3agent.testing.runtimes import ScriptedRuntime
from q3agent.tools.base import Tool, ToolError
from q3agent.tools.context import RunContext
from q3agent.tools.mcp import Elicitation, MCPServerInProcess, MCPServerStdio, SamplingRequest

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.usefixtures("no_leaked_processes"),
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]


def ctx() -> RunContext[None]:
    return RunContext(deps=None, run_id="test", step=0, messages=[])


def tool_call(name: str, **arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>\n{body}\n</tool_call>"


class Booking(BaseModel):
    confirm: bool
    seats: int = 2


def asking_server() -> MCPServer:
    server = MCPServer("asker")

    @server.tool()
    async def summarize(text: str, ctx: Context) -> str:
        """Summarize the text with the client's model."""
        result = await ctx.session.create_message(
            [
                mcp_types.SamplingMessage(
                    role="user",
                    content=mcp_types.TextContent(type="text", text=f"Summarize: {text}"),
                )
            ],
            max_tokens=64,
            system_prompt="You write one-line summaries.",
        )
        return f"summary: {result.content.text}"  # type: ignore[union-attr]

    @server.tool()
    async def book(ctx: Context) -> str:
        """Book seats after asking the user."""
        answer = await ctx.elicit("Book the table?", schema=Booking)
        if answer.action != "accept":
            return f"not booked ({answer.action})"
        return f"booked {answer.data.seats} seats" if answer.data.confirm else "not confirmed"

    @server.tool()
    async def where(ctx: Context) -> list[str]:
        """The client's roots."""
        return [str(r.uri) for r in (await ctx.session.list_roots()).roots]

    @server.tool(annotations=mcp_types.ToolAnnotations(destructive_hint=True))
    def wipe() -> str:
        """Delete everything."""
        return "wiped"

    @server.tool(annotations=mcp_types.ToolAnnotations(read_only_hint=True))
    def look() -> str:
        """Read-only."""
        return "looked"

    return server


async def test_sampling_runs_on_the_agents_runtime_after_approval() -> None:
    asked: list[SamplingRequest] = []

    def approve(request: SamplingRequest) -> bool:
        asked.append(request)
        return True

    server = MCPServerInProcess(asking_server(), protocol="legacy", sampling=approve)
    runtime = ScriptedRuntime(
        [
            tool_call("asker.summarize", text="The meeting moved to Friday at 10."),
            "Meeting moved to Friday 10:00.",  # the sampling request, served by the same runtime
            "The summary says the meeting is on Friday at 10.",
        ]
    )
    result = await Agent(runtime=runtime, mcp_servers=[server]).arun("Summarize my note.")
    assert result.answer == "The summary says the meeting is on Friday at 10."
    assert result.steps[0].tool_results[0].content == "summary: Meeting moved to Friday 10:00."
    (request,) = asked
    assert request.server == "asker"
    assert request.messages == [("user", "Summarize: The meeting moved to Friday at 10.")]
    sampling_prompt = runtime.requests[1].prompt_text
    assert sampling_prompt.startswith("<|im_start|>system\nYou write one-line summaries.")
    assert "<tools>" not in sampling_prompt


async def test_sampling_refused_by_the_approval_callback_is_a_tool_error() -> None:
    server = MCPServerInProcess(
        asking_server(),
        protocol="legacy",
        sampling=lambda request: False,
        sampling_runtime=ScriptedRuntime([]),
    )
    async with server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        with pytest.raises(ToolError, match="rejected"):
            await tools["summarize"].call({"text": "x"}, ctx())


async def test_elicitation_answer_gets_schema_defaults() -> None:
    seen: list[Elicitation] = []

    def answer(request: Elicitation) -> dict[str, Any]:
        seen.append(request)
        return {"confirm": True}

    server = MCPServerInProcess(asking_server(), protocol="legacy", elicitation=answer)
    async with server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        booked = await tools["book"].call({}, ctx())
    assert booked == "booked 2 seats"
    assert seen[0].message == "Book the table?"
    assert seen[0].schema["properties"]["seats"]["default"] == 2

    async def decline(request: Elicitation) -> str:
        return "decline"

    async with MCPServerInProcess(asking_server(), protocol="legacy", elicitation=decline) as s:
        tools = {t.mcp_name: t for t in await s.list_tools()}
        assert await tools["book"].call({}, ctx()) == "not booked (decline)"


async def test_roots_are_offered_as_file_uris(tmp_path: Path) -> None:
    expected = tmp_path.resolve().as_uri()  # noqa: ASYNC240 - a test path, resolved once
    async with MCPServerInProcess(asking_server(), protocol="legacy", roots=[tmp_path]) as server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        listed = await tools["where"].call({}, ctx())
    assert listed == expected


async def test_annotations_decide_which_tools_need_approval() -> None:
    async with MCPServerInProcess(asking_server()) as server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
    assert tools["wipe"].requires_approval and tools["wipe"].destructive
    assert not tools["look"].requires_approval and tools["look"].read_only
    assert not tools["book"].requires_approval  # no annotations: not gated by default
    async with MCPServerInProcess(asking_server(), requires_approval=False) as server:
        assert not any(t.requires_approval for t in await server.list_tools())

    asked: list[str] = []

    def approve(call: ToolCall, tool: Tool) -> bool:
        asked.append(call.name)
        return False

    runtime = ScriptedRuntime([tool_call("asker.wipe") + "\n" + tool_call("asker.look"), "Done."])
    agent = Agent(
        runtime=runtime,
        mcp_servers=[MCPServerInProcess(asking_server())],
        options=RunOptions(approve=approve),
    )
    result = await agent.arun("Clean up.")
    assert asked == ["asker.wipe"]
    wipe, look = (r for step in result.steps for r in step.tool_results)
    assert wipe.is_error and "denied" in wipe.content.lower()
    assert look.content == "looked"


async def test_server_everything_offers_its_sampling_elicitation_and_roots_tools(
    node_tools: Any, tmp_path: Path
) -> None:
    node, script = node_tools.command("mcp-server-everything")
    plain = MCPServerStdio(node, [script, "stdio"], name="everything")
    full = MCPServerStdio(
        node,
        [script, "stdio"],
        name="everything",
        sampling=True,
        sampling_runtime=ScriptedRuntime(["A short answer."]),
        elicitation=lambda request: "decline",
        roots=[tmp_path],
    )
    async with plain:
        without = {t.mcp_name for t in await plain.list_tools()}
    async with full:
        tools = {t.mcp_name: t for t in await full.list_tools()}
        extra = set(tools) - without
        sampled = await tools["trigger-sampling-request"].call(
            {"prompt": "Say hi", "maxTokens": 20}, ctx()
        )
    assert {"trigger-sampling-request", "trigger-elicitation-request", "get-roots-list"} <= extra
    assert "A short answer." in sampled


async def test_the_terminal_elicitation_prompt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from q3agent.tools.mcp import ask_on_terminal

    answers = iter(["maybe", "yes", "", "y"])  # a bad boolean, then yes; default seats; send
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    server = MCPServerInProcess(asking_server(), protocol="legacy", elicitation=ask_on_terminal)
    async with server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        booked = await tools["book"].call({}, ctx())
    assert booked == "booked 2 seats"
    err = capsys.readouterr().err
    assert "MCP server 'asker' asks: Book the table?" in err
    assert "answer yes or no" in err
