"""Researcher tools: ``fetch_url`` (httpx or an MCP fetch server), ``rag_search``, wrap-up guard.

Every tool registers what it retrieved in the run's :class:`EvidenceBank` and shows it to the
model under its source number ``[n]``, so researchers can quote and cite it. The guard wraps
each tool: once a researcher's context nears the model's limit, or the run's budget says to
wrap up, a tool call answers with an instruction to write the findings instead of running.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin, urlsplit

from q3agent.research.evidence import EvidenceBank
from q3agent.tools import RunContext, Tool, ToolError, tool
from q3agent.tools.base import DelegatingTool

if TYPE_CHECKING:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer
    from q3agent.rag.retrieval import Retriever
    from q3agent.tools.mcp import MCPServer

MAX_PAGE_BYTES = 4_000_000
MAX_LINKS = 12


@dataclass(frozen=True, slots=True)
class FetchedPage:
    """A fetched web page reduced to text, with the links found on it."""

    url: str
    title: str
    text: str
    links: tuple[tuple[str, str], ...] = ()
    """``(anchor text, absolute URL)`` pairs, in page order."""


class Fetcher(Protocol):
    """Fetches one URL as text (httpx directly, or an MCP fetch server)."""

    async def fetch(self, url: str) -> FetchedPage:
        """The page at ``url``; raises :class:`ToolError` with a reason the model can use."""
        ...


def _links(html: str, base: str) -> tuple[tuple[str, str], ...]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    seen: set[str] = set()
    found: list[tuple[str, str]] = []
    for anchor in soup.find_all("a", href=True):
        href = str(anchor.get("href", ""))
        url = urljoin(base, href).split("#")[0]
        if urlsplit(url).scheme not in ("http", "https") or url in seen or url == base:
            continue
        seen.add(url)
        found.append((anchor.get_text(" ", strip=True)[:80], url))
        if len(found) >= MAX_LINKS:
            break
    return tuple(found)


def _check_url(url: str) -> None:
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ToolError(f"{url!r} is not an http(s) URL; pass a full URL like https://host/page")


class HttpxFetcher:
    """Fetches pages with httpx (redirects followed) and turns HTML, Markdown, text and PDF
    into text with the RAG ingestion parsers."""

    def __init__(self, *, timeout: float = 20.0, headers: dict[str, str] | None = None) -> None:
        self.timeout = timeout
        self.headers = headers or {"User-Agent": "q3agent-research/0.1"}

    async def fetch(self, url: str) -> FetchedPage:
        """Fetch and parse ``url``."""
        import httpx

        from q3agent.rag.ingest import IngestError, parse_document, urlparse_path

        _check_url(url)
        try:
            async with httpx.AsyncClient(
                follow_redirects=True, timeout=self.timeout, headers=self.headers
            ) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            raise ToolError(f"could not fetch {url}: {exc}") from exc
        if response.status_code >= 400:
            raise ToolError(
                f"{url} answered HTTP {response.status_code}; check the URL or try another page"
            )
        data = response.content[:MAX_PAGE_BYTES]
        content_type = response.headers.get("content-type", "").lower()
        suffix = Path(urlparse_path(url)).suffix.lower()
        try:
            doc = parse_document(url, data, suffix=suffix, content_type=content_type)
        except IngestError as exc:
            raise ToolError(f"could not read {url}: {exc}") from exc
        text = "\n\n".join(t for _, t in doc.pages).strip()
        links: tuple[tuple[str, str], ...] = ()
        if "html" in content_type or suffix in (".html", ".htm"):
            links = _links(data.decode(response.encoding or "utf-8", "replace"), str(response.url))
        return FetchedPage(str(response.url), doc.title, text, links)


class MCPFetcher:
    """Fetches pages through an MCP fetch server, e.g. ``MCPServerStdio("mcp-server-fetch")``.

    The server must be open (``async with server:``) while researchers run;
    :class:`~q3agent.research.pipeline.ResearchAgent` opens the one it is given.
    """

    def __init__(self, server: MCPServer, *, tool_name: str = "fetch", max_length: int = 20_000):
        self.server = server
        self.tool_name = tool_name
        self.max_length = max_length

    async def fetch(self, url: str) -> FetchedPage:
        """Call the server's fetch tool and read the Markdown it returns."""
        from q3agent.tools.mcp import MCPServerError, render_mcp_result

        _check_url(url)
        try:
            result = await self.server.call_tool(
                self.tool_name, {"url": url, "max_length": self.max_length}
            )
        except MCPServerError as exc:
            raise ToolError(f"the MCP fetch server failed on {url}: {exc}") from exc
        text = render_mcp_result(result)
        if result.is_error:
            raise ToolError(f"could not fetch {url}: {text[:500]}")
        prefix = f"Contents of {url}:"
        if text.startswith(prefix):
            text = text[len(prefix) :]
        text = text.strip()
        title = next(
            (line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("# ")),
            url,
        )
        links = tuple(
            dict.fromkeys(
                (label.strip()[:80], urljoin(url, link))
                for label, link in re.findall(r"\[([^\]]*)\]\(([^)\s]+)\)", text)
                if urlsplit(urljoin(url, link)).scheme in ("http", "https")
            )
        )[:MAX_LINKS]
        return FetchedPage(url, title, text, links)


