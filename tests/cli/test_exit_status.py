"""Every command against the exit-status table (q3agent.cli.exits), through the real CLI.

0: done; 1: a failure while running; 2: a mistake in the command or set-up (nothing run);
130: interrupted. Each failure is one ``error:`` line that names what to change.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from q3agent.cli import build_parser
from q3agent.cli.exits import FAILURE, INTERRUPTED, OK, USAGE
from tests.cli.conftest import CONSOLE_SCRIPT, REPO, Cli, clean_env

DOCS = REPO / "tests" / "research" / "fixtures" / "docs"
ANSWER = json.dumps("The answer is 4.") + "\n"


def one_error_line(stderr: str) -> str:
    """The single ``error:`` line of a failed command (no traceback, nothing else)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "answer.jsonl"
    path.write_text(ANSWER)
    return path


# (arguments, expected status, words the error line must hold); {script} and {tmp} are filled in
CASES: list[tuple[list[str], int, str]] = [
    (["run", "What is 2+2?", "--script", "{script}"], OK, ""),
    (["run", "", "--script", "{script}"], USAGE, 'q3agent run "TASK"'),
    (["run", "   ", "--script", "{script}"], USAGE, "the task is empty"),
    (["run", "hi", "--base-url", "localhost:8000"], USAGE, "--base-url 'localhost:8000'"),
    (["run", "hi", "--base-url", "http://127.0.0.1:99999"], USAGE, "--base-url"),
    (["run", "hi", "--script", "{script}", "--tools", "os:path"], USAGE, "--tools os:path is a"),
    (["run", "hi", "--script", "{tmp}/missing.jsonl"], USAGE, "cannot read the script"),
    (["run", "hi", "--script", "{script}", "--trace", "{tmp}"], USAGE, "--trace"),
    (["run", "hi", "--script", "{script}", "--trace", "/sys/t.jsonl"], USAGE, "cannot write"),
    (["run", "hi", "--model", "Qwen9-1B"], USAGE, "Qwen9-1B"),
    (["models"], OK, ""),
    (["mcp", "call", "time.now", "{{not json", "--stdio", "true"], USAGE, "not JSON"),
    (["rag", "search", "", "--store", "{tmp}"], USAGE, "the query is empty"),
    (["rag", "search", "E-4012", "--store", "{tmp}/kb"], USAGE, "no RAG store"),
    (["rag", "ingest", "{tmp}/nonexistent", "--store", "{tmp}/kb"], USAGE, "no such file"),
    (["research", "", "--docs", str(DOCS), "--runtime", "oracle"], USAGE, "question is empty"),
    (["research", "q?", "--docs", "{tmp}/nope", "--runtime", "oracle"], USAGE, "--docs"),
    (["research", "q?", "--docs", str(DOCS), "--runtime", "oracle", "--out", "{tmp}"], USAGE,
     "is a folder"),
    (["research", "q?", "--docs", str(DOCS), "--base-url", "http//x"], USAGE, "--base-url"),
    (["eval", "bfcl", "--runtime", "oracle", "--categories", "simpel"], USAGE, "simpel"),
    (["eval", "bfcl", "--runtime", "oracle", "--out", "{script}"], USAGE, "--out"),
    (["eval", "bfcl", "--runtime", "oracle", "--limit", "1", "--categories", "simple",
      "--out", "{tmp}/bfcl"], OK, ""),
    (["serve-mcp", "--rag-store", "{tmp}/no-store"], USAGE, "no RAG store"),
    (["serve-mcp", "--transport", "streamable-http", "--host", "0.0.0.0"], USAGE, "--token"),
    (["frobnicate"], USAGE, ""),  # argparse's own usage error
]  # fmt: skip


@pytest.mark.parametrize(("argv", "status", "words"), CASES, ids=lambda v: str(v)[:60])
def test_exit_status(
    q3agent: Cli, tmp_path: Path, script: Path, argv: list[str], status: int, words: str
) -> None:
    args = [a.format(script=script, tmp=tmp_path) for a in argv]
    done = q3agent(*args, cwd=tmp_path)
    assert done.returncode == status, done.stderr
    if status == USAGE and argv[0] != "frobnicate":
        assert words in one_error_line(done.stderr)
        assert "loading the embedding model" not in done.stderr  # refused before slow work
        assert "(run with -v" not in done.stderr  # a set-up mistake needs no traceback
    if argv[0] == "rag" and argv[1] == "ingest":
        assert not (tmp_path / "kb").exists()  # no empty store left behind


