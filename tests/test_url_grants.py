"""URL grants: every spelling that climbs out of a granted prefix is refused, on a real server.

The web server here is deliberately lenient, as many real ones are: it decodes percent-escapes
(more than once), turns backslashes into slashes, drops ``;`` parameters, merges doubled
slashes, applies Unicode compatibility forms and resolves dot segments. Whatever spelling a
client sends through ``rag_ingest``, the secret page outside ``/docs/`` must never be served.
"""

from __future__ import annotations

import http.server
import json
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

import pytest
from mcp import Client

from q3agent.mcp_server import ReadPolicy, ServeConfigError, build_mcp_server
from q3agent.mcp_server.url_grants import UnsafeURL, normalize_url

# Paths (after the host) that a lenient server resolves outside /docs/ (mostly to /secret.md).
ESCAPES = [
    "/docs/../secret.md",
    "/docs/./../secret.md",
    "/docs/sub/../../secret.md",
    "/docs/page.md/../../secret.md",
    "/docs/%2e%2e/secret.md",
    "/docs/%2E%2E/secret.md",
    "/docs/.%2e/secret.md",
    "/docs/%2e./secret.md",
    "/docs/%2e%2e/%2e%2e/secret.md",
    "/docs/%2e%2e/secret.md?x=1",
    "/docs/%2e%2e/secret.md#top",
    "/docs/%2e%2e%2fsecret.md",
    "/docs/..%2fsecret.md",
    "/docs/..%2Fsecret.md",
    "/docs%2f..%2fsecret.md",
    "/docs/%252e%252e/secret.md",
    "/docs/%252E%252E/secret.md",
    "/docs/..%252fsecret.md",
    "/docs/%25252e%25252e/secret.md",
    "/docs/%%32%65%%32%65/secret.md",
    "/docs/%u002e%u002e/secret.md",
    "/docs/..\\secret.md",
    "/docs\\..\\secret.md",
    "/docs/..%5csecret.md",
    "/docs/%2e%2e%5Csecret.md",
    "/docs/..;/secret.md",
    "/docs/..;x=1/secret.md",
    "/docs/%2e%2e;/secret.md",
    "/docs/.;/../secret.md",
    "/docs//../secret.md",
    "//docs/../secret.md",
    "/docs/%c0%ae%c0%ae/secret.md",
    "/docs/%e0%80%ae%e0%80%ae/secret.md",
    "/docs/\uff0e\uff0e/secret.md",
    "/docs/%ef%bc%8e%ef%bc%8e/secret.md",
    "/docs/\u2024\u2024/secret.md",
    "/docs/..\uff0fsecret.md",
    "/docs/..%ef%bc%8fsecret.md",
    "/docs/%2e%2e%00/secret.md",
    "/docs/.%09./secret.md",
    "/docs/.\t./secret.md",
    "/docs/..\n/secret.md",
    "/DOCS/../secret.md",
    "/docs/..",
]
# Spellings of /docs/page.md that are inside the grant and must still work.
INSIDE = [
    "/docs/page.md",
    "/docs/%70age.md",
    "/%64ocs/page.md",
    "/docs/page%2Emd",
    "/docs/./page.md",
    "/docs/sub/../page.md",
    "/docs/page.md#intro",
]


def lenient_path(raw: str) -> str:
    """What a permissive web server makes of a request path (see the module docstring)."""
    path = raw.split("?", 1)[0].split("#", 1)[0].replace("%u002e", ".")
    data = path.encode()
    for _ in range(4):  # decode until nothing changes (double and triple encoding)
        decoded = unquote_to_bytes(data)
        if decoded == data:
            break
        data = decoded
    data = data.replace(b"\xc0\xae", b".").replace(b"\xe0\x80\xae", b".")  # overlong dots
    text = unicodedata.normalize("NFKC", data.decode("utf-8", "replace")).replace("\\", "/")
    text = "".join(c for c in text if c.isprintable() or c == "/")
    out: list[str] = []
    for segment in text.split("/"):
        segment = segment.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)


@pytest.fixture
def lenient_web() -> Iterator[tuple[str, list[str]]]:
    """A lenient local web server; its URL and the (resolved) paths it has served."""
    served: list[str] = []
    pages = {
        "/docs/page.md": b"# Public page\n\nThe harbour opens at six.\n",
        "/secret.md": b"# Internal\n\nThe vault code is 4711.\n",
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/docs/away?to="):  # a redirect to the path in `to`
                self.send_response(302)
                self.send_header("Location", unquote(self.path.split("=", 1)[1]))
                self.end_headers()
                return
            path = lenient_path(self.path)
            served.append(path)
            body = pages.get(path)
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
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_lenient_server_does_resolve_every_escape_outside_docs() -> None:
    # Otherwise the end-to-end test below would prove nothing for that spelling.
    for path in ESCAPES:
        assert not lenient_path(path).startswith("/docs/"), path
    for path in INSIDE:
        assert lenient_path(path) == "/docs/page.md", path


@pytest.mark.parametrize("path", ESCAPES)
def test_every_escape_is_refused(path: str) -> None:
    policy = ReadPolicy.of(urls=["http://127.0.0.1:8080/docs/"])
    with pytest.raises(ValueError, match="outside the URL prefixes"):
        policy.check_url("http://127.0.0.1:8080" + path)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080@127.0.0.1:8080/secret.md",  # user info
        "http://x@127.0.0.1:8080/docs/page.md",
        "http://127.0.0.1:8080\\@127.0.0.1:8080/docs/page.md",
        "http://127.0.0.1:8080%2f@127.0.0.1:8080/docs/page.md",
        "http://127.0.0.1:8081/docs/page.md",  # another port
        "https://127.0.0.1:8080/docs/page.md",  # another scheme
        "http://127.0.0.2:8080/docs/page.md",  # another host
        "http://127.0.0.1:8080/docsx/page.md",  # a longer name, not a folder below
        "http://127.0.0.1:8080/docs",  # the folder itself without its slash
        "http://%31%32%37.0.0.1:8080/docs/page.md",
        "http://127.0.0.1:99999/docs/page.md",
        "http://127.0.0.1:8080/docs/%zz",
        "ftp://127.0.0.1:8080/docs/page.md",
        "file:///docs/page.md",
    ],
)
def test_other_origins_and_malformed_urls_are_refused(url: str) -> None:
    policy = ReadPolicy.of(urls=["http://127.0.0.1:8080/docs/"])
    with pytest.raises(ValueError, match="outside the URL prefixes"):
        policy.check_url(url)