def make_fetch_tool(
    fetcher: Fetcher, bank: EvidenceBank, *, max_chars: int = 6000, name: str = "fetch_url"
) -> Tool:
    """The ``fetch_url`` tool: fetches a page, registers its text as a numbered source."""

    async def fetch_url(url: str) -> str:
        """Fetch a web page and return its text under a source number [n] to cite.

        Also lists links found on the page, which can be fetched in turn.

        Args:
            url: The full http(s) URL of the page.
        """
        page = await fetcher.fetch(url.strip())
        text = page.text.strip()
        if len(text) > max_chars:
            text = text[:max_chars].rstrip() + " …"
        if not text:
            raise ToolError(f"{page.url} has no readable text; try another page")
        number = bank.add_page(page.url, page.title, text)
        out = f"[{number}] {page.title or page.url} ({page.url})\n{text}"
        if page.links:
            listing = "\n".join(f"- {label or link}: {link}" for label, link in page.links)
            out += f"\n\nLinks on this page:\n{listing}"
        return out

    return tool(fetch_url, name=name, max_retries=3)


def make_search_tool(retriever: Retriever, bank: EvidenceBank, *, k: int = 4) -> Tool:
    """The ``rag_search`` tool over the ingested documents, numbering through ``bank``."""
    from q3agent.rag.grounding import make_rag_search_tool

    inner = make_rag_search_tool(retriever, bank.citations, default_k=k)
    return _Announcing(inner, bank)


class _Announcing(DelegatingTool):
    """Reports sources a wrapped tool numbered directly in the citation bank."""

    def __init__(self, inner: Tool, bank: EvidenceBank) -> None:
        super().__init__(inner)
        self.bank = bank

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        """Run the wrapped tool, then announce new sources."""
        try:
            return await self.inner.call(arguments, ctx)
        finally:
            self.bank.announce_new_sources()


WRAP_UP_NOTICE = (
    "Not run: {reason}. Do not call more tools; write your findings now from the sources "
    "already retrieved, quoting them verbatim with their [n] numbers."
)


class WrapUpGuard(DelegatingTool):
    """Wraps a researcher tool: refuses to run once the run must wrap up.

    ``should_wrap_up()`` returns a reason (the run's budget) or ``None``; independently, when
    the researcher's conversation reaches ``context_limit`` tokens (estimated from its messages
    with the Qwen3 tokenizer), the call is refused with the same notice.
    """

    def __init__(
        self,
        inner: Tool,
        *,
        tokenizer: Qwen3Tokenizer,
        context_limit: int,
        should_wrap_up: Callable[[], str | None],
    ) -> None:
        super().__init__(inner)
        self.tokenizer = tokenizer
        self.context_limit = context_limit
        self.should_wrap_up = should_wrap_up
        self.refusals = 0

    def context_tokens(self, messages: Sequence[Any]) -> int:
        """Tokens of the researcher's conversation so far (plus a small per-message margin)."""
        total = 0
        for message in messages:
            content = getattr(message, "content", "")
            total += self.tokenizer.count(content if isinstance(content, str) else str(content))
            total += 8
        return total

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        """Run the wrapped tool unless the run or the context says to wrap up."""
        reason = self.should_wrap_up()
        if reason is None:
            used = self.context_tokens(ctx.messages)
            if used >= self.context_limit:
                reason = (
                    f"this conversation holds about {used} tokens, near the context limit "
                    f"({self.context_limit})"
                )
        if reason is not None:
            self.refusals += 1
            return WRAP_UP_NOTICE.format(reason=reason)
        return await self.inner.call(arguments, ctx)

    def render(self, output: Any) -> str:
        """The wrapped tool's rendering (the notice is already text)."""
        return output if isinstance(output, str) else self.inner.render(output)
