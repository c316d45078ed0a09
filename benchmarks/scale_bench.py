"""Agents past one process: worker processes sharing sessions on SQLite or PostgreSQL.

Part 1, throughput: 1, 4 and 8 worker processes, each running 8 agents at once (one session
each, leased) on scripted runtimes (20 ms per model call, 5 ms per tool call); every task is
three steps (two parallel tool calls, one call, the answer). Per backend and worker count:
tasks per second (all workers, from a common start), p50/p99 seconds per task, errors, and
messages lost (what the agents held in memory at the end against what the store holds).

Part 2, kill -9 takeover: a worker runs a task whose second step hangs in a tool call; a
standby worker is already waiting for the same session (``wait=True``). The first is killed
with SIGKILL; the standby takes the lease and resumes. Reported: completed calls re-run
(must be 0), messages lost (must be 0; every message stored before the kill is still there,
in order), and the takeover time from the kill to the standby holding the lease, for a
holder on another machine (named owner: the lease must expire, ``--ttl`` seconds) and one on
this machine (its process is gone: taken over at once).

    python benchmarks/scale_bench.py [--tasks 5] [--ttl 2] [--postgres-url URL]

Without ``--postgres-url`` a throwaway PostgreSQL 16 is started with pgserver.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

AGENTS_PER_WORKER = 8
MODEL_LATENCY = 0.02
TOOL_LATENCY = 0.005


def _call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def _task_script(n: int) -> list[str]:
    return [
        _call("add", a=n, b=1) + _call("add", a=n, b=2),
        _call("add", a=n, b=3),
        f"Task {n} done.",
    ]


# -- worker processes ---------------------------------------------------------------------


def run_worker(url: str, worker: int, tasks: int, go: Path) -> None:
    """Run AGENTS_PER_WORKER agents, ``tasks`` tasks each, once ``go`` exists; print JSON."""
    import anyio

    from q3agent import Agent, NeverThink, ScriptedRuntime, tool
    from q3agent.memory.sessions import SessionStore

    @tool
    async def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: First.
            b: Second.
        """
        await anyio.sleep(TOOL_LATENCY)
        return a + b

    store = SessionStore(url)
    latencies: list[float] = []
    errors: list[str] = []
    held: dict[str, int] = {}

    async def agent_loop(index: int) -> None:
        script = [line for n in range(tasks) for line in _task_script(n)]
        runtime = ScriptedRuntime(script, latency=MODEL_LATENCY)
        agent = Agent(runtime=runtime, tools=[add], policy=NeverThink())
        session_id = f"w{worker}-a{index}"
        try:
            with agent.session(store=store, session_id=session_id) as session:
                for n in range(tasks):
                    began = time.perf_counter()
                    result = await session.arun(f"Task {n}: add the numbers.")
                    latencies.append(time.perf_counter() - began)
                    if not result.ok:
                        errors.append(f"{session_id} task {n}: {result.status}")
                held[session_id] = len(session.messages)
        except Exception as exc:
            errors.append(f"{session_id}: {type(exc).__name__}: {exc}")

    async def main() -> tuple[float, float]:
        began = time.time()
        async with anyio.create_task_group() as tg:
            for i in range(AGENTS_PER_WORKER):
                tg.start_soon(agent_loop, i)
        return began, time.time()

    Path(f"{go}.ready-{worker}").touch()  # imported and connected: ready to start
    while not go.exists():
        time.sleep(0.01)
    began, ended = anyio.run(main)
    store.close()
    out = {"began": began, "ended": ended, "latencies": latencies, "errors": errors}
    print(json.dumps({**out, "held": held}))


