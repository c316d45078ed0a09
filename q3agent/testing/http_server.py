"""A scripted HTTP server on 127.0.0.1 for testing the runtimes' HTTP clients.

Script it with replies shaped the way the engines send them: :func:`vllm_completion_choice`
and :func:`sglang_generate_reply` keep a matched stop id in the ids and drop its text, as
vLLM's and SGLang's detokenizers do, so a client that trusted the engine's text would fail
here as it fails against the real server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer


def vllm_completion_choice(
    tok: Qwen3Tokenizer, generated: str, *, stop_id: int | None = None, finish: str = "stop"
) -> dict[str, Any]:
    """One ``/v1/completions`` choice as vLLM sends it with ``return_token_ids``.

    ``generated`` is what the model wrote before the stop. A ``stop`` finish appends the stop
    id to ``token_ids`` (``stop_id``, or ``<|im_end|>`` for an EOS stop, which vLLM reports as
    ``stop_reason=None``) but not to ``text``.
    """
    ids = tok.encode_trusted(generated)
    if finish == "stop":
        ids.append(tok.im_end_id if stop_id is None else stop_id)
    return {
        "index": 0,
        "text": generated,
        "token_ids": ids,
        "finish_reason": finish,
        "stop_reason": stop_id,
    }


def sglang_generate_reply(
    tok: Qwen3Tokenizer,
    generated: str,
    *,
    prompt_tokens: int,
    cached_tokens: int = 0,
    stop_id: int | None = None,
    finish: str = "stop",
) -> dict[str, Any]:
    """A ``/generate`` reply as SGLang sends it: ``output_ids`` with the matched stop id
    (``stop_id``, default ``<|im_end|>``), ``text`` without it, SGLang's ``meta_info``."""
    ids = tok.encode_trusted(generated)
    reason: dict[str, Any] = {"type": "length", "length": len(ids)}
    if finish == "stop":
        matched = tok.im_end_id if stop_id is None else stop_id
        ids.append(matched)
        reason = {"type": "stop", "matched": matched}
    meta = {
        "finish_reason": reason,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(ids),
        "cached_tokens": cached_tokens,
    }
    return {"text": generated, "output_ids": ids, "meta_info": meta}


class ScriptedHTTPServer:
    """A real HTTP server on 127.0.0.1 answering from a script and recording requests.

    For testing HTTP runtimes (and your own clients of OpenAI-compatible or SGLang servers)
    against a live socket. Queue replies in ``script`` before each request:
    ``("json", status, body, headers)``, ``("sse", [event, ...])`` (dicts are JSON-encoded,
    strings sent as they are, e.g. ``"[DONE]"``) or ``("sleep", seconds)``; each request's
    ``(path, headers, json body)`` lands in ``requests``. GET requests are answered from
    ``get_routes`` (path → JSON body; anything else is a 404, as on a server without that
    endpoint) and their paths recorded in ``gets``. Use it as a context manager.
    """

    def __init__(self, get_routes: dict[str, Any] | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.script: deque[Any] = deque()
        self.get_routes: dict[str, Any] = dict(get_routes or {})
        self.gets: list[str] = []
        app = Starlette(
            routes=[
                Route("/{path:path}", self._handle, methods=["POST"]),
                Route("/{path:path}", self._handle_get, methods=["GET"]),
            ]
        )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _handle_get(self, request: Request) -> Response:
        path = request.url.path
        self.gets.append(path)
        if path not in self.get_routes:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse(self.get_routes[path])

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, dict(request.headers), body))
        kind, *rest = self.script.popleft()
        if kind == "json":
            status, data, headers = rest
            return JSONResponse(data, status_code=status, headers=headers)
        if kind == "sleep":
            await asyncio.sleep(rest[0])
            return JSONResponse({})
        (events,) = rest

        async def sse() -> AsyncIterator[bytes]:
            for event in events:
                data = event if isinstance(event, str) else json.dumps(event)
                yield f"data: {data}\n\n".encode()

        return StreamingResponse(sse(), media_type="text/event-stream")

    def __enter__(self) -> ScriptedHTTPServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
