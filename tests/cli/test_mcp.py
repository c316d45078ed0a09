"""``q3agent serve-mcp`` says where it listens and whether a model is there to answer."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.cli.conftest import CONSOLE_SCRIPT, clean_env


def test_http_server_prints_its_url_once_listening_and_warns_without_a_model(
    tmp_path: Path,
) -> None:
    script = tmp_path / "q3agent"
    script.write_text(CONSOLE_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), "serve-mcp", "--transport", "streamable-http",
         "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("listening on"):
                break
        text = "".join(lines)
        assert "warning: no usable model" in text and "`ask` fails" in text, text
        assert "--base-url" in text
        url = lines[-1].split()[2]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp"), text
        # the line is printed once the socket accepts connections
        reply = httpx.get(url, headers={"accept": "text/event-stream"}, timeout=10)
        assert reply.status_code < 500
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_stdio_server_with_research_starts_without_a_model_and_says_so(tmp_path: Path) -> None:
    script = tmp_path / "q3agent"
    script.write_text(CONSOLE_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), "serve-mcp", "--research"],
        input="",  # the client hangs up at once
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "warning: no usable model" in done.stderr and "`research` fail" in done.stderr
    assert "serving MCP over stdio" in done.stderr and done.stdout == ""
