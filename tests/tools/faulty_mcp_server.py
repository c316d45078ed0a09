"""A hand-written MCP stdio server (raw JSON-RPC, no SDK) that misbehaves on request.

Run as ``python faulty_mcp_server.py [MODE]``. MODE ``exit`` exits at once with a message on
stderr; ``mute`` reads requests and never answers; anything else serves these tools:

* ``echo(text)``: the text back.
* ``bad_bytes()``: a result whose text contains bytes that are not UTF-8.
* ``junk()``: prints lines that are not JSON-RPC to stdout, then answers.
* ``hang()``: blocks the whole server (it stops reading stdin).
* ``quit()``: answers, then exits.
* ``pid()``: the server's process id.
* ``progress()``: three progress notifications (when asked for), then an answer.
"""

from __future__ import annotations

import json
import os
import sys
import time

out = sys.stdout.buffer

TOOLS = [
    {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": props, "required": list(props)},
    }
    for name, description, props in [
        ("echo", "Return the text.", {"text": {"type": "string"}}),
        ("bad_bytes", "Answer with invalid UTF-8.", {}),
        ("junk", "Print junk to stdout, then answer.", {}),
        ("hang", "Never answer.", {}),
        ("quit", "Answer, then exit.", {}),
        ("pid", "The process id.", {}),
        ("progress", "Report progress, then answer.", {}),
    ]
]


def send(message: dict[str, object], raw: bytes | None = None) -> None:
    data = json.dumps(message).encode()
    if raw is not None:
        data = data.replace(b"@RAW@", raw)
    out.write(data + b"\n")
    out.flush()


def text_result(request_id: object, text: str) -> None:
    send(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"content": [{"type": "text", "text": text}]},
        }
    )


def call(request_id: object, params: dict[str, object]) -> None:
    name = params.get("name")
    args = params.get("arguments") or {}
    assert isinstance(args, dict)
    if name == "echo":
        text_result(request_id, str(args.get("text", "")))
    elif name == "bad_bytes":
        result = {"content": [{"type": "text", "text": "before @RAW@ after"}]}
        send({"jsonrpc": "2.0", "id": request_id, "result": result}, raw=b"\xff\xfe\xc3")
    elif name == "junk":
        for i in range(3):
            out.write(f"debug: junk line {i} that is not JSON-RPC\n".encode())
        out.flush()
        text_result(request_id, "after the junk")
    elif name == "hang":
        time.sleep(3600)
    elif name == "quit":
        text_result(request_id, "bye")
        sys.exit(0)
    elif name == "pid":
        text_result(request_id, str(os.getpid()))
    elif name == "progress":
        meta = params.get("_meta") or {}
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is not None:
            for step in (1, 2, 3):
                send(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {
                            "progressToken": token,
                            "progress": step,
                            "total": 3,
                            "message": f"step {step} of 3",
                        },
                    }
                )
        text_result(request_id, "progress done" if token is not None else "no token")
    else:
        send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": -32602, "message": f"Unknown tool: {name}"},
            }
        )


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "exit":
        print("faulty: cannot start, config file missing", file=sys.stderr, flush=True)
        sys.exit(1)
    for line in sys.stdin.buffer:
        if mode == "mute" or not line.strip():
            continue
        message = json.loads(line)
        method = message.get("method")
        request_id = message.get("id")
        if request_id is None:
            continue  # a notification
        if method == "initialize":
            version = message["params"].get("protocolVersion", "2025-06-18")
            result = {
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "faulty", "version": "1.0"},
            }
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            call(request_id, message.get("params") or {})
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})
        else:
            send(
                {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "error": {"code": -32601, "message": f"Method not found: {method}"},
                }
            )


if __name__ == "__main__":
    main()
