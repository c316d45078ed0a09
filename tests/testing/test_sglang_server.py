"""The SGLang test-server launcher leaves no temporary folder behind."""

from __future__ import annotations

from pathlib import Path

from q3agent.testing.sglang_server import SGLangServer


def test_leaving_the_context_removes_the_temporary_work_folder(tmp_path: Path) -> None:
    """``with SGLangServer(...)`` ends in ``cleanup()``; ``stop()`` alone keeps the folder,
    since ``kernel_calls()`` reads it after the server stops."""
    server = SGLangServer(tmp_path, port=1, log_path=tmp_path / "sglang.log")
    workdir = server._workdir
    server.stop()
    assert workdir.is_dir()
    server.__exit__(None, None, None)
    assert not workdir.exists()
