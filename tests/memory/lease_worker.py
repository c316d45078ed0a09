"""A q3agent worker process for the lease tests (run as a subprocess by test_leases.py).

Usage: lease_worker.py STORE_URL SESSION_ID LOG MODE [--owner O] [--ttl S] [--wait S]

MODE ``start`` runs an agent task whose second step makes two calls; add(1, 1) hangs (the
test kills the worker with SIGKILL). ``resume`` opens the same session (waiting for its
lease with ``--wait``) and continues the interrupted task. ``writer`` holds the session and
appends ``--count`` messages ``--pause`` seconds apart (exit 3 on LeaseLost, 4 when busy). Every
line the worker writes to LOG is flushed at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from q3agent import Agent, NeverThink, ScriptedRuntime, tool
from q3agent.memory.sessions import LeaseLost, SessionBusy, SessionStore
from q3agent.qwen3.messages import UserMessage


def call(a: int, b: int) -> str:
    body = json.dumps({"name": "add", "arguments": {"a": a, "b": b}})
    return f"<tool_call>\n{body}\n</tool_call>"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("session_id")
    parser.add_argument("log")
    parser.add_argument("mode", choices=["start", "resume", "writer"])
    parser.add_argument("--owner")
    parser.add_argument("--ttl", type=float, default=30.0)
    parser.add_argument("--wait", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=1_000_000, help="writer: messages")
    parser.add_argument("--pause", type=float, default=0.3, help="writer: seconds between")
    args = parser.parse_args()

    def log(line: str) -> None:
        with open(args.log, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    if args.mode == "writer":
        store = SessionStore(args.url, lease_ttl=args.ttl, owner=args.owner)
        began = time.monotonic()
        log("trying")
        try:
            session = store.open(args.session_id, lease=True, wait=args.wait)
        except SessionBusy as exc:
            print(f"busy: {exc}", file=sys.stderr)
            return 4
        log(f"held after {time.monotonic() - began:.3f}")
        try:
            for n in range(args.count):
                session.append_messages([UserMessage(content=f"{args.owner} {n}")])
                log(f"wrote {n}")
                time.sleep(args.pause)
        except LeaseLost as exc:
            log(f"lost {exc}")
            return 3
        session.close()
        return 0

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: First.
            b: Second.
        """
        log(f"start {a},{b}")
        if args.mode == "start" and (a, b) == (1, 1):
            time.sleep(3600)  # killed here
        log(f"done {a},{b}")
        return a + b

    if args.mode == "start":
        script = [call(0, 0) + call(0, 1), call(1, 0) + call(1, 1)]
    else:  # the steps after the interrupted one
        script = [call(2, 0), "The sums are 0, 1, 1, 2 and 2."]
    agent = Agent(runtime=ScriptedRuntime(script), tools=[add], policy=NeverThink())
    store = SessionStore(args.url, lease_ttl=args.ttl, owner=args.owner)
    try:
        began = time.monotonic()
        session = agent.session(store=store, session_id=args.session_id, wait=args.wait)
    except SessionBusy as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return 4
    log(f"leased after {time.monotonic() - began:.3f}")
    with session:
        result = session.run("Add the pairs.") if args.mode == "start" else session.resume()
    print(json.dumps({"status": result.status, "answer": result.answer}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
