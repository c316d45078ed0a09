"""Sessions in SQLite: round trips, atomic steps, and resuming a run killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from q3agent.memory.sessions import SessionError, SessionStore, SessionWarning
from q3agent.qwen3.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage

SCRIPT = Path(__file__).parent / "resume_agent.py"


def test_messages_steps_and_tool_results_round_trip(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    session = store.open("s1", metadata={"user": "ana"})
    call = ToolCall(name="get_weather", arguments={"city": "Oslo"}, id="call_1")
    session.append_messages(
        [
            UserMessage(content="Weather in Oslo?"),
            AssistantMessage(content="", reasoning_content="need a tool", tool_calls=[call]),
        ]
    )
    session.record_tool_result("call_1", {"temp_c": -3})
    session.complete_step(
        0, {"thinking": True, "reason": "tool needed"},
        [ToolMessage(content='{"temp_c": -3}', tool_call_id="call_1", name="get_weather")],
    )  # fmt: skip

    reopened = SessionStore(tmp_path / "sessions.db").open("s1")
    state = reopened.load()
    assert [m.role for m in state.messages] == ["user", "assistant", "tool"]
    assistant = state.messages[1]
    assert isinstance(assistant, AssistantMessage)
    assert assistant.tool_calls[0].arguments == {"city": "Oslo"}
    assert assistant.reasoning_content == "need a tool"
    assert state.steps == [{"thinking": True, "reason": "tool needed"}]
    assert state.next_step == 1
    assert state.metadata == {"user": "ana"}
    assert reopened.completed_tool_result("call_1") == {"temp_c": -3}
    assert reopened.completed_tool_result("call_2") is None
    assert state.pending_tool_calls() == []
    journal = sqlite3.connect(tmp_path / "sessions.db").execute("PRAGMA journal_mode").fetchone()
    assert journal[0] == "wal"


def test_sessions_are_separate_and_deletable(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    store.open("a").append_messages([UserMessage(content="hello a")])
    store.open("b").append_messages([UserMessage(content="hello b")])
    assert set(store.list_sessions()) == {"a", "b"}
    assert store.open("b").load().messages[0].content == "hello b"
    store.delete("a")
    assert store.list_sessions() == ["b"]
    assert store.open("a").load().messages == []


def test_interrupted_step_reports_its_pending_calls(tmp_path: Path) -> None:
    session = SessionStore(tmp_path / "s.db").open("x")
    calls = [ToolCall(name="t", id=f"c{i}") for i in range(3)]
    session.append_messages([UserMessage(content="go"), AssistantMessage(tool_calls=calls)])
    session.record_tool_result("c0", "ok")
    state = session.load()
    assert [c.id for c in state.pending_tool_calls()] == ["c0", "c1", "c2"]
    assert state.next_step == 0
    assert state.tool_results == {"c0": "ok"}


def _wait_for(path: Path, line: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and line in path.read_text().splitlines():
            return
        if proc.poll() is not None:
            raise AssertionError(f"agent exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {line!r}")


def test_run_killed_mid_task_resumes_without_rerunning_completed_calls(tmp_path: Path) -> None:
    db, log = tmp_path / "agent.db", tmp_path / "executions.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = [sys.executable, str(SCRIPT), str(db), "task-1", str(log)]
    first = subprocess.Popen([*args, "call_s2_1"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for(log, "start call_s2_1", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL

    killed = SessionStore(db).open("task-1").load()
    assert killed.next_step == 2
    assert [c.id for c in killed.pending_tool_calls()] == ["call_s2_0", "call_s2_1"]
    assert set(killed.tool_results) >= {"call_s2_0"} and "call_s2_1" not in killed.tool_results

    second = subprocess.run([*args, "none"], env=env, text=True, capture_output=True,
                            timeout=120)  # fmt: skip
    assert second.returncode == 0, second.stderr
    lines = log.read_text().splitlines()
    done = Counter(line.split()[1] for line in lines if line.startswith("done"))
    started = Counter(line.split()[1] for line in lines if line.startswith("start"))
    expected = {f"call_s{s}_{i}" for s in range(4) for i in range(2)}
    assert set(done) == expected and set(done.values()) == {1}
    # Only the call that was running at the kill starts twice; finished ones never rerun.
    assert started["call_s2_1"] == 2
    assert all(n == 1 for call, n in started.items() if call != "call_s2_1")

    final = SessionStore(db).open("task-1").load()
    assert final.next_step == 4
    tool_ids = [m.tool_call_id for m in final.messages if isinstance(m, ToolMessage)]
    assert sorted(tool_ids) == sorted(expected) and len(tool_ids) == len(set(tool_ids))
    assert final.messages[-1].content == "All sums computed."
    assert [s["step"] for s in final.steps] == [0, 1, 2, 3]


def test_a_file_that_is_not_a_database_is_a_session_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"this is not sqlite\x00" * 300)
    with pytest.raises(SessionError) as caught:
        SessionStore(path)
    message = str(caught.value)
    assert str(path) in message
    assert "move it aside" in message
    assert path.read_bytes().startswith(b"this is not sqlite")  # nothing was overwritten


def test_unreadable_rows_are_skipped_and_the_rest_loads(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    session = SessionStore(path).open("s1")
    session.append_messages(
        [UserMessage(content="first"), AssistantMessage(content="one"), UserMessage(content="x")]
    )
    session.record_step(0, {"index": 0})
    with sqlite3.connect(path) as conn:  # damage two rows as a crash or a bad edit might
        conn.execute('UPDATE messages SET message = \'{"role": "user", "cont\' WHERE seq = 1')
        conn.execute('UPDATE messages SET message = \'{"role": "robot"}\' WHERE seq = 2')
    with pytest.warns(SessionWarning, match="2 unreadable row"):
        state = SessionStore(path).open("s1").load()
    assert [m.content for m in state.messages] == ["first"]
    assert state.steps == [{"index": 0}]
    assert len(state.problems) == 2 and "message 1" in state.problems[0]
    with pytest.raises(SessionError, match="'s1'") as caught:
        SessionStore(path).open("s1").load(strict=True)
    assert caught.value.state is not None
    assert [m.content for m in caught.value.state.messages] == ["first"]
