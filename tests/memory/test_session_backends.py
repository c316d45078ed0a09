"""One SessionStore interface on SQLite and PostgreSQL (a real server from pgserver)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from q3agent import Agent, NeverThink, ScriptedRuntime
from q3agent.memory.postgres import PostgresSessionStore
from q3agent.memory.sessions import SessionError, SessionStore, SQLiteSessionStore
from q3agent.qwen3.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage


def test_the_url_chooses_the_backend(tmp_path: Path, postgres_url: str) -> None:
    assert isinstance(SessionStore(tmp_path / "a.db"), SQLiteSessionStore)
    relative = SessionStore(f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(relative, SQLiteSessionStore) and relative.path == tmp_path / "b.db"
    assert isinstance(SessionStore(postgres_url), PostgresSessionStore)
    with pytest.raises(ValueError, match="unknown scheme 'mysql'"):
        SessionStore("mysql://localhost/x")


def test_round_trip_and_atomic_steps_on_each_backend(store_url: str) -> None:
    store = SessionStore(store_url)
    session = store.open("s1", metadata={"user": "ana"})
    call = ToolCall(name="get_weather", arguments={"city": "Oslo"}, id="call_1")
    session.append_messages(
        [UserMessage(content="Weather?"), AssistantMessage(content="", tool_calls=[call])]
    )
    session.record_tool_result("call_1", {"temp_c": -3})
    session.record_tool_result("call_1", {"temp_c": -3})  # recording twice is harmless
    session.complete_step(
        0, {"index": 0}, [ToolMessage(content="-3", tool_call_id="call_1", name="get_weather")]
    )
    store.open("s2").append_messages([UserMessage(content="other")])
    store.close()

    again = SessionStore(store_url)
    state = again.open("s1").load()
    assert [m.role for m in state.messages] == ["user", "assistant", "tool"]
    assert state.steps == [{"index": 0}] and state.next_step == 1
    assert state.metadata == {"user": "ana"}
    assert again.open("s1").completed_tool_result("call_1") == {"temp_c": -3}
    assert set(again.list_sessions()) == {"s1", "s2"}
    again.delete("s2")
    assert again.list_sessions() == ["s1"]


def test_an_agent_session_persists_through_a_url(store_url: str) -> None:
    agent = Agent(runtime=ScriptedRuntime(["Noted."]), policy=NeverThink())
    with agent.session(store=store_url, session_id="ada") as session:
        session.run("My name is Ada.")
    later = Agent(runtime=ScriptedRuntime(["Ada."]), policy=NeverThink())
    with later.session(store=store_url, session_id="ada") as session:
        assert [m.role for m in session.messages] == ["user", "assistant"]
        assert session.run("Name?").answer == "Ada."


def test_an_unreachable_postgres_is_one_clear_session_error() -> None:
    url = "postgresql://ana:secret@127.0.0.1:9/nowhere"
    with pytest.raises(SessionError) as caught:
        SessionStore(url, connect_timeout=1)
    message = str(caught.value)
    assert "postgresql://ana:***@127.0.0.1:9/nowhere" in message and "secret" not in message
    assert "Check that the server is running" in message and "\n" not in message


# -- SQLite files: checkpointed on close and exit; a file that lost its rows is an error --


def test_close_checkpoints_the_wal_so_the_db_file_alone_holds_everything(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SessionStore(db)
    store.open("s1").append_messages([UserMessage(content="keep me")])
    store.close()
    assert not (tmp_path / "s.db-wal").exists() or (tmp_path / "s.db-wal").stat().st_size == 0
    copy = tmp_path / "copy" / "s.db"
    copy.parent.mkdir()
    shutil.copyfile(db, copy)  # the .db alone, as a user backing it up would copy it
    assert SessionStore(copy).open("s1").load().messages[0].content == "keep me"


def test_a_process_that_exits_without_close_leaves_a_complete_db_file(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    code = (
        "import sys; from q3agent.memory.sessions import SessionStore;"
        "from q3agent.qwen3.messages import UserMessage;"
        "SessionStore(sys.argv[1]).open('s1').append_messages([UserMessage(content='kept')])"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=120)
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    assert SessionStore(copy).open("s1").load().messages[0].content == "kept"


def test_a_db_truncated_to_zero_bytes_is_an_error_not_an_empty_session(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SessionStore(db)
    store.open("s1").append_messages([UserMessage(content="hello")])
    store.close()
    db.write_bytes(b"")
    with pytest.raises(SessionError, match=r"is empty \(0 bytes\).*Restore it from a backup"):
        SessionStore(db)
    agent = Agent(runtime=ScriptedRuntime(["hi"]), policy=NeverThink())
    with pytest.raises(SessionError, match="0 bytes"):
        agent.session(store=db, session_id="s1")
    assert db.stat().st_size == 0  # nothing was written over it
