"""Run the ``q3agent`` command as a user does: a subprocess, from a directory of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONSOLE_SCRIPT = "import sys\nfrom q3agent.cli import main\nsys.exit(main())\n"
"""What pip writes into ``bin/q3agent``: sys.path[0] is the script's folder, not the cwd."""

Cli = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment with no ``Q3AGENT_*`` settings leaking in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("Q3AGENT_")}
    env.update(HF_HUB_OFFLINE="1", COLUMNS="200", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


@pytest.fixture
def q3agent(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """Run ``q3agent ARGS…`` through a copy of the console script (not ``python -m``)."""
    bin_dir = tmp_path_factory.mktemp("bin")
    script = bin_dir / "q3agent"
    script.write_text(CONSOLE_SCRIPT)

    def run(
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 180,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(**(env or {})),
            cwd=cwd or bin_dir,
            input=stdin,
        )

    return run