@pytest.mark.parametrize(
    ("prefix", "url", "normal"),
    [
        ("http://docs.example.com/guide/", "http://docs.example.com:80/guide/a", None),
        ("https://docs.example.com:443/guide/", "https://docs.example.com/guide/a", None),
        ("http://docs.example.com/guide/", "HTTP://DOCS.Example.COM/guide/a", None),
        ("http://docs.example.com/guide/", "http://docs.example.com./guide/a", None),
        ("http://docs.example.com/guide/", "http://docs\uff0eexample\uff0ecom/guide/a", None),
        ("https://bücher.example/docs/", "https://xn--bcher-kva.example/docs/a", None),
        ("https://xn--bcher-kva.example/docs/", "https://BÜCHER.example/docs/a", None),
        ("http://127.0.0.1/docs/", "http://127.1/docs/a", "http://127.0.0.1/docs/a"),
        ("http://127.0.0.1/docs/", "http://0x7f.0.0.1/docs/a", "http://127.0.0.1/docs/a"),
        ("http://127.0.0.1/docs/", "http://2130706433/docs/a", "http://127.0.0.1/docs/a"),
        ("http://[::1]:8080/docs/", "http://[0:0:0:0:0:0:0:1]:8080/docs/a", None),
        ("http://h/docs/", "http://h/docs/a%20b/caf%C3%A9.md?q=%2e%2e", None),
        ("http://h/docs", "http://h/docs", None),
    ],
)
def test_equivalent_spellings_are_allowed(prefix: str, url: str, normal: str | None) -> None:
    policy = ReadPolicy.of(urls=[prefix])
    got = policy.check_url(url)
    if normal is not None:
        assert got.url == normal
    assert normalize_url(got.url) == got  # the normal form is stable


def test_the_normal_form_is_what_gets_fetched() -> None:
    normal = normalize_url("HTTP://Example.COM:80/docs/./a/../%70age%20one.md?x=1#frag")
    assert normal.url == "http://example.com/docs/page%20one.md?x=1"
    assert normal.path == "/docs/page one.md"


@pytest.mark.parametrize(
    "prefix",
    ["ftp://h/docs/", "http://user@h/docs/", "http://h/docs/%252e/", "http:///docs/", "docs/"],
)
def test_unusable_prefixes_are_a_configuration_error(prefix: str) -> None:
    with pytest.raises(ServeConfigError, match="--allow-url"):
        ReadPolicy.of(urls=[prefix])
    with pytest.raises(UnsafeURL):
        normalize_url(prefix)


@pytest.mark.anyio
async def test_no_spelling_reaches_outside_the_grant_through_rag_ingest(
    tmp_path: Path, lenient_web: tuple[str, list[str]]
) -> None:
    from q3agent import Agent
    from q3agent.mcp_server import ServedAgent
    from q3agent.rag import Ingestor, RagStore, Retriever
    from q3agent.testing.runtimes import ScriptedRuntime

    web, served = lenient_web
    store = RagStore.ephemeral()
    policy = ReadPolicy.of(urls=[f"{web}/docs/"])
    agent = Agent(runtime=ScriptedRuntime([]))
    served_agent = ServedAgent(
        agent, retriever=Retriever(store), ingestor=Ingestor(store), read_policy=policy
    )
    escapes = [web + path for path in ESCAPES]
    plain = [p for p in ESCAPES if p.isascii() and p.isprintable() and not set(p) & set("\\#")]
    redirects = [f"{web}/docs/away?to={quote(path, safe='')}" for path in plain]
    try:
        async with Client(build_mcp_server(served_agent, lifespan_close=False)) as client:
            result = await client.call_tool(
                "rag_ingest", {"sources": escapes + redirects + [web + p for p in INSIDE]}
            )
            assert not result.is_error, result.content
            report = result.structured_content
            assert report is not None
            assert report["added"] == [f"{web}/docs/page.md"]
            assert len(report["unchanged"]) == len(INSIDE) - 1
            failed = "\n".join(report["failed"])
            for url in escapes:
                assert url in failed, url
            for url in redirects:  # each redirect refused (or, resolved by httpx, a 404)
                entry = next((f for f in report["failed"] if f.startswith(url + ":")), url)
                assert "outside the URL prefixes" in entry or "/docs/secret.md" in entry, entry
            hits = await client.call_tool("rag_search", {"query": "vault code", "k": 10})
            found = json.dumps(hits.structured_content)
            assert "4711" not in found and "harbour" in found
        assert "/secret.md" not in served
        assert served  # the allowed spellings were fetched
        assert set(served) <= {"/docs/page.md", "/docs/secret.md"}  # both inside /docs/
    finally:
        for close in served_agent.closers:
            close()
        store.close()
