"""An Agent with a persistent session, run as a subprocess by test_agent_resume.py.

Usage: agent_resume_script.py DB LOG start|resume

``start`` runs a task whose second step makes two calls; the call add(a=1, b=1) hangs (the
test kills the process with SIGKILL while it does). ``resume`` opens the same session in a
new process and continues the interrupted task. The tool logs "start"/"done" lines.
"""

from __future__ import annotations

import json
import os
import sys
import time

from q3agent import Agent, NeverThink, ScriptedRuntime, tool


def call(a: int, b: int) -> str:
    body = json.dumps({"name": "add", "arguments": {"a": a, "b": b}})
    return f"<tool_call>\n{body}\n</tool_call>"


def main() -> None:
    db, log_path, mode = sys.argv[1:4]

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: First.
            b: Second.
        """
        with open(log_path, "a") as f:
            f.write(f"start {a},{b}\n")
        if mode == "start" and (a, b) == (1, 1):
            time.sleep(3600)  # killed here
        with open(log_path, "a") as f:
            f.write(f"done {a},{b}\n")
            f.flush()
            os.fsync(f.fileno())
        return a + b

    if mode == "start":
        script = [call(0, 0) + call(0, 1), call(1, 0) + call(1, 1)]
    else:  # the steps after the interrupted one
        script = [call(2, 0), "The sums are 0, 1, 1, 2 and 2."]
    agent = Agent(runtime=ScriptedRuntime(script), tools=[add], policy=NeverThink())
    session = agent.session(store=db, session_id="task-1")
    result = session.run("Add the pairs.") if mode == "start" else session.resume()
    print(json.dumps({"status": result.status, "answer": result.answer}))


if __name__ == "__main__":
    main()
