"""A real vLLM server for engine tests and benchmarks, and a scripted-token logits processor.

A tiny random Qwen3 cannot write ``<think>`` or ``<tool_call>``. To test q3agent against the
real engine (its detokenizer, stop handling, prefix cache, reasoning and tool parsers), the
server loads :class:`ScriptedTokens`, a vLLM v1 logits processor that forces, per request, the
tokens of a script given in the request body (``vllm_xargs``, see :func:`script_body`). The
script lists one token sequence per assistant turn of the conversation; the processor finds the
current turn by counting ``<|im_start|>assistant`` headers in the prompt and the position in it
from what the turn already holds, so a thinking-budget continuation, a chat request the server
rendered itself and a completions request built from ids all land on the same next token.
Requests without a script are sampled from the model as usual. The server also loads
q3agent's in-engine thinking budget (:mod:`q3agent.serving.engine_budget`, copied beside it),
applied after the script, for runtimes created with ``engine_budget=True``.

:class:`VLLMServer` starts ``python -m vllm.entrypoints.openai.api_server`` from the engine
venv (``.ci/engines.sh`` installs it) with the flags q3agent's docs give, waits for
``/health`` and stops it by process group. This file imports only the standard library at the
top: the server imports it by file (copied beside the model), without q3agent installed.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SCRIPT_ARG = "q3agent_script"
"""The ``vllm_xargs`` key holding the scripted token ids."""
TURN_SEPARATOR = -1
"""Separates the assistant turns in the flat script list (``vllm_xargs`` takes flat lists)."""
FREE_TURN_ID = -2
FREE_TURN: tuple[int, ...] = (FREE_TURN_ID,)
"""A script turn that forces nothing: the model writes that turn itself (sampled as usual,
under whatever constraint the request carries, e.g. a required tool call's grammar)."""

# Qwen3 ids (shared by every Qwen3 checkpoint; tests check them against the tokenizer)
IM_START_ID = 151644
IM_END_ID = 151645
THINK_END_ID = 151668
ASSISTANT_ID = 77091
NEWLINE_IDS = frozenset({198, 271, 1406})  # "\n", "\n\n", "\n\n\n"

ENGINE_VENV_ENV = "Q3AGENT_ENGINE_VENV"
DEFAULT_ENGINE_VENV = Path.home() / ".cache" / "q3agent" / "engine-venv"
PROCESSOR_MODULE = "q3agent_scripted_tokens"
BUDGET_MODULE = "q3agent_engine_budget"
"""q3agent.serving.engine_budget, copied beside the script processor (the in-engine budget)."""


def _split_turns(script: Sequence[int]) -> list[list[int]]:
    turns: list[list[int]] = [[]]
    for token in script:
        if token == TURN_SEPARATOR:
            turns.append([])
        else:
            turns[-1].append(int(token))
    return turns


def _leading_newlines(ids: Sequence[int]) -> int:
    count = 0
    while count < len(ids) and ids[count] in NEWLINE_IDS:
        count += 1
    return count


def forced_token(
    prompt_ids: Sequence[int], output_ids: Sequence[int], script: Sequence[int]
) -> int | None:
    """The token the script forces next, or ``None`` when the prompt has no assistant turn or
    the current turn is :data:`FREE_TURN` (left to the model).

    A turn's script is ``reasoning … </think>`` + answer, or the answer alone. Before the turn
    holds a ``</think>``, the reasoning part is forced position by position; after it (the
    model's own, the budget's early-stop text, or the empty block of a non-thinking prompt),
    the answer part is, counted from the first non-newline token. A turn past the script's end
    gets ``<|im_end|>`` so a mismatched script ends the turn instead of rambling.
    """
    ids = [*prompt_ids, *output_ids]
    headers = [
        i for i in range(len(ids) - 1) if ids[i] == IM_START_ID and ids[i + 1] == ASSISTANT_ID
    ]
    if not headers:
        return None
    turns = _split_turns(script)
    if len(headers) > len(turns):
        return IM_END_ID
    turn = turns[len(headers) - 1]
    if tuple(turn) == FREE_TURN:
        return None
    done = ids[headers[-1] + 3 :]  # after "<|im_start|>assistant\n"
    if THINK_END_ID in turn and THINK_END_ID not in done:
        reasoning = turn[: turn.index(THINK_END_ID) + 1]
        return reasoning[len(done)] if len(done) < len(reasoning) else THINK_END_ID
    answer = turn[turn.index(THINK_END_ID) + 1 :] if THINK_END_ID in turn else turn
    if THINK_END_ID in done:
        done = done[len(done) - done[::-1].index(THINK_END_ID) :]
    lead, done_lead = _leading_newlines(answer), _leading_newlines(done)
    if done_lead == len(done) and done_lead < lead:
        return answer[done_lead]
    body, written = answer[lead:], done[done_lead:]
    return body[len(written)] if len(written) < len(body) else IM_END_ID


def script_body(turns: Sequence[Sequence[int]]) -> dict[str, Any]:
    """The request-body fragment (for ``extra_body``) that makes the server follow ``turns``.

    ``turns`` holds one id sequence per assistant turn of the conversation, in order (encode
    them with ``Qwen3Tokenizer.encode_trusted`` so ``<think>`` and ``<tool_call>`` are control
    ids), each ending with ``<|im_end|>`` when the turn should end there.
    """
    flat: list[int] = []
    for index, turn in enumerate(turns):
        if index:
            flat.append(TURN_SEPARATOR)
        flat.extend(int(t) for t in turn)
    return {"vllm_xargs": {SCRIPT_ARG: flat}}


def _define_processor() -> type:
    """The vLLM logits-processor class (defined only where vLLM is importable)."""
    import torch
    from q3agent_engine_budget import force_logits  # type: ignore[import-not-found]  # the copy
    from vllm.v1.sample.logits_processor import (  # type: ignore[import-not-found]
        AdapterLogitsProcessor,
    )

    class ScriptedTokens(AdapterLogitsProcessor):  # type: ignore[misc]
        """Forces the tokens of the request's ``vllm_xargs`` script (see :func:`forced_token`)."""

        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(
            self, params: Any
        ) -> Callable[[list[int], list[int], torch.Tensor], torch.Tensor] | None:
            script = (params.extra_args or {}).get(SCRIPT_ARG)
            if not script:
                return None
            frozen = [int(t) for t in script]

            def force(
                prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor
            ) -> torch.Tensor:
                forced: torch.Tensor = force_logits(
                    logits, forced_token(prompt_ids, output_ids, frozen)
                )
                return forced

            return force

    return ScriptedTokens


if __name__ == PROCESSOR_MODULE:  # imported by the vLLM server from its copy of this file
    ScriptedTokens = _define_processor()


# ---------------------------------------------------------------------------- the server


def engine_python() -> Path:
    """The engine venv's Python (``$Q3AGENT_ENGINE_VENV``, default ~/.cache/q3agent/engine-venv)."""
    venv = Path(os.environ.get(ENGINE_VENV_ENV) or DEFAULT_ENGINE_VENV).expanduser()
    return venv / "bin" / "python"


def engine_missing_reason() -> str | None:
    """Why the vLLM engine cannot run here, or ``None`` when its venv is installed."""
    python = engine_python()
    if not python.is_file():
        return (
            f"the vLLM engine venv is not installed at {python.parent.parent}: "
            f"run .ci/engines.sh (or set {ENGINE_VENV_ENV})"
        )
    if not any((python.parent.parent / "lib").glob("python3*/site-packages/vllm/__init__.py")):
        return f"{python.parent.parent} has no vllm package: rerun .ci/engines.sh"
    return None


def server_command(model: str | Path, port: int, *, served_model_name: str) -> list[str]:
    """The vLLM command line for a Qwen3 model with everything q3agent uses switched on."""
    return [
        str(engine_python()),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        served_model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "40960",
        "--enforce-eager",
        "--block-size",
        "32",
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
        "--reasoning-parser",
        "qwen3",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--logits-processors",
        f"{PROCESSOR_MODULE}:ScriptedTokens",
        # after the script, so a budget's early-stop ids win over the scripted reasoning
        f"{BUDGET_MODULE}:VLLMThinkingBudget",
    ]


class ServerProcess(abc.ABC):
    """What a test engine server in a subprocess has in common: health, readiness, its log, stop.

    Subclasses set ``base_url``, ``log_path`` and ``_process`` (started in its own process
    group) and name the engine in ``engine_name`` for error messages.
    """

    engine_name = "the engine"
    health_timeout = 2.0
    ready_timeout = 420.0
    base_url: str
    log_path: Path
    _process: subprocess.Popen[bytes] | None
    started_at: float | None = None
    ready_after: float | None = None
    """Seconds from :meth:`start` to a healthy server (where ``started_at`` was set)."""

    def healthy(self) -> bool:
        """Whether ``/health`` answers 200."""
        try:
            url = f"{self.base_url}/health"
            with urllib.request.urlopen(url, timeout=self.health_timeout) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for ``/health``; raise with the log's tail if the server dies or times out."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.engine_name} exited with code {self._process.returncode} before it "
                    f"was ready; its log ({self.log_path}) ends:\n{self.log_tail()}"
                )
            if self.healthy():
                if self.started_at is not None:
                    self.ready_after = time.monotonic() - self.started_at
                return
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(
            f"{self.engine_name} was not ready after {timeout:.0f} s; its log ({self.log_path}) "
            f"ends:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _end_process_group(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 30 s, then kill what is left.

        The engine's children (engine core, scheduler, detokenizer) may outlive the front end.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server and its children."""
        self._end_process_group()

    @abc.abstractmethod
    def start(self) -> None:
        """Launch the server (returns at once; see :meth:`wait_ready`)."""

    def close(self) -> None:
        """Stop the server and remove what it leaves behind (its log where that is wanted)."""
        self.stop()

    def serve(self) -> int:
        """Start, then serve until SIGTERM/SIGINT (exit 0) or the server dies (exit 1, its log's
        tail on stderr); close it in any case. A slow ``/health`` under load does not end it:
        only the server's own exit does."""

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        # stop the server on SIGTERM, and on SIGINT even when started in the background
        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, interrupt)
        self.start()
        try:
            self.wait_ready()
            print(f"{self.engine_name} ready at {self.base_url} (log: {self.log_path})", flush=True)
            process = self._process
            while process is not None and process.poll() is None:
                time.sleep(5)
            if process is not None:
                print(
                    f"{self.engine_name} exited with code {process.returncode}; its log "
                    f"({self.log_path}) ends:\n{self.log_tail()}",
                    file=sys.stderr,
                )
                return 1
        except KeyboardInterrupt:
            pass
        finally:
            self.close()
        return 0