def run_takeover_worker(url: str, mode: str, log: str, owner: str | None, ttl: float) -> None:
    """``first``: run the task, hang in add(1, 1). ``standby``: wait for the lease, resume."""
    from q3agent import Agent, NeverThink, ScriptedRuntime, tool
    from q3agent.memory.sessions import SessionStore

    def note(line: str) -> None:
        with open(log, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: First.
            b: Second.
        """
        note(f"start {a},{b}")
        if mode == "first" and (a, b) == (1, 1):
            time.sleep(3600)
        note(f"done {a},{b}")
        return a + b

    if mode == "first":
        script = [_call("add", a=0, b=0) + _call("add", a=0, b=1),
                  _call("add", a=1, b=0) + _call("add", a=1, b=1)]  # fmt: skip
    else:
        script = [_call("add", a=2, b=0), "The sums are 0, 1, 1, 2 and 2."]
    agent = Agent(runtime=ScriptedRuntime(script), tools=[add], policy=NeverThink())
    store = SessionStore(url, lease_ttl=ttl, owner=owner)
    if mode == "standby":
        note("waiting")
    session = agent.session(store=store, session_id="takeover", wait=True)
    note(f"leased {time.time():.6f}")
    with session:
        result = session.run("Add the pairs.") if mode == "first" else session.resume()
    note(f"finished {result.status}")


# -- the parent ---------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def throughput(url: str, workers: int, tasks: int, scratch: Path) -> dict[str, Any]:
    go = scratch / f"go-{workers}-{time.monotonic_ns()}"
    procs = [_spawn("--worker", url, str(w), str(tasks), str(go)) for w in range(workers)]
    deadline = time.monotonic() + 600  # every worker imports q3agent before the common start
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        if all(Path(f"{go}.ready-{w}").exists() for w in range(workers)):
            break
        time.sleep(0.05)
    go.touch()
    reports, errors = [], []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode != 0 or not out.strip():
            errors.append(f"worker exited {p.returncode}: {err.strip().splitlines()[-1:]}")
            continue
        reports.append(json.loads(out.strip().splitlines()[-1]))
    latencies = [x for r in reports for x in r["latencies"]]
    errors += [e for r in reports for e in r["errors"]]
    span = max(r["ended"] for r in reports) - min(r["began"] for r in reports) if reports else 0
    from q3agent.memory.sessions import SessionStore

    store = SessionStore(url)
    lost = 0
    for report in reports:
        for session_id, count in report["held"].items():
            lost += max(0, count - len(store.open(session_id).load().messages))
    expected = workers * AGENTS_PER_WORKER * tasks
    store.close()
    return {
        "tasks": len(latencies),
        "expected": expected,
        "tasks_per_s": len(latencies) / span if span else 0.0,
        "p50": _percentile(latencies, 0.5),
        "p99": _percentile(latencies, 0.99),
        "errors": len(errors),
        "error_lines": errors[:3],
        "lost": lost,
    }


def takeover(url: str, ttl: float, named: bool, scratch: Path) -> dict[str, Any]:
    from q3agent.memory.sessions import SessionStore

    SessionStore(url).delete("takeover")
    log = scratch / f"takeover-{time.monotonic_ns()}.log"
    log.touch()
    owner_a = ["--owner", "worker-a"] if named else []
    owner_b = ["--owner", "worker-b"] if named else []
    first = _spawn("--takeover", url, "first", str(log), str(ttl), *owner_a)
    _wait_line(log, "start 1,1", first)
    stored_before = [m.model_dump() for m in SessionStore(url).open("takeover").load().messages]
    standby = _spawn("--takeover", url, "standby", str(log), str(ttl), *owner_b)
    _wait_line(log, "waiting", standby)
    time.sleep(0.5)  # the standby is polling for the lease
    killed_at = time.time()
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    _out, err = standby.communicate(timeout=600)
    if standby.returncode != 0:
        raise RuntimeError(f"standby failed: {err.strip().splitlines()[-3:]}")
    lines = log.read_text().splitlines()
    leased = [float(x.split()[1]) for x in lines if x.startswith("leased")]
    starts = [x.split()[1] for x in lines if x.startswith("start")]
    done_before = {x.split()[1] for x in lines[: lines.index("waiting")] if x.startswith("done")}
    rerun = sum(starts.count(c) - 1 for c in done_before)
    after = [m.model_dump() for m in SessionStore(url).open("takeover").load().messages]
    lost = sum(1 for i, m in enumerate(stored_before) if i >= len(after) or after[i] != m)
    return {
        "takeover_s": leased[-1] - killed_at,
        "rerun": rerun,
        "lost": lost,
        "finished": any(x == "finished answer" for x in lines),
        "stored_before": len(stored_before),
    }


def _wait_line(log: Path, prefix: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if any(line.startswith(prefix) for line in log.read_text().splitlines()):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited early: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"no {prefix!r} in {log}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, worker, tasks, go = sys.argv[2:6]
        run_worker(url, int(worker), int(tasks), Path(go))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--takeover":
        url, mode, log, ttl, *rest = sys.argv[2:]
        run_takeover_worker(url, mode, log, rest[1] if rest else None, float(ttl))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5, help="tasks per agent (default 5)")
    parser.add_argument("--workers", default="1,4,8", help="worker counts (default 1,4,8)")
    parser.add_argument("--ttl", type=float, default=2.0, help="lease seconds in part 2")
    parser.add_argument("--postgres-url", help="an existing PostgreSQL (default: pgserver)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="q3-scale-"))
    server = None
    urls: dict[str, str] = {}
    backends = args.backends.split(",")
    if "sqlite" in backends:
        urls["sqlite"] = f"sqlite:///{scratch / 'sessions.db'}"
    if "postgresql" in backends:
        if args.postgres_url:
            urls["postgresql"] = args.postgres_url
        else:
            import pgserver

            server = pgserver.get_server(Path("/tmp") / scratch.name, cleanup_mode="delete")
            urls["postgresql"] = str(server.get_uri())
    try:
        print(f"{AGENTS_PER_WORKER} agents per worker, {args.tasks} tasks each "
              f"(3 steps, 3 tool calls), model {MODEL_LATENCY * 1000:.0f} ms, "
              f"tool {TOOL_LATENCY * 1000:.0f} ms; {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
        print(f"{'backend':<11}{'workers':>8}{'tasks':>7}{'tasks/s':>9}{'p50 s':>8}"
              f"{'p99 s':>8}{'errors':>8}{'lost':>6}")  # fmt: skip
        for name, url in urls.items():
            for workers in [int(w) for w in args.workers.split(",")]:
                if name == "sqlite":
                    url = f"sqlite:///{scratch / f'sessions-{workers}.db'}"
                r = throughput(url, workers, args.tasks, scratch)
                print(f"{name:<11}{workers:>8}{r['tasks']:>7}{r['tasks_per_s']:>9.1f}"
                      f"{r['p50']:>8.3f}{r['p99']:>8.3f}{r['errors']:>8}{r['lost']:>6}",
                      flush=True)  # fmt: skip
                for line in r["error_lines"]:
                    print(f"    error: {line}")
        print(f"\nkill -9 takeover (lease ttl {args.ttl:g} s; standby worker already waiting)")
        print(f"{'backend':<11}{'holder':<22}{'rerun':>6}{'lost':>6}{'takeover s':>12}"
              f"{'finished':>10}")  # fmt: skip
        for name, url in urls.items():
            for named in (True, False):
                holder = "other machine (ttl)" if named else "this machine (pid)"
                r = takeover(url, args.ttl, named, scratch)
                print(f"{name:<11}{holder:<22}{r['rerun']:>6}{r['lost']:>6}"
                      f"{r['takeover_s']:>12.3f}{r['finished']!s:>10}", flush=True)  # fmt: skip
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
