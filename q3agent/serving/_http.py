"""HTTP plumbing shared by the server runtimes: retries with backoff, SSE reading, errors.

Both :class:`~q3agent.serving.sglang_runtime.RemoteSGLangRuntime` and
:class:`~q3agent.serving.openai_runtime.OpenAICompatibleRuntime` post JSON to a server that may
be starting up, overloaded (429) or briefly failing (5xx). :class:`HTTPCaller`'s
``post_json`` and ``open_stream`` retry those cases with exponential backoff and jitter, honour
``Retry-After``, and turn what is left into errors that say what to do next.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from q3agent.serving.base import RuntimeBase, RuntimeError_, RuntimeUnavailableError

if TYPE_CHECKING:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

logger = logging.getLogger("q3agent.serving.http")

Sleep = Callable[[float], Awaitable[None]]


class RuntimeHTTPError(RuntimeError_):
    """The server answered with an error status (after retries, for retryable statuses)."""

    def __init__(self, message: str, *, status_code: int, body: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class RuntimeTimeoutError(RuntimeError_):
    """The server accepted the request but did not answer within the read timeout."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a server runtime retries a failed request.

    Retried: connection failures (refused, reset, connect timeout) and the statuses in
    ``retry_statuses``; a failed TLS handshake (``https://`` against a plain-HTTP port) or a
    host name that does not resolve fails at once, since a retry fails the same way. The delay
    before retry ``n`` (0-based) is
    ``min(max_backoff, initial_backoff * 2**n)`` stretched by up to ``jitter`` (a fraction),
    unless the server sent ``Retry-After``: then that many seconds (capped at
    ``max_retry_after``). A read timeout is not retried: the server may still be generating,
    and a second copy of a long request doubles its load.
    """

    max_retries: int = 4
    initial_backoff: float = 0.5
    max_backoff: float = 20.0
    jitter: float = 0.25
    max_retry_after: float = 120.0
    retry_statuses: frozenset[int] = field(
        default_factory=lambda: frozenset({408, 429, 500, 502, 503, 504})
    )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based) without ``Retry-After``."""
        base = min(self.max_backoff, self.initial_backoff * (2.0**attempt))
        return base * (1.0 + self.jitter * random.random())


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (delta-seconds or an HTTP date) into seconds, or ``None``."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _connection_error(exc: Exception) -> bool:
    return isinstance(
        exc,
        httpx.ConnectError
        | httpx.ConnectTimeout
        | httpx.PoolTimeout
        | httpx.RemoteProtocolError
        | httpx.ReadError
        | httpx.WriteError,
    )


def _permanent_connection_hint(exc: BaseException, url: str) -> str | None:
    """What to do about a connection failure that retrying cannot fix, else ``None``.

    A TLS handshake that fails (``https://`` against a plain-HTTP port, a certificate the
    client does not trust) and a host name that does not resolve fail the same way every time;
    refused or reset connections may be a server that is still starting, and are retried.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "the server's TLS certificate is not trusted; fix the certificate or the URL"
        if isinstance(cause, ssl.SSLError):
            if url.startswith("https://"):
                return (
                    "the TLS handshake failed, so the server likely speaks plain HTTP: "
                    "use http:// instead of https:// in --base-url (base_url=...)"
                )
            return "the TLS handshake failed; check the URL's scheme and port"
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve; check the host in --base-url (base_url=...)"
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    if "ssl" in text or "tls" in text:
        return "the TLS handshake failed; check the URL's scheme (http:// or https://) and port"
    return None


def _body_snippet(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


class _Attempts:
    """Counts attempts and sleeps between them according to a :class:`RetryPolicy`."""

    def __init__(self, policy: RetryPolicy, url: str, server: str, sleep: Sleep) -> None:
        self.policy = policy
        self.url = url
        self.server = server
        self.sleep = sleep
        self.attempt = 0

    async def after_connection_error(self, exc: Exception) -> None:
        hint = _permanent_connection_hint(exc, self.url)
        if hint is not None:
            raise RuntimeUnavailableError(
                f"Could not connect to the {self.server} at {self.url}: {hint} "
                f"({type(exc).__name__}: {exc}); not retried, as it fails the same way each time."
            ) from exc
        if self.attempt >= self.policy.max_retries:
            raise RuntimeUnavailableError(
                f"Could not reach the {self.server} at {self.url} after "
                f"{self.attempt + 1} attempts ({type(exc).__name__}: {exc}). Check that the "
                "server is running and the URL and port are right; a server that is still "
                "loading weights answers once it is ready."
            ) from exc
        delay = self.policy.backoff(self.attempt)
        logger.warning(
            "%s at %s unreachable (%s); retry %d/%d in %.2f s",
            self.server,
            self.url,
            type(exc).__name__,
            self.attempt + 1,
            self.policy.max_retries,
            delay,
        )
        self.attempt += 1
        await self.sleep(delay)

    async def after_status(self, response: httpx.Response, body: str) -> None:
        status = response.status_code
        if status not in self.policy.retry_statuses or self.attempt >= self.policy.max_retries:
            raise _status_error(self.server, self.url, status, body, self.attempt + 1)
        hinted = retry_after_seconds(response.headers)
        if hinted is not None:
            delay = min(hinted, self.policy.max_retry_after)
            reason = "Retry-After"
        else:
            delay = self.policy.backoff(self.attempt)
            reason = "backoff"
        logger.warning(
            "%s at %s answered %d; retry %d/%d in %.2f s (%s)",
            self.server,
            self.url,
            status,
            self.attempt + 1,
            self.policy.max_retries,
            delay,
            reason,
        )
        self.attempt += 1
        await self.sleep(delay)


def _status_error(server: str, url: str, status: int, body: str, attempts: int) -> RuntimeHTTPError:
    snippet = _body_snippet(body)
    if status in (401, 403):
        hint = "Pass the server's API key (--api-key / Q3AGENT_API_KEY, api_key=...) or check it."
    elif status == 404 and "model" in body.lower():
        hint = (
            "The server does not serve that model name: pass the name it lists with "
            "--served-model (Q3AGENT_SERVED_MODEL), keeping --model for the registry model."
        )
    elif status == 404:
        hint = "Check the base URL: the endpoint does not exist on this server."
    elif status == 429:
        hint = "The server is overloaded; lower the concurrency or raise RetryPolicy.max_retries."
    elif status >= 500:
        hint = "The server failed; its log says why."
    else:
        hint = "The server rejected the request; its message says which field."
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    return RuntimeHTTPError(
        f"The {server} at {url} answered HTTP {status}{tried}: {snippet or '(empty body)'}. {hint}",
        status_code=status,
        body=body,
    )


def _timeout_error(server: str, url: str, exc: Exception, timeout: float | None) -> Exception:
    limit = f" within {timeout:g} s" if timeout else ""
    return RuntimeTimeoutError(
        f"The {server} at {url} did not answer{limit} ({type(exc).__name__}). Long generations "
        "need a larger timeout (http=HTTPOptions(timeout=...)), or stream the request."
    )


def _read_timeout(client: httpx.AsyncClient) -> float | None:
    return client.timeout.read


@dataclass(frozen=True, slots=True)
class HTTPCaller:
    """One runtime's way to its server: the client, the retry policy, what errors call the
    server, and the sleep between retries (a fake one in tests)."""

    client: httpx.AsyncClient
    policy: RetryPolicy
    server: str
    sleep: Sleep = anyio.sleep

    async def post_json(self, url: str, payload: Mapping[str, Any]) -> Any:
        """POST ``payload`` as JSON and return the decoded JSON reply, retrying per the policy."""
        client, server = self.client, self.server
        attempts = _Attempts(self.policy, url, server, self.sleep)
        while True:
            try:
                response = await client.post(url, json=payload)
            except httpx.ReadTimeout as exc:
                raise _timeout_error(server, url, exc, _read_timeout(client)) from exc
            except httpx.WriteTimeout as exc:
                raise _timeout_error(server, url, exc, client.timeout.write) from exc
            except httpx.TransportError as exc:
                if not _connection_error(exc):
                    raise
                await attempts.after_connection_error(exc)
                continue
            if response.status_code >= 400:
                await attempts.after_status(response, response.text)
                continue
            try:
                return response.json()
            except json.JSONDecodeError as exc:
                raise RuntimeHTTPError(
                    f"The {server} at {url} answered with something that is not JSON: "
                    f"{_body_snippet(response.text)!r}. Is the URL pointing at the right server?",
                    status_code=response.status_code,
                    body=response.text,
                ) from exc

    @asynccontextmanager
    async def open_stream(
        self, url: str, payload: Mapping[str, Any]
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """POST ``payload`` and yield an iterator over the server-sent events' JSON payloads.

        Retries happen only before the first byte of a successful response; once events flow, an
        error ends the stream (replaying would duplicate text the caller has already shown). The
        ``data: [DONE]`` sentinel ends the iteration.
        """
        client, server = self.client, self.server
        attempts = _Attempts(self.policy, url, server, self.sleep)
        while True:
            started = False
            try:
                async with client.stream("POST", url, json=payload) as response:
                    if response.status_code >= 400:
                        body = (await response.aread()).decode("utf-8", errors="replace")
                        await attempts.after_status(response, body)
                        continue
                    started = True
                    yield _sse_events(response, server, url, _read_timeout(client))
                    return
            except httpx.ReadTimeout as exc:
                if started:
                    raise
                raise _timeout_error(server, url, exc, _read_timeout(client)) from exc
            except httpx.TransportError as exc:
                if started or not _connection_error(exc):
                    raise
                await attempts.after_connection_error(exc)


async def _sse_events(
    response: httpx.Response, server: str, url: str, read_limit: float | None
) -> AsyncIterator[Any]:
    data_lines: list[str] = []
    try:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data_lines.append(line[5:].lstrip(" "))
                continue
            if line.strip() or not data_lines:
                continue  # comments, event/id fields, keep-alive blank lines
            data = "\n".join(data_lines)
            data_lines = []
            if data.strip() == "[DONE]":
                return
            yield _decode_event(data, server, url)
        if data_lines:
            data = "\n".join(data_lines)
            if data.strip() != "[DONE]":
                yield _decode_event(data, server, url)
    except httpx.ReadTimeout as exc:
        raise _timeout_error(server, url, exc, read_limit) from exc
    except httpx.TransportError as exc:
        raise RuntimeUnavailableError(
            f"The connection to the {server} at {url} broke mid-stream "
            f"({type(exc).__name__}: {exc}). The partial completion is lost; retry the request."
        ) from exc


def _decode_event(data: str, server: str, url: str) -> Any:
    try:
        event = json.loads(data)
    except json.JSONDecodeError as exc:
        raise RuntimeHTTPError(
            f"The {server} at {url} streamed an event that is not JSON: {_body_snippet(data)!r}",
            status_code=200,
            body=data,
        ) from exc
    if isinstance(event, dict) and "error" in event and len(event) <= 2:
        raise RuntimeHTTPError(
            f"The {server} at {url} reported an error mid-stream: {event['error']}",
            status_code=200,
            body=data,
        )
    return event


async def get_context_length(
    client: httpx.AsyncClient, url: str, keys: tuple[str, ...], *, model: str | None = None
) -> int | None:
    """The first positive integer under one of ``keys`` in the JSON at ``url`` (GET), else None.

    Looks at the top level and at each entry of a ``data`` list (an OpenAI ``/v1/models``
    answer; the entry whose ``id`` is ``model`` first). Any failure (no such endpoint, not
    JSON, an old server) means "unknown".
    """
    try:
        response = await client.get(url)
        if response.status_code != 200:
            return None
        body = response.json()
    except (httpx.HTTPError, json.JSONDecodeError, ValueError):
        return None
    candidates: list[Any] = [body]
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        entries = [e for e in body["data"] if isinstance(e, dict)]
        candidates += sorted(entries, key=lambda e: e.get("id") != model)
    for entry in candidates:
        if not isinstance(entry, dict):
            continue
        for key in keys:
            value = entry.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def auth_headers(api_key: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Request headers: ``Authorization: Bearer`` when an API key is given, plus ``extra``."""
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if extra:
        headers.update(extra)
    return headers


@dataclass(frozen=True, slots=True)
class HTTPOptions:
    """How a server runtime talks HTTP: timeouts, retries, extra headers.

    ``timeout`` is the read timeout in seconds (a long generation must fit in it),
    ``connect_timeout`` the time to open a connection; ``retry`` says what is retried and how
    patiently; ``headers`` go with every request (the API key has its own parameter);
    ``sleep`` is what backoff waits with (tests pass a recorder).
    """

    timeout: float = 600.0
    connect_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] | None = None
    sleep: Sleep = anyio.sleep


