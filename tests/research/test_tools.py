"""Researcher tools fetch real pages from a local server and number them in the evidence bank."""

from __future__ import annotations

from typing import Any

import pytest

from q3agent.qwen3.messages import UserMessage
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.research.evidence import EvidenceBank
from q3agent.research.tools import (
    HttpxFetcher,
    MCPFetcher,
    WrapUpGuard,
    make_fetch_tool,
    make_search_tool,
)
from q3agent.tools import RunContext, ToolError

pytestmark = pytest.mark.anyio


def ctx(messages: tuple[Any, ...] = ()) -> RunContext[None]:
    return RunContext(deps=None, run_id="t", step=0, messages=messages)


async def test_fetch_url_registers_page_text_and_lists_links(pages_url: str) -> None:
    added: list[int] = []
    bank = EvidenceBank(on_new_source=lambda s: added.append(s.number))
    fetch = make_fetch_tool(HttpxFetcher(), bank)
    out = await fetch.call(fetch.validate({"url": f"{pages_url}/index.html"}), ctx())
    assert out.startswith(f"[1] Vector database field notes ({pages_url}/index.html)")
    assert f"- Cirrus overview: {pages_url}/cirrus.html" in out
    assert "console.log" not in bank.retrieved_text(1)
    again = await fetch.call({"url": f"{pages_url}/cirrus.html"}, ctx())
    assert again.startswith("[2] Cirrus overview")
    assert bank.quote_in_source(2, "a median latency of 9.5 ms on an 8-core database server")
    assert added == [1, 2]


async def test_fetch_url_reports_missing_pages_and_bad_urls(pages_url: str) -> None:
    fetch = make_fetch_tool(HttpxFetcher(), EvidenceBank())
    with pytest.raises(ToolError, match="HTTP 404"):
        await fetch.call({"url": f"{pages_url}/nope.html"}, ctx())
    with pytest.raises(ToolError, match="not an http"):
        await fetch.call({"url": "file:///etc/passwd"}, ctx())


async def test_rag_search_numbers_document_passages_in_the_same_bank(retriever: Any) -> None:
    bank = EvidenceBank()
    bank.add_page("http://127.0.0.1/x", "x", "some earlier page text")
    search = make_search_tool(retriever, bank)
    out = await search.call(search.validate({"query": "Borealis pricing per month"}), ctx())
    assert "[2]" in out and "Borealis" in out
    number = next(s.number for s in bank.sources() if s.location.endswith("borealis.md"))
    assert bank.quote_in_source(number, "costs roughly 520 dollars per month on Borealis")


async def test_mcp_fetch_server_is_an_alternative_fetcher(pages_url: str) -> None:
    from q3agent.tools.mcp import MCPServerStdio

    server = MCPServerStdio("mcp-server-fetch", ["--ignore-robots-txt", "--allow-private-ips"])
    bank = EvidenceBank()
    fetch = make_fetch_tool(MCPFetcher(server), bank)
    async with server:
        out = await fetch.call({"url": f"{pages_url}/cirrus.html"}, ctx())
    assert out.startswith("[1] ")
    assert bank.quote_in_source(1, "Cirrus adds no licence fee")


async def test_wrap_up_guard_refuses_near_the_context_limit_and_on_budget(
    tokenizer: Qwen3Tokenizer, pages_url: str
) -> None:
    bank = EvidenceBank()
    reason: list[str] = []
    guard = WrapUpGuard(
        make_fetch_tool(HttpxFetcher(), bank),
        tokenizer=tokenizer,
        context_limit=200,
        should_wrap_up=lambda: reason[0] if reason else None,
    )
    url = {"url": f"{pages_url}/cirrus.html"}
    assert (await guard.call(url, ctx((UserMessage(content="short task"),)))).startswith("[1]")
    long_history = (UserMessage(content="word " * 400),)
    refused = await guard.call(url, ctx(long_history))
    assert refused.startswith("Not run:") and "context limit" in refused
    reason.append("the budget of 10 model calls is spent")
    assert "10 model calls" in await guard.call(url, ctx())
    assert guard.refusals == 2 and len(bank.sources()) == 1
