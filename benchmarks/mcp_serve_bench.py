"""serve-mcp under a 3 MiB ``ask``: how long another client's ``initialize`` waits, and memory.

Starts ``q3agent serve-mcp --transport streamable-http`` (scripted model) as a subprocess,
sends a 3 MiB task (under the 4 MiB body limit), and 0.5 s later opens a second client; prints
that client's connect time, the ask's wall time and outcome, and the server's resident memory
before, at its peak and 3 s after. Works on older checkouts too:
``PYTHONPATH=/path/to/old python benchmarks/mcp_serve_bench.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(script: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["serve-mcp", "--transport", "streamable-http", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "q3agent.cli.mcp", *args, "--runtime-script", script],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("serve-mcp did not start")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder, "script.jsonl")
        script.write_text('"Done."\n' * 4)  # noqa: ASYNC240 - setup before anything runs
        proc, url = start_server(str(script))
        try:
            async with Client(url) as warm:  # loads the tokenizer and runtime once
                await warm.call_tool("ask", {"task": "warm up"})
            before = rss_mb(proc.pid)
            task = "lorem ipsum dolor sit amet " * 116_509  # 3 MiB
            outcome: dict[str, float | str] = {}

            async def big_ask() -> None:
                start = time.perf_counter()
                async with Client(url, read_timeout_seconds=300) as client:
                    result = await client.call_tool("ask", {"task": task})
                outcome["ask_s"] = time.perf_counter() - start
                text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
                outcome["ask"] = ("error: " if result.is_error else "ok: ") + text[:90]

            async def second_client() -> None:
                await anyio.sleep(0.5)
                start = time.perf_counter()
                async with Client(url) as client:
                    await client.list_tools()
                outcome["init_s"] = time.perf_counter() - start

            async with anyio.create_task_group() as tg:
                tg.start_soon(big_ask)
                tg.start_soon(second_client)
            peak = hwm_mb(proc.pid)
            await anyio.sleep(3)
            after = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    print(f"3 MiB ask: {outcome['ask_s']:.2f} s, {outcome['ask']}")
    print(f"second client's initialize + tools/list meanwhile: {outcome['init_s']:.2f} s")
    print(f"server memory: {before:.0f} MB before, peak {peak:.0f} MB, {after:.0f} MB 3 s after")


if __name__ == "__main__":
    anyio.run(main)
