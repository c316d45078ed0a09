"""q3agent beside the agent frameworks people use today, on the same real engine.

    python benchmarks/frameworks_bench.py --engine vllm          # starts vLLM CPU on 18041
    python benchmarks/frameworks_bench.py --base-url http://127.0.0.1:18041   # a running one
    python benchmarks/frameworks_bench.py --frameworks q3agent,pydantic-ai --workloads a,e

One tiny random Qwen3 on a real vLLM CPU server (its tokenizer, chat template, qwen3 reasoning
parser, hermes tool parser and prefix cache all in the path) behind a forcing proxy
(``frameworks_proxy.py``) that picks every reply from the last turn of the conversation the
server receives, so every client gets the same model outputs. Each framework runs each
workload in its own process from its own venv (``benchmarks/peers_setup.sh``), through its
documented way of talking to an OpenAI-compatible server. The prefix cache is reset before
each run; prompt, cached and generated tokens are the engine's own counters (``/metrics``).

Workloads (``frameworks_workloads.py``): (a) a 4-step tool task, thinking off; (b) the same
with thinking on and a 64-token budget that step 1's ~160-token reasoning exceeds; (c) a
3-task session, thinking on; (d) 16 concurrent agents running (a); (e) a robustness panel of
20 realistic Qwen3 replies with quirks. The printed tables and what each number means are in
docs/comparison.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from frameworks_proxy import ASSISTANT_HEADER, ForcingProxy, Logged, ProxyLog, serve_in_thread
from frameworks_workloads import (
    MARKER,
    PANEL,
    PANEL_TASKS,
    WORKLOADS,
    expected_reasoning,
    task_ok,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_DIR = Path(os.environ.get("Q3AGENT_PEERS_DIR") or Path.home() / ".cache/q3agent/peers")
FRAMEWORKS = ["q3agent", "pydantic-ai", "openai-agents", "qwen-agent", "smolagents"]
SERVED = "Qwen/Qwen3-8B"
TEMPLATE = ROOT.parent / "shared" / "reference" / "qwen3_chat_template.jinja"
ENGINE_ENV = {
    # vLLM 0.32 merges its own tool grammar into every chat request with tools by default; a
    # random model then writes whitespace inside "arguments" forever, and the forced reply is
    # fought by the grammar. Off, the server's tool parser still parses what the model wrote.
    "VLLM_ENFORCE_STRICT_TOOL_CALLING": "0",
    # POST /reset_prefix_cache between runs
    "VLLM_SERVER_DEV_MODE": "1",
}


def python_for(framework: str) -> Path:
    if framework == "q3agent":
        return Path(sys.executable)
    return PEERS_DIR / framework / "bin" / "python"


# ---------------------------------------------------------------------------- the engine


class Engine:
    """The engine under test: its URL, counters and prefix-cache reset."""

    def __init__(self, kind: str, base_url: str, model_dir: Path | None = None) -> None:
        self.kind = kind
        self.base_url = base_url.rstrip("/")
        self.model_dir = model_dir
        self._hf: Any = None
        self.http = httpx.Client(timeout=120)

    def counters(self) -> dict[str, float]:
        text = self.http.get(f"{self.base_url}/metrics").text
        wanted = {
            "prompt": r"^vllm:prompt_tokens_total\{",
            "cached": r"^vllm:prompt_tokens_cached_total\{",
            "generated": r"^vllm:generation_tokens_total\{",
            "running": r"^vllm:num_requests_running\{",
        }
        if self.kind == "sglang":
            wanted = {
                "prompt": r"^sglang:prompt_tokens_total\{",
                "cached": r"^sglang:cached_tokens_total\{",
                "generated": r"^sglang:generation_tokens_total\{",
                "running": r"^sglang:num_running_reqs\{",
            }
        out = dict.fromkeys(wanted, 0.0)
        for line in text.splitlines():
            for key, pattern in wanted.items():
                if re.match(pattern, line):
                    out[key] += float(line.rsplit(" ", 1)[1])
        return out

    def idle(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.counters()["running"] and time.monotonic() < deadline:
            time.sleep(0.5)

    def reset_cache(self) -> None:
        self.idle()
        path = "flush_cache" if self.kind == "sglang" else "reset_prefix_cache"
        reply = self.http.post(f"{self.base_url}/{path}")
        if reply.status_code != 200:
            raise SystemExit(
                f"POST /reset_prefix_cache answered {reply.status_code}: start vLLM with "
                "VLLM_SERVER_DEV_MODE=1 (this script does when it starts the server)"
            )

    def rendered(self, entry: Logged) -> str:
        """The prompt text the engine saw for a logged request, up to its last assistant
        header (the turn being generated is left out)."""
        from q3agent.qwen3.tokenizer import Qwen3Tokenizer

        tok = Qwen3Tokenizer.offline()
        body = entry.body
        if entry.path.endswith("chat/completions") and self.kind == "sglang":
            text = self._render_locally(body)
        elif entry.path.endswith("chat/completions"):
            req = {
                "model": body.get("model", SERVED),
                "messages": body.get("messages", []),
                "add_generation_prompt": True,
                **{k: body[k] for k in ("tools", "chat_template_kwargs") if k in body},
            }
            ids = self.http.post(f"{self.base_url}/tokenize", json=req).json().get("tokens", [])
            text = tok.decode(ids)
        else:
            prompt = body.get("prompt")
            text = tok.decode(prompt) if isinstance(prompt, list) else str(prompt)
        return text[: text.rfind(ASSISTANT_HEADER)]

    def _render_locally(self, body: dict[str, Any]) -> str:
        """The official template applied to a chat request (SGLang has no chat /tokenize)."""
        from transformers import AutoTokenizer

        if self._hf is None:
            self._hf = AutoTokenizer.from_pretrained(str(self.model_dir))
        messages = []
        for m in body.get("messages", []):
            m = dict(m)
            if m.get("content") is None:  # a calls-only assistant turn (the template reads it)
                m["content"] = ""
            if isinstance(m["content"], list):
                # content parts (smolagents' system turn): SGLang flattens them for a
                # string-content template such as Qwen3's, text parts joined with a space
                m["content"] = " ".join(
                    str(p.get("text", ""))
                    for p in m["content"]
                    if isinstance(p, dict) and p.get("type") in ("text", "input_text")
                )
            for call in m.get("tool_calls") or []:
                fn = call.get("function", {})
                if isinstance(fn.get("arguments"), str):
                    with contextlib.suppress(ValueError):
                        fn["arguments"] = json.loads(fn["arguments"])
            if m.get("reasoning") and not m.get("reasoning_content"):
                m["reasoning_content"] = m["reasoning"]
            messages.append(m)
        return str(
            self._hf.apply_chat_template(
                messages,
                tools=body.get("tools"),
                tokenize=False,
                add_generation_prompt=True,
                **(body.get("chat_template_kwargs") or {}),
            )
        )

    def version(self) -> str:
        path = "get_server_info" if self.kind == "sglang" else "version"
        try:
            return str(self.http.get(f"{self.base_url}/{path}").json().get("version", "?"))
        except (httpx.HTTPError, ValueError):
            return "?"


def tiny_model(scratch: Path) -> Path:
    from q3agent.testing.models import QWEN3_CONTEXT, VLLM_CPU_HEAD_DIM, make_tiny_qwen3

    return make_tiny_qwen3(
        scratch / "tiny-qwen3",
        head_dim=VLLM_CPU_HEAD_DIM,
        max_position_embeddings=QWEN3_CONTEXT,
        chat_template=TEMPLATE,
    )


SGLANG_FLAGS = (
    "--served-model-name",
    SERVED,
    "--reasoning-parser",
    "qwen3",
    "--tool-call-parser",
    "qwen25",
    "--enable-metrics",
)
"""Beside the SGLang tier's CPU flags: what SGLang's docs give for Qwen3 with tools."""


def start_sglang(port: int, scratch: Path) -> Any:
    from q3agent.testing.sglang_server import SGLangServer

    server = SGLangServer(
        tiny_model(scratch), port=port, extra_args=SGLANG_FLAGS, log_path=scratch / "sglang.log"
    )
    print(f"starting SGLang on :{port} (0.5-5 minutes on two cores; log {server.log_path})")
    server.start()
    server.wait_ready(timeout=900)
    return server


def start_vllm(port: int, scratch: Path) -> Any:
    from q3agent.testing.vllm_server import VLLMServer

    os.environ.update(ENGINE_ENV)
    model = tiny_model(scratch)
    server = VLLMServer(model, port=port, served_model_name=SERVED, log_path=scratch / "vllm.log")
    print(f"starting vLLM on :{port} (1.5-6 minutes on two cores; log {server.log_path})")
    server.start()
    server.wait_ready(timeout=900)
    return server


# ---------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One framework on one workload: what the client reported and the engine counted."""

    framework: str
    workload: str
    report: dict[str, Any] = field(default_factory=dict)
    requests: list[Logged] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)
    process_cpu: float = 0.0
    wall: float = 0.0

    @property
    def error(self) -> str:
        return str(self.report.get("error") or "")

    @property
    def work_cpu(self) -> float:
        return float(self.report.get("cpu", 0.0)) - float(self.report.get("startup_cpu", 0.0))

    @property
    def startup_cpu(self) -> float:
        return self.process_cpu - self.work_cpu

    def later_cpu_per_step(self) -> float | None:
        """Client CPU per request after the first task (its first-use costs left out)."""
        ends = self.report.get("task_ends") or []
        if len(ends) < 2:
            return None
        first_end, first_cpu = ends[0]
        later = [e for e in self.requests if e.started > first_end]
        if not later:
            return None
        return (float(self.report.get("cpu", 0.0)) - first_cpu) / len(later)


