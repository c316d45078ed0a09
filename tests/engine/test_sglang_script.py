""".ci/sglang.sh, the SGLang CPU engine venv installer: what it says when the venv is absent or
ready (``--check`` installs nothing)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from q3agent.testing.sglang_server import sglang_missing_reason

SCRIPT = Path(__file__).parents[2] / ".ci" / "sglang.sh"


def _check(venv: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("Q3AGENT_SGLANG_VENV", None)
    if venv is not None:
        env["Q3AGENT_SGLANG_VENV"] = venv
    return subprocess.run(
        ["bash", str(SCRIPT), "--check"], env=env, capture_output=True, text=True, timeout=60
    )


def test_check_names_the_missing_venv_and_installs_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "sglang-venv"
    done = _check(str(venv))
    assert done.returncode == 1
    assert str(venv) in done.stderr and "run .ci/sglang.sh" in done.stderr
    assert not venv.exists()


def test_an_installed_venv_is_reused() -> None:
    if sglang_missing_reason():
        pytest.skip(sglang_missing_reason() or "")
    done = _check(os.environ.get("Q3AGENT_SGLANG_VENV"))
    assert done.returncode == 0, done.stderr
    assert "sglang 0.5.23 (CPU engine) ready" in done.stdout
