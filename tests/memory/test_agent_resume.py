"""An Agent's persistent session survives kill -9 and resumes without re-running tool calls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from q3agent import Agent, NeverThink, ScriptedRuntime
from q3agent.memory.sessions import SessionStore
from q3agent.qwen3.messages import AssistantMessage, ToolMessage, UserMessage

SCRIPT = Path(__file__).with_name("agent_resume_script.py")


def run_script(db: Path, log: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(db), str(log), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_killed_run_resumes_from_its_last_completed_step(tmp_path: Path) -> None:
    db, log = tmp_path / "sessions.db", tmp_path / "tool.log"
    first = run_script(db, log, "start")
    deadline = time.monotonic() + 60
    while "start 1,1" not in (log.read_text() if log.exists() else ""):
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "the run never reached the hanging call"
        time.sleep(0.05)
    # add(1, 0) runs beside add(1, 1): kill only once its result is recorded (a call done but
    # not yet recorded when its process dies may run again, by design)
    while len(SessionStore(db).open("task-1").load().tool_results) < 3:
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "add(1, 0)'s result was never recorded"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    second = run_script(db, log, "resume")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {
        "status": "answer",
        "answer": "The sums are 0, 1, 1, 2 and 2.",
    }
    lines = Counter(log.read_text().splitlines())
    # every completed call ran exactly once; only the call killed mid-way ran again
    assert lines["done 0,0"] == lines["done 0,1"] == lines["done 1,0"] == lines["done 2,0"] == 1
    assert lines["start 1,0"] == 1
    assert lines["start 1,1"] == 2
    assert lines["done 1,1"] == 1

    state = SessionStore(db).open("task-1").load()
    roles = [m.role for m in state.messages]
    assert roles == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    results = [m.content for m in state.messages if isinstance(m, ToolMessage)]
    assert results == ["0", "1", "1", "2", "2"]


def test_session_reloads_history_for_a_follow_up(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    agent = Agent(
        runtime=ScriptedRuntime(["Noted: your name is Ada."]),
        policy=NeverThink(),
        system_prompt="Be brief.",
    )
    agent.session(store=db, session_id="ada").run("My name is Ada.")

    # a new process would do exactly this: open the same id and ask a follow-up
    runtime = ScriptedRuntime(["Your name is Ada."])
    later = Agent(runtime=runtime, policy=NeverThink(), system_prompt="Be brief.")
    session = later.session(store=db, session_id="ada")
    assert not session.interrupted
    result = session.run("What is my name?")

    assert result.answer == "Your name is Ada."
    prompt = runtime.requests[0].prompt_text
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "My name is Ada." in prompt and "Noted: your name is Ada." in prompt
    stored = SessionStore(db).open("ada").load().messages
    assert [type(m) for m in stored][-2:] == [UserMessage, AssistantMessage]
    assert sum(m.role == "system" for m in stored) == 1


def test_resume_without_an_interrupted_task_says_what_to_do(tmp_path: Path) -> None:
    session = Agent(runtime=ScriptedRuntime(["hi"]), policy=NeverThink()).session(
        store=tmp_path / "s.db"
    )
    session.run("hello")
    with pytest.raises(ValueError, match="nothing to resume"):
        session.resume()
