"""Script files for ScriptedRuntime: one format for ``run --script`` and serve-mcp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from q3agent.testing.runtimes import ScriptFileError, load_completions


def test_strings_and_both_object_keys_load_in_order(tmp_path: Path) -> None:
    script = tmp_path / "s.jsonl"
    lines = [json.dumps("a"), "", json.dumps({"completion": "b"}), json.dumps({"text": "c"})]
    script.write_text("\n".join(lines), encoding="utf-8")
    assert load_completions(script) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{not json", "s.jsonl:1: not JSON"), ("[1, 2]", "s.jsonl:1: expected a JSON string")],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    script = tmp_path / "s.jsonl"
    script.write_text(content, encoding="utf-8")
    with pytest.raises(ScriptFileError, match=expected):
        load_completions(script)


def test_a_missing_script_is_one_error_line_from_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "q3agent.cli", "run", "hi", "--script", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: cannot read the script")
    assert "Traceback" not in done.stderr