ContextSource = tuple[str, tuple[str, ...]]
"""A path on the server (after ``base_url``) and the JSON keys that may hold the context."""


class HTTPRuntimeBase(RuntimeBase):
    """What the server runtimes share: the HTTP client, the tokenizer made on first use, and
    the context length given or asked of the server once (:meth:`fetch_context_length`)."""

    base_url: str
    _context_sources: Sequence[ContextSource] = ()
    """Where :meth:`fetch_context_length` looks, in order (set by each subclass)."""
    _served_model: str | None = None
    """The model id to prefer among a ``/v1/models`` answer's entries."""
    _server_label = "server"
    """What errors and retry warnings call the server ("SGLang server", ...)."""

    def __init__(
        self,
        *,
        api_key: str | None,
        http: HTTPOptions | None,
        tokenizer: Qwen3Tokenizer | str | os.PathLike[str] | None,
        context_length: int | None,
    ) -> None:
        http = http or HTTPOptions()
        self.http = http
        self.retry = http.retry
        self._sleep = http.sleep
        self._client = httpx.AsyncClient(
            headers=auth_headers(api_key, http.headers),
            timeout=httpx.Timeout(http.timeout, connect=http.connect_timeout),
        )
        self._tokenizer_source = tokenizer
        self._context_length = context_length
        self._context_checked = context_length is not None

    def _load_tokenizer(self) -> Qwen3Tokenizer:
        from q3agent.qwen3.tokenizer import Qwen3Tokenizer

        return Qwen3Tokenizer.resolve(self._tokenizer_source)

    @property
    def context_length(self) -> int | None:
        """The server's context length (given, or read on the first request; None if unknown)."""
        return self._context_length

    async def fetch_context_length(self) -> int | None:
        """Ask the server for its context length once, at each of the runtime's sources in turn.

        A server that answers none leaves it unknown: requests then go unclamped.
        """
        if self._context_checked:
            return self._context_length
        self._context_checked = True
        for path, keys in self._context_sources:
            url = f"{self.base_url}{path}"
            found = await get_context_length(self._client, url, keys, model=self._served_model)
            if found is not None:
                self._context_length = found
                break
        return self._context_length

    @property
    def _caller(self) -> HTTPCaller:
        """This runtime's client, retry policy (settable: ``retry``) and server label."""
        return HTTPCaller(self._client, self.retry, self._server_label, self._sleep)

    async def aclose(self) -> None:
        """Close the HTTP client (the server keeps running)."""
        await self._client.aclose()
