"""One session, one writer: leases on SQLite and PostgreSQL, with real worker processes.

A second worker gets SessionBusy or waits; a worker killed with SIGKILL is taken over (when
its lease expires, or at once when it was a process of this machine) and the new worker
resumes without re-running completed calls; a worker that stalls past its lease and wakes
up finds its writes refused (fencing), so two workers never interleave writes.
"""

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

from q3agent.memory.sessions import SessionBusy, SessionStore
from q3agent.qwen3.messages import ToolMessage, UserMessage

WORKER = Path(__file__).with_name("lease_worker.py")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


def worker(url: str, log: Path, mode: str, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, "task-1", str(log), mode, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_line(log: Path, prefix: str, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1]
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"no {prefix!r} line in {log}")


def wait_for_recorded_calls(url: str, count: int, proc: subprocess.Popen[str]) -> None:
    """Wait until the session has recorded ``count`` tool results: a call whose result is not
    yet recorded when its worker dies may run again (at least once, by design)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(SessionStore(url).open("task-1").load().tool_results) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"the session never recorded {count} tool results")


def test_a_held_session_is_busy_or_waited_for(store_url: str, tmp_path: Path) -> None:
    store = SessionStore(store_url)
    mine = store.open("task-1", lease=True, owner="test-process")
    with pytest.raises(SessionBusy, match="being run by another worker"):
        store.open("task-1", lease=True, owner="someone-else")

    log = tmp_path / "log"
    busy = worker(store_url, log, "writer", "--count", "1")
    _out, err = busy.communicate(timeout=120)
    assert busy.returncode == 4, err
    assert "session 'task-1' is being run by another worker (test-process" in err

    waiting = worker(store_url, log, "writer", "--count", "2", "--wait", "120", "--pause", "0")
    wait_for_line(log, "trying", waiting)
    time.sleep(0.5)  # let it poll a few times
    mine.append_messages([UserMessage(content="mine, before release")])
    mine.close()
    _out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    contents = [m.content for m in store.open("task-1").load().messages]
    assert contents[0] == "mine, before release" and len(contents) == 3


@pytest.mark.parametrize("takeover", ["expiry", "dead-process"])
def test_a_killed_worker_is_taken_over_without_rerunning_calls(
    store_url: str, tmp_path: Path, takeover: str
) -> None:
    if takeover == "dead-process" and store_url.startswith("sqlite"):
        pytest.skip("covered for SQLite by test_agent_resume (default owner, same machine)")
    log = tmp_path / "tool.log"
    # Named owners look like workers on other machines: only expiry frees their lease.
    names = ("--owner", "worker-a") if takeover == "expiry" else ()
    first = worker(store_url, log, "start", "--ttl", "2", *names)
    wait_for_line(log, "start 1,1", first)
    wait_for_recorded_calls(store_url, 3, first)  # add(1, 0) is done and recorded, not in flight
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    if takeover == "expiry":
        assert SessionStore(store_url).lease_holder("task-1") is not None  # not yet free
        names = ("--owner", "worker-b")

    second = worker(store_url, log, "resume", "--ttl", "2", "--wait", "120", *names)
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {
        "status": "answer",
        "answer": "The sums are 0, 1, 1, 2 and 2.",
    }
    lines = Counter(log.read_text().splitlines())
    for done in ("0,0", "0,1", "1,0", "1,1", "2,0"):  # every call completed exactly once
        assert lines[f"done {done}"] == 1
    assert lines["start 1,0"] == 1 and lines["start 1,1"] == 2  # only the killed call again
    state = SessionStore(store_url).open("task-1").load()
    results = [m.content for m in state.messages if isinstance(m, ToolMessage)]
    assert results == ["0", "1", "1", "2", "2"]
    assert SessionStore(store_url).lease_holder("task-1") is None  # released on close


def test_a_stalled_worker_that_lost_its_lease_writes_nothing(
    store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    stalled = worker(store_url, log, "writer", "--owner", "worker-a", "--ttl", "1.5")
    wait_for_line(log, "wrote 2", stalled)
    stalled.send_signal(signal.SIGSTOP)  # a long GC pause, a frozen VM: no heartbeat
    try:
        store = SessionStore(store_url)
        taken = store.open("task-1", lease=True, wait=60, owner="worker-b")
        taken.append_messages([UserMessage(content="worker-b 0")])
    finally:
        stalled.send_signal(signal.SIGCONT)
    _out, err = stalled.communicate(timeout=60)
    assert stalled.returncode == 3, err
    lost = wait_for_line(log, "lost", stalled)
    assert "was taken over (now held by worker-b)" in lost
    taken.append_messages([UserMessage(content="worker-b 1")])
    contents = [m.content for m in store.open("task-1").load().messages]
    written = [line for line in log.read_text().splitlines() if line.startswith("wrote")]
    # every write worker-a reported is there, then only worker-b's: no interleaving
    assert contents == [f"worker-a {n}" for n in range(len(written))] + [
        "worker-b 0",
        "worker-b 1",
    ]
    taken.close()
