"""The peer-neutral forcing proxy of benchmarks/frameworks_bench.py.

It sits between every client and the real engine. For each generation request it reads the
conversation the client sent (chat ``messages``, or a completions prompt as ids or text),
takes its last turn (everything after the last assistant turn), looks up the scripted reply
for the ``[[marker]]`` found there (:func:`frameworks_workloads.reply_for`) and adds to the
request the engine's own forcing constraint for that reply: on vLLM the scripted-token logits
processor's ``vllm_xargs`` (see :mod:`q3agent.testing.vllm_server`), on SGLang its
scripted-token ``custom_logit_processor`` with ``custom_params`` (see
:mod:`q3agent.testing.sglang_server`). Where the request makes the engine add its own
structured-output grammar (``tool_choice="required"`` or a named tool; on SGLang also a
``strict`` tool under ``tool_choice="auto"``), the reply is written in the shape that grammar
admits, as a constrained model would write it (:func:`frameworks_workloads.reply_for`): the
forced tokens then pass the engine's grammar instead of fighting it. Nothing else in the
request is touched: sampling, tools, ``tool_choice``, streaming and the chat template kwargs
all reach the engine as the client wrote them, and the engine's tokenizer, template,
reasoning and tool parsers and prefix cache stay in the path.

Clients get base URLs ``http://HOST:PORT/run/<label>/v1``; the proxy strips ``/run/<label>``
and logs every request under its label (path, body, whether it streamed) so the bench can
count requests and check what each client sent back.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from frameworks_workloads import reply_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.testing.vllm_server import script_body

ASSISTANT_HEADER = "<|im_start|>assistant"
MAX_TOKENS = 1024
"""Output cap the proxy puts on every request (the longest scripted reply is ~250 tokens)."""
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class Logged:
    """One generation request as the engine received it (after forcing)."""

    label: str
    path: str
    body: dict[str, Any]
    reply: str
    started: float
    stream: bool
    finished: float = 0.0
    """``time.monotonic()`` when the engine's reply (its last chunk, when streamed) came back."""


@dataclass
class ProxyLog:
    """Requests per label, appended from the proxy's event loop, read by the bench."""

    requests: dict[str, list[Logged]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, entry: Logged) -> None:
        with self.lock:
            self.requests[entry.label].append(entry)

    def take(self, label: str) -> list[Logged]:
        with self.lock:
            return self.requests.pop(label, [])


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return "" if content is None else str(content)


def chat_last_turn(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """The text after the last assistant message, and how many assistant messages precede it."""
    assistants = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    start = assistants[-1] + 1 if assistants else 0
    turn = "\n".join(_text(m.get("content")) for m in messages[start:])
    return turn, len(assistants)


def prompt_last_turn(text: str) -> tuple[str, int]:
    """Same for a rendered prompt: the turns between the last two assistant headers."""
    headers = text.count(ASSISTANT_HEADER)
    last = text.rfind(ASSISTANT_HEADER)
    if last < 0:
        return text, 0
    previous = text.rfind(ASSISTANT_HEADER, 0, last)
    if previous < 0:
        return text[:last], 0
    segment = text[previous:last]
    end = segment.find("<|im_end|>")
    return (segment[end:] if end >= 0 else segment), headers - 1


class ForcingProxy:
    """The Starlette app: forwards to ``engine_url`` with the scripted reply forced."""

    def __init__(self, engine_url: str, log: ProxyLog, *, engine: str = "vllm") -> None:
        self.engine_url = engine_url.rstrip("/")
        self.engine = engine
        self.log = log
        self.tokenizer = Qwen3Tokenizer.offline()
        self._ids: dict[str, list[int]] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(900.0), limits=httpx.Limits())
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    def reply_ids(self, reply: str) -> list[int]:
        if reply not in self._ids:
            self._ids[reply] = self.tokenizer.encode_trusted(reply)
        return self._ids[reply]

    def force(self, body: dict[str, Any], path: str) -> str:
        """Add the forcing constraint for the conversation in ``body``; return the reply."""
        if path.endswith("chat/completions"):
            turn, earlier = chat_last_turn(list(body.get("messages") or []))
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
                prompt = prompt[0]
            text = self.tokenizer.decode(prompt) if isinstance(prompt, list) else str(prompt)
            turn, earlier = prompt_last_turn(text)
        names = frozenset(
            str((t.get("function") or {}).get("name", ""))
            for t in body.get("tools") or []
            if isinstance(t, dict)
        )
        choice = body.get("tool_choice")
        required = bool(names) and (choice == "required" or isinstance(choice, dict))
        # SGLang puts its structural tag on tool_choice="auto" too when a tool is strict
        tagged = choice in (None, "auto") and any(
            isinstance(t, dict) and (t.get("function") or {}).get("strict")
            for t in body.get("tools") or []
        )
        reply = reply_for(turn, names, required=required, tagged=tagged, engine=self.engine)
        # a safety net for every client alike: no scripted reply is near this long
        for key in ("max_tokens", "max_completion_tokens"):
            if key in body and body[key] is not None:
                body[key] = min(int(body[key]), MAX_TOKENS)
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = MAX_TOKENS
        ids = self.reply_ids(reply)
        # the processor picks the turn by counting assistant headers in the prompt: put the
        # reply at that count and a few around it (a client may merge or split turns)
        turns: list[list[int]] = [[] for _ in range(max(0, earlier - 2))]
        turns += [ids] * (earlier + 4 - len(turns))
        if self.engine == "sglang":
            from q3agent.testing.sglang_server import script_params, scripted_processor_str

            body["custom_logit_processor"] = scripted_processor_str()
            body["custom_params"] = {**(body.get("custom_params") or {}), **script_params(turns)}
        else:
            extra = script_body(turns)["vllm_xargs"]
            body["vllm_xargs"] = {**(body.get("vllm_xargs") or {}), **extra}
        return reply

    async def handle(self, request: Request) -> Response:
        path = request.path_params["path"]
        label = "-"
        if path.startswith("run/"):
            _, label, path = path.split("/", 2)
        url = f"{self.engine_url}/{path}"
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP_HEADERS and k.lower() != "host"
        }
        raw = await request.body()
        generation = request.method == "POST" and path.endswith(("completions",))
        if not generation:
            upstream = await self.client.request(
                request.method, url, content=raw, headers=headers, params=request.query_params
            )
            return Response(
                upstream.content,
                status_code=upstream.status_code,
                headers={k: v for k, v in upstream.headers.items() if k not in _HOP_HEADERS},
            )
        body = json.loads(raw)
        reply = self.force(body, path)
        stream = bool(body.get("stream"))
        entry = Logged(label, path, body, reply, time.monotonic(), stream)
        self.log.add(entry)
        content = json.dumps(body).encode()
        headers["content-type"] = "application/json"
        if not stream:
            upstream = await self.client.post(url, content=content, headers=headers)
            entry.finished = time.monotonic()
            return Response(
                upstream.content,
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type", "application/json"),
            )
        req = self.client.build_request("POST", url, content=content, headers=headers)
        upstream = await self.client.send(req, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                entry.finished = time.monotonic()
                await upstream.aclose()

        return StreamingResponse(
            relay(),
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "text/event-stream"),
        )


def serve_in_thread(proxy: ForcingProxy, port: int) -> threading.Thread:
    """Run the proxy with uvicorn on 127.0.0.1:``port`` in a daemon thread; wait until it
    listens."""
    import uvicorn

    config = uvicorn.Config(proxy.app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the forcing proxy did not start on port {port}")
        time.sleep(0.05)
    return thread
