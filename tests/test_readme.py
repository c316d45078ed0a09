"""The README stays true: its Python blocks and shell commands run as a user would run them.

Blocks that need what a CPU test machine lacks (a Qwen3 model, a GPU, a running server, the
web) are marked in the README with ``<!-- docs-test: skip (reason) -->`` and reported as
skipped with that reason. The two set-up commands are run by CI itself.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\s*$")
MARKER = re.compile(r"<!--\s*(?P<what>[\w-]+)(?::\s*skip\s*\((?P<reason>[^)]*)\))?\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.lang}-line{self.line}"


def readme_blocks() -> list[Block]:
    """The README's ``python`` and ``bash`` blocks with the marker just above each."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened or not opened["lang"]:
            index += 1
            continue
        indent = len(opened["indent"])
        start = index
        index += 1
        body: list[str] = []
        while not lines[index].strip().startswith("```"):
            body.append(lines[index][indent:])
            index += 1
        index += 1
        previous = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = MARKER.search(previous)
        skip = None
        if marker and marker["what"] in ("main-command", "test-command"):
            skip = "a set-up command: CI runs it in a fresh clone"
        elif marker and marker["reason"]:
            skip = marker["reason"]
        if opened["lang"] in ("python", "bash"):
            blocks.append(Block(start + 1, opened["lang"], "\n".join(body) + "\n", skip))
    return blocks


def commands(script: str) -> list[str]:
    """Shell commands of a bash block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("Q3AGENT_")}
    bin_dir = str(Path(sys.executable).parent)  # the venv's q3agent and MCP servers
    env.update(
        HF_HUB_OFFLINE="1",
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        COLUMNS="120",
    )
    return env


BLOCKS = readme_blocks()


def test_the_readme_has_blocks_to_run() -> None:
    runnable = [b for b in BLOCKS if b.skip is None]
    assert {b.lang for b in runnable} == {"python", "bash"}
    assert len(runnable) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip:
        pytest.skip(f"README line {block.line}: {block.skip}")
    env = environment()
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the README's relative paths resolve
    if block.lang == "python":
        runs = [[sys.executable, "-c", block.code]]
    else:
        runs = [["bash", "-c", command] for command in commands(block.code)]
    for argv in runs:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
        )
        shown = argv[-1] if block.lang == "bash" else f"python block at line {block.line}"
        assert done.returncode == 0, f"{shown}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"


def test_shell_commands_name_real_subcommands() -> None:
    """Every ``q3agent …`` of the README, skipped blocks and prose too, parses with the CLI."""
    from q3agent.cli import build_parser

    parser = build_parser()
    text = README.read_text(encoding="utf-8")
    mentioned = [
        part.strip()
        for block in BLOCKS
        if block.lang == "bash"
        for command in commands(block.code)
        for part in command.split("&&")
        if part.strip().startswith("q3agent ")
    ]
    mentioned += re.findall(r"`(q3agent [^`]+)`", text)
    assert len(mentioned) >= 10
    for line in mentioned:
        argv = shlex.split(line.replace("…", "x").split("#")[0])[1:]
        if not argv or argv[0].startswith("-") or "[" in line:
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"README command does not parse ({exc.code}): {line}")
