"""What the model reads of MCP results: real server-filesystem results and annotated blocks."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

import mcp_types
import pytest
from mcp.server.mcpserver import MCPServer

from q3agent.tools.context import RunContext
from q3agent.tools.mcp import (
    MCPServerInProcess,
    MCPServerStdio,
    MCPToolOutput,
    convert_result,
    render_mcp_result,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaked_processes")]


def ctx() -> RunContext[None]:
    return RunContext(deps=None, run_id="test", step=0, messages=[])


async def test_server_filesystem_text_once_and_images_as_parts(
    node_tools: Any, tmp_path: Path
) -> None:
    big = tmp_path / "big.txt"
    big.write_text(("0123456789" * 5001)[:50_001])
    png = tmp_path / "chart.png"
    data = b"\x89PNG\r\n\x1a\n" + random.Random(0).randbytes(120_000 - 8)
    png.write_bytes(data)
    node, script = node_tools.command("mcp-server-filesystem")
    async with MCPServerStdio(node, [script, str(tmp_path)], name="fs") as server:
        tools = {t.mcp_name: t for t in await server.list_tools()}
        text = await tools["read_text_file"].call({"path": str(big)}, ctx())
        image = await tools["read_media_file"].call({"path": str(png)}, ctx())
    # The file once: structuredContent repeats the text and is not added again.
    assert text == big.read_text()
    # The image: a short note for the model, the bytes as a typed part for the caller.
    assert isinstance(image, MCPToolOutput)
    assert len(image) < 100
    assert image.startswith("[image: image/png, 117.2 KB")
    assert base64.b64encode(data[:30]).decode()[:20] not in image
    (part,) = image.media
    assert (part.kind, part.mime_type, part.data) == ("image", "image/png", data)


def annotated_server() -> MCPServer:
    server = MCPServer("notes")

    @server.tool(structured_output=False)
    def report() -> list[Any]:
        """A summary for the model, a note for the user only, and an embedded text file."""
        return [
            mcp_types.TextContent(type="text", text="3 files changed."),
            mcp_types.TextContent(
                type="text",
                text="Shown to the user: the diff viewer is open.",
                annotations=mcp_types.Annotations(audience=["user"]),
            ),
            mcp_types.TextContent(
                type="text",
                text="For the model: prefer small commits.",
                annotations=mcp_types.Annotations(audience=["assistant"]),
            ),
            mcp_types.EmbeddedResource(
                type="resource",
                resource=mcp_types.TextResourceContents(
                    uri="file:///repo/CHANGES.md", mime_type="text/markdown", text="- fix\n"
                ),
            ),
        ]

    return server


async def test_user_only_blocks_stay_out_of_the_prompt_but_reach_the_caller() -> None:
    async with MCPServerInProcess(annotated_server()) as server:
        (tool,) = await server.list_tools()
        output = await tool.call({}, ctx())
    assert output.splitlines() == [
        "3 files changed.",
        "For the model: prefer small commits.",
        "[resource file:///repo/CHANGES.md (text/markdown)]",
        "- fix",
    ]
    (user_block,) = output.for_user
    assert user_block.text == "Shown to the user: the diff viewer is open."


def test_structured_content_is_used_when_there_is_no_text_and_base64_is_cut() -> None:
    blob = base64.b64encode(bytes(range(256)) * 20).decode()
    result = mcp_types.CallToolResult(
        content=[], structured_content={"name": "scan.png", "data": blob, "pages": 2}
    )
    text = render_mcp_result(result)
    assert text == '{"name": "scan.png", "data": "[binary data, 5.0 KB; not shown]", "pages": 2}'
    only_user = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(
                type="text", text="hi", annotations=mcp_types.Annotations(audience=["user"])
            )
        ]
    )
    assert convert_result(only_user) == "(the tool returned content for the user only)"
