"""A small agent-style loop over SessionStore, run as a subprocess by test_sessions.py.

Usage: resume_agent.py DB SESSION_ID LOG BLOCK_CALL_ID

Each step "generates" an assistant turn with two tool calls (deterministic ids), runs the
calls that have no recorded result, and completes the step. The tool appends to LOG when it
starts and finishes; the call named BLOCK_CALL_ID hangs after starting (the test then kills
the process with SIGKILL). Run again with BLOCK_CALL_ID=none, it resumes the session.
"""

from __future__ import annotations

import json
import os
import sys
import time

from q3agent.memory.sessions import SessionStore
from q3agent.qwen3.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage

STEPS = 4
CALLS_PER_STEP = 2


def log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def model_turn(step: int) -> AssistantMessage:
    calls = [
        ToolCall(name="add", arguments={"a": step, "b": i}, id=f"call_s{step}_{i}", index=i)
        for i in range(CALLS_PER_STEP)
    ]
    return AssistantMessage(content="", tool_calls=calls)


def run_tool(call: ToolCall, log_path: str, block: str) -> int:
    log(log_path, f"start {call.id}")
    if call.id == block:
        time.sleep(3600)  # the test kills the process here
    result = int(call.arguments["a"]) + int(call.arguments["b"])
    log(log_path, f"done {call.id}")
    return result


def main() -> None:
    db, session_id, log_path, block = sys.argv[1:5]
    session = SessionStore(db).open(session_id)
    state = session.load()
    if not state.messages:
        session.append_messages([UserMessage(content="Add the numbers, step by step.")])
    step = state.next_step
    pending = state.pending_tool_calls()
    while step < STEPS:
        if not pending:
            assistant = model_turn(step)
            session.append_messages([assistant])
            pending = list(assistant.tool_calls)
        tool_messages = []
        for call in pending:
            result = session.completed_tool_result(call.id)
            if result is None:
                result = run_tool(call, log_path, block)
                session.record_tool_result(call.id, result)
            tool_messages.append(
                ToolMessage(content=json.dumps(result), tool_call_id=call.id, name=call.name)
            )
        session.complete_step(step, {"step": step, "calls": [c.id for c in pending]}, tool_messages)
        step += 1
        pending = []
    if not isinstance(session.load().messages[-1], AssistantMessage):
        session.append_messages([AssistantMessage(content="All sums computed.")])
    print("finished")


if __name__ == "__main__":
    main()