def client_env(framework: str) -> dict[str, str]:
    """The environment of a framework's client process."""
    # q3agent's client imports the checkout this script is in (the one compileall ran on),
    # not whatever q3agent the venv has installed (an editable install elsewhere)
    path = [HERE, ROOT] if framework == "q3agent" else [HERE]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(p) for p in path),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("VIRTUAL_ENV", None)
    return env


def warm_up(framework: str) -> None:
    """Import the framework and build its client once, untimed: the first measured run of
    each framework would otherwise pay for reading its venv from a cold file cache (0.1-1 s
    of CPU seen after a reboot, differently for each venv)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                str(python_for(framework)),
                str(HERE / "frameworks_clients.py"),
                "--warm-up",
                framework,
            ],
            env=client_env(framework),
            cwd=tmp,
            capture_output=True,
            check=False,
            timeout=600,
        )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(framework: str, workload: str, engine: Engine, log: ProxyLog, proxy_port: int) -> Run:
    label = f"{framework}-{workload}-{time.monotonic_ns()}"
    engine.reset_cache()
    before = engine.counters()
    run = Run(framework, workload)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        command = [
            str(python_for(framework)),
            str(HERE / "frameworks_clients.py"),
            framework,
            workload,
            f"http://127.0.0.1:{proxy_port}/run/{label}/v1",
            str(out),
        ]
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            env=client_env(framework),
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            stdout, _ = process.communicate(timeout=1800)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, _ = process.communicate()
        run.wall = time.perf_counter() - started
        run.process_cpu = children_cpu()  # cumulative; made a delta below
        try:
            run.report = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tail = stdout.decode(errors="replace").strip().splitlines()[-3:]
            run.report = {"error": "the client wrote no report: " + " | ".join(tail)}
    engine.idle()
    after = engine.counters()
    run.counters = {k: after[k] - before[k] for k in after}
    run.requests = log.take(label)
    return run


# ---------------------------------------------------------------------------- scoring


def success(run: Run) -> tuple[int, int]:
    """(tasks right, tasks) for a run."""
    calls = run.report.get("calls") or []
    if run.workload == "e":
        panel = run.report.get("panel") or []
        right = 0
        for i, task in enumerate(PANEL_TASKS):
            got = calls[i] if i < len(calls) else []
            answers = panel[i]["answers"] if i < len(panel) else []
            right += bool(answers) and task_ok(task, got, answers[-1])
        return right, len(PANEL_TASKS)
    w = WORKLOADS[run.workload]
    answers = run.report.get("answers") or []
    if w.concurrent > 1:
        flat = [c for per_task in calls for c in per_task]
        want = Counter(json.dumps(c, sort_keys=True) for c in w.tasks[0].calls)
        got = Counter(json.dumps(c, sort_keys=True) for c in flat)
        calls_ok = (
            all(got[k] == n * w.concurrent for k, n in want.items())
            and sum(got.values()) == sum(want.values()) * w.concurrent
        )
        right = sum(bool(a) and w.tasks[0].answer in a[-1] for a in answers)
        return (right if calls_ok else 0), w.concurrent
    right = 0
    for i, task in enumerate(w.tasks):
        got = calls[i] if i < len(calls) else []
        right += i < len(answers) and task_ok(task, got, answers[i])
    return right, len(w.tasks)


def reasoning_as_template(run: Run, engine: Engine) -> tuple[int, int]:
    """(requests whose prompt holds exactly the reasoning the official template keeps, all)."""
    good = 0
    for entry in run.requests:
        text = engine.rendered(entry)
        sent = {k for k in MARKER.findall(text) if k.startswith("reasoning ")}
        keys = [k for k in MARKER.findall(_last_turn(text)) if not k.startswith("reasoning ")]
        want = expected_reasoning(keys[-1]) if keys else frozenset()
        good += sent == want
    return good, len(run.requests)


def _last_turn(text: str) -> str:
    last = text.rfind(ASSISTANT_HEADER)
    if last < 0:
        return text
    end = text.find("<|im_end|>", last)
    return text[end:] if end >= 0 else text


def panel_failures(run: Run) -> list[str]:
    calls = run.report.get("calls") or []
    panel = run.report.get("panel") or []
    out = []
    for i, (task, case) in enumerate(zip(PANEL_TASKS, PANEL, strict=True)):
        got = calls[i] if i < len(calls) else []
        answers = panel[i]["answers"] if i < len(panel) else []
        if not (answers and task_ok(task, got, answers[-1])):
            err = panel[i]["error"] if i < len(panel) else ""
            out.append(f"{case.name}" + (f" ({_one_line(err)[:80]})" if err else ""))
    return out


# ---------------------------------------------------------------------------- the tables


def _one_line(text: str) -> str:
    """An error message on one line (a multi-line one would break the Markdown table)."""
    return " ".join(text.split())


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def report(runs: list[Run], engine: Engine) -> str:
    out: list[str] = []
    by = {(r.framework, r.workload): r for r in runs}
    frameworks = [f for f in FRAMEWORKS if any(r.framework == f for r in runs)]
    titles = {**{k: w.title for k, w in WORKLOADS.items()}, "e": "robustness panel (20 replies)"}
    for key in ["a", "b", "c", "d", "e"]:
        rows = []
        for f in frameworks:
            run = by.get((f, key))
            if run is None:
                continue
            ok, n = success(run)
            c = run.counters
            reqs = len(run.requests)
            row = [
                f,
                f"{ok}/{n}",
                str(reqs),
                f"{c.get('prompt', 0):.0f}",
                f"{c.get('prompt', 0) - c.get('cached', 0):.0f}",
                _pct(c.get("cached", 0), c.get("prompt", 0)),
                f"{c.get('generated', 0):.0f}",
            ]
            if key in ("b", "c"):
                good, total = reasoning_as_template(run, engine)
                row.append(f"{good}/{total}")
            if key == "d":
                row += [
                    f"{float(run.report.get('wall', 0)):.2f}",
                    f"{run.wall:.2f}",
                    f"{run.process_cpu:.2f}",
                ]
            else:
                later = run.later_cpu_per_step()
                row += [
                    f"{run.startup_cpu:.2f}",
                    f"{1000 * run.work_cpu / reqs:.0f}" if reqs else "-",
                    f"{run.process_cpu:.2f}",
                ]
                if key in ("c", "e"):
                    row.append("-" if later is None else f"{1000 * later:.0f}")
            if key == "e":
                fails = panel_failures(run)
                row.append("; ".join(fails) if fails else "")
            row.append(_one_line(run.error)[:120])
            rows.append(row)
        if not rows:
            continue
        header = [
            "framework",
            "success",
            "requests",
            "prompt tok",
            "prefilled",
            "cached",
            "generated",
        ]
        if key in ("b", "c"):
            header.append("reasoning as template")
        header += (
            ["wall s", "process wall s", "client CPU s"]
            if key == "d"
            else ["start-up CPU s", "CPU ms/step", "client CPU s"]
        )
        if key in ("c", "e"):
            header.append("CPU ms/step after task 1")
        if key == "e":
            header.append("failed cases")
        header.append("error")
        out.append(f"### ({key}) {titles[key]}\n\n{table(rows, header)}\n")
    return "\n".join(out)


def versions(runs: list[Run], engine: Engine) -> str:
    seen: dict[str, str] = {}
    for run in runs:
        for name, v in (run.report.get("versions") or {}).items():
            seen[name] = v
    lines = [
        f"- engine: {engine.kind} {engine.version()} (served as {SERVED}, tiny random "
        "Qwen3 dense, CPU)"
    ]
    lines += [f"- {k} {v}" for k, v in sorted(seen.items())]
    lines.append(f"- Python {platform.python_version()}, {os.cpu_count()} CPUs")
    if engine.kind == "sglang":
        lines.append(f"- server flags beside the SGLang tier's CPU flags: {' '.join(SGLANG_FLAGS)}")
    else:
        lines.append(f"- settings: {', '.join(f'{k}={v}' for k, v in ENGINE_ENV.items())}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["vllm", "sglang"], default="vllm")
    parser.add_argument(
        "--base-url",
        help="a running engine (vLLM: started with the env of "
        "ENGINE_ENV and the scripted-token processor)",
    )
    parser.add_argument("--port", type=int, default=18041, help="engine port when started here")
    parser.add_argument("--proxy-port", type=int, default=18042)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--workloads", default="a,b,c,d,e")
    parser.add_argument("--json", help="also write every run's raw report here")
    args = parser.parse_args()
    frameworks = [f for f in args.frameworks.split(",") if f]
    for f in frameworks:
        if not python_for(f).is_file():
            print(
                f"{f}: no venv at {python_for(f).parent.parent}; run "
                "bash benchmarks/peers_setup.sh",
                file=sys.stderr,
            )
            return 2
    scratch = Path(tempfile.mkdtemp(prefix="q3agent-frameworks-"))
    server = None
    if args.base_url:
        engine = Engine(args.engine, args.base_url, tiny_model(scratch))
    elif args.engine == "sglang":
        server = start_sglang(args.port, scratch)
        engine = Engine(args.engine, server.base_url, server.model)
    else:
        server = start_vllm(args.port, scratch)
        engine = Engine(args.engine, server.base_url, server.model)
    if "q3agent" in frameworks:
        # pip byte-compiles an installed package (the peers' venvs have their .pyc files); a
        # checkout run with PYTHONDONTWRITEBYTECODE=1 would otherwise compile every q3agent
        # module from source in every client process (~0.3-0.9 s of CPU, not q3agent's cost)
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / "q3agent")], check=False
        )
    log = ProxyLog()
    serve_in_thread(ForcingProxy(engine.base_url, log, engine=args.engine), args.proxy_port)
    for f in frameworks:
        warm_up(f)
    runs: list[Run] = []
    # the children's CPU so far (compileall, the warm-ups) is no run's: the first run's
    # process CPU used to include compileall's (~0.3 s on a fresh checkout, charged to
    # q3agent's start-up in (a))
    cpu_seen = children_cpu()
    try:
        for key in args.workloads.split(","):
            for f in frameworks:
                run = run_one(f, key, engine, log, args.proxy_port)
                run.process_cpu, cpu_seen = run.process_cpu - cpu_seen, run.process_cpu
                ok, n = success(run)
                print(
                    f"  ({key}) {f}: {ok}/{n}, {len(run.requests)} requests, "
                    f"{run.wall:.1f} s {run.error[:100]}",
                    flush=True,
                )
                runs.append(run)
        if args.json:  # before the report: a failure there must not lose the runs
            Path(args.json).write_text(
                json.dumps(
                    [{**r.__dict__, "requests": [e.__dict__ for e in r.requests]} for r in runs],
                    default=str,
                    indent=1,
                ),
                encoding="utf-8",
            )
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        text = f"## Frameworks on {args.engine}, {date}\n\n{versions(runs, engine)}\n\n"
        text += report(runs, engine)
    finally:
        if server is not None:
            server.stop()
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