class VLLMServer(ServerProcess):
    """A vLLM OpenAI-compatible server in a subprocess, with :class:`ScriptedTokens` loaded.

    ``start()`` launches it in its own process group (log in ``log_path``), ``wait_ready()``
    polls ``/health``, ``stop()`` ends the group. Use it as a context manager. About 4 GiB of
    RAM and 1.5–2.5 minutes to start on two CPU cores.
    """

    engine_name = "vLLM"

    def __init__(
        self,
        model: str | Path,
        *,
        port: int,
        served_model_name: str = "tiny-qwen3",
        log_path: str | Path | None = None,
    ) -> None:
        self.model = Path(model)
        self.port = port
        self.served_model_name = served_model_name
        self.base_url = f"http://127.0.0.1:{port}"
        self._workdir = Path(tempfile.mkdtemp(prefix="q3agent-vllm-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the server (returns at once; see :meth:`wait_ready`)."""
        reason = engine_missing_reason()
        if reason:
            raise RuntimeError(reason)
        self._workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(__file__, self._workdir / f"{PROCESSOR_MODULE}.py")
        budget_file = Path(__file__).parents[1] / "serving" / "engine_budget.py"
        shutil.copyfile(budget_file, self._workdir / f"{BUDGET_MODULE}.py")
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "PYTHONPATH": str(self._workdir),
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env.pop("VIRTUAL_ENV", None)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                server_command(self.model, self.port, served_model_name=self.served_model_name),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._workdir,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Stop the server and its children (SIGTERM to the group, SIGKILL after 30 s).

        The temporary work folder goes too, also when the server had already exited or never
        started, unless ``log_path`` lives in it (then the log is kept for reading).
        """
        self._end_process_group()
        if self._workdir not in self.log_path.parents:  # keep a log that lives there
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> VLLMServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m q3agent.testing.vllm_server MODEL_DIR PORT``: serve until Ctrl-C/SIGTERM.

    For running the engine tests or ``benchmarks/engine_bench.py`` against one long-lived
    server (``Q3AGENT_VLLM_DENSE_URL=http://127.0.0.1:PORT``) instead of one per session.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m q3agent.testing.vllm_server MODEL_DIR PORT", file=sys.stderr)
        return 2
    return VLLMServer(args[0], port=int(args[1])).serve()


if __name__ == "__main__":
    raise SystemExit(main())