def test_a_failure_while_running_is_1(q3agent: Cli, tmp_path: Path) -> None:
    script = tmp_path / "one.jsonl"
    script.write_text(json.dumps("A brief.") + "\n")  # the research plan finds it used up
    done = q3agent("research", "Compare them?", "--docs", str(DOCS), "--script", str(script))
    assert done.returncode == FAILURE
    assert "(run with -v for the traceback)" in done.stderr or "error:" in done.stderr


def test_serve_mcp_on_a_busy_port_is_one_line_and_2(
    q3agent: Cli, tmp_path: Path, script: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = q3agent(
            "serve-mcp", "--transport", "streamable-http", "--port", str(port),
            "--script", str(script), cwd=tmp_path, timeout=120,
        )  # fmt: skip
    assert done.returncode == USAGE, done.stderr
    assert str(port) in one_error_line(done.stderr)


TOOLS = (
    "import pathlib\n\nimport anyio\n\n\n"
    "async def wait_here(seconds: int) -> str:\n"
    '    """Wait a while.\n\n    Args:\n        seconds: How long.\n    """\n'
    "    if seconds:\n"
    "        pathlib.Path('tool-started').touch()\n"
    "    await anyio.sleep(seconds)\n"
    "    return 'waited'\n"
)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path.name} never appeared: {proc.communicate()}")
        time.sleep(0.05)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` in a non-interactive shell


@pytest.mark.parametrize(
    ("sig", "background"),
    [
        (signal.SIGTERM, False),
        (signal.SIGINT, False),
        (signal.SIGTERM, True),
        (signal.SIGINT, True),
    ],
    ids=["SIGTERM", "SIGINT", "SIGTERM-sigint-ignored", "SIGINT-sigint-ignored"],
)
def test_an_interrupted_run_writes_its_trace_and_exits_130(
    tmp_path: Path, sig: signal.Signals, background: bool
) -> None:
    (tmp_path / "slowtools.py").write_text(TOOLS)
    steps = [
        "<tool_call>\n" + json.dumps({"name": "wait_here", "arguments": {"seconds": s}})
        + "\n</tool_call>"
        for s in (0, 300)  # the first step finishes; the second is interrupted in its tool
    ]  # fmt: skip
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps) + ANSWER)
    bin_script = tmp_path / "q3agent"
    bin_script.write_text(CONSOLE_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(bin_script), "run", "Wait.", "--script", "s.jsonl",
         "--tools", "slowtools:wait_here", "--trace", "trace.jsonl", "--thinking", "off"],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ignore_sigint if background else None,
    )  # fmt: skip
    _wait_for(tmp_path / "tool-started", proc)
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED, (stdout, stderr)
    assert "interrupted (1 steps finished); the steps so far are in trace.jsonl" in stderr
    records = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert records[-1]["type"] == "run" and records[-1]["status"] == "cancelled"
    assert any(r["type"] == "step" for r in records)


def leaf_commands() -> list[list[str]]:
    """Every command's words (``run``, ``rag ingest``, ``eval bfcl``…)."""
    import argparse

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> list[list[str]]:
        found: list[list[str]] = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found.extend(walk(child, [*words, name]))
                return found
        return [words]

    return walk(build_parser(), [])


@pytest.mark.parametrize("words", leaf_commands(), ids=" ".join)
def test_help_of_every_command(words: list[str]) -> None:
    """Every flag has help text, and help text has no reStructuredText markup."""
    import argparse
    import contextlib
    import io

    parser = build_parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    undocumented = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if a.help is None and not isinstance(a, argparse._HelpAction)
    ]
    assert not undocumented, f"q3agent {' '.join(words)}: no help for {undocumented}"
    silent_defaults = [
        "/".join(a.option_strings)
        for a in parser._actions
        if a.option_strings
        and a.default not in (None, False, [], argparse.SUPPRESS)
        and a.help not in (None, argparse.SUPPRESS)
        and "default" not in a.help
        and f"({a.default})" not in a.help
    ]
    assert not silent_defaults, f"q3agent {' '.join(words)}: say the default of {silent_defaults}"
    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*words, "--help"])
    assert exited.value.code == 0
    assert "``" not in text.getvalue() and ":class:" not in text.getvalue()
