"""A real SGLang CPU server (and engine) for tests and benchmarks, and a scripted-token processor.

SGLang 0.5.23's own CPU engine runs on a CPU-only machine given two import shims (see
``sglang_cpu_shims/``; ``.ci/sglang.sh`` installs the venv). This module starts it the way the
SGLang tier does, and makes a tiny random Qwen3 write what a test needs: :class:`ScriptedTokens`
is an SGLang ``CustomLogitProcessor`` that forces, per request, the tokens of a script given in
``custom_params`` (``{"q3agent_script": [...]}``), one token sequence per assistant turn, with
the same turn/position logic as the vLLM tier's processor
(:func:`q3agent.testing.vllm_server.forced_token`). The server must run with
``--enable-custom-logit-processor`` and ``--disable-overlap-schedule`` (the overlap scheduler
samples a token before the previous one is appended, so a token-by-token script lags by one).

:class:`SGLangServer` runs ``python -m sglang.launch_server`` from the SGLang venv in its own
process group with the shims on its path, waits for ``/health`` and stops the group.
:func:`engine_env` gives the environment in which ``sglang.Engine`` runs in-process (the
embedded tests run under the SGLang venv's Python with it). This file imports only the
standard library at the top; the processor class is built on first access, where sglang is
importable (the server unpickles it by reference, as
``q3agent.testing.sglang_server.ScriptedTokens``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from q3agent.testing.vllm_server import TURN_SEPARATOR, ServerProcess, forced_token

SCRIPT_PARAM = "q3agent_script"
"""The ``custom_params`` key holding the scripted token ids (turns separated by -1)."""
SGLANG_VENV_ENV = "Q3AGENT_SGLANG_VENV"
DEFAULT_SGLANG_VENV = Path.home() / ".cache" / "q3agent" / "sglang-venv"
READY_STAMP = ".q3agent-ready"
"""Written by ``.ci/sglang.sh`` only after the venv passed its import smoke test."""
SHIMS_DIR = Path(__file__).with_name("sglang_cpu_shims")
KERNEL_CALLS_ENV = "Q3AGENT_SGL_KERNEL_CALLS"
"""File the ``sgl_kernel`` shim appends a name to when a shimmed function is called."""
PROCESSOR_PATH = "q3agent.testing.sglang_server"

CPU_FLAGS: tuple[str, ...] = (
    "--device",
    "cpu",
    "--attention-backend",
    "torch_native",
    "--sampling-backend",
    "pytorch",
    "--disable-cuda-graph",
    "--skip-server-warmup",
    "--max-total-tokens",
    "65536",
    "--max-running-requests",
    "16",
    "--chunked-prefill-size",
    "4096",
    "--enable-custom-logit-processor",
    "--disable-overlap-schedule",
)
"""The SGLang CPU engine's start flags here. ``--max-total-tokens`` is required: without it
the KV pool is sized from RAM (11 GB, a minute to allocate)."""

ENGINE_KWARGS: dict[str, Any] = {
    "device": "cpu",
    "attention_backend": "torch_native",
    "sampling_backend": "pytorch",
    "disable_cuda_graph": True,
    "skip_server_warmup": True,
    "max_total_tokens": 65536,
    "max_running_requests": 16,
    "chunked_prefill_size": 4096,
    "enable_custom_logit_processor": True,
    "disable_overlap_schedule": True,
}
"""The same settings as :data:`CPU_FLAGS`, as ``sglang.Engine`` keyword arguments."""


# ---------------------------------------------------------------------------- the processor


def scripted_processor_str() -> str:
    """:class:`ScriptedTokens` serialised for ``custom_logit_processor`` (no sglang needed).

    SGLang loads the string with ``dill.loads``; a pickled global reference makes it import
    this module and take the class from it.
    """
    ref = f"c{PROCESSOR_PATH}\nScriptedTokens\n.".encode()
    return json.dumps({"callable": ref.hex()})


def script_params(turns: Sequence[Sequence[int]]) -> dict[str, Any]:
    """``custom_params`` that make the processor follow ``turns`` (one id list per assistant
    turn, encoded with ``Qwen3Tokenizer.encode_trusted``, each ending with ``<|im_end|>``)."""
    flat: list[int] = []
    for index, turn in enumerate(turns):
        if index:
            flat.append(TURN_SEPARATOR)
        flat.extend(int(t) for t in turn)
    return {SCRIPT_PARAM: flat}


def _define_processor() -> type:
    """The SGLang ``CustomLogitProcessor`` subclass (defined only where sglang is importable)."""
    import torch
    from sglang.srt.sampling.custom_logit_processor import (
        CustomLogitProcessor,
    )

    class ScriptedTokens(CustomLogitProcessor):  # type: ignore[misc]
        """Forces the tokens of each request's ``custom_params`` script (see
        :func:`~q3agent.testing.vllm_server.forced_token`); requests without one pass."""

        def __call__(
            self, logits: torch.Tensor, custom_param_list: list[dict[str, Any]] | None = None
        ) -> torch.Tensor:
            for row, params in enumerate(custom_param_list or ()):
                script = (params or {}).get(SCRIPT_PARAM)
                req = (params or {}).get("__req__")
                if not script or req is None:
                    continue
                token = forced_token(req.origin_input_ids, req.output_ids, script)
                if token is None or token >= logits.shape[-1]:
                    continue
                logits[row, :] = float("-inf")
                logits[row, token] = 0.0
            return logits

    ScriptedTokens.__module__ = PROCESSOR_PATH
    return ScriptedTokens


_defined: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "ScriptedTokens":
        if name not in _defined:
            _defined[name] = _define_processor()
        return _defined[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------- the venv


def sglang_venv() -> Path:
    """The SGLang venv (``$Q3AGENT_SGLANG_VENV``, default ~/.cache/q3agent/sglang-venv)."""
    return Path(os.environ.get(SGLANG_VENV_ENV) or DEFAULT_SGLANG_VENV).expanduser()


def sglang_python() -> Path:
    """The SGLang venv's Python."""
    return sglang_venv() / "bin" / "python"


def sglang_missing_reason() -> str | None:
    """Why the SGLang engine cannot run here, or ``None`` when its venv is installed."""
    venv = sglang_venv()
    if not sglang_python().is_file() or not (venv / READY_STAMP).is_file():
        return (
            f"the SGLang CPU engine venv is not installed at {venv}: run .ci/sglang.sh "
            f"(or set {SGLANG_VENV_ENV})"
        )
    return None


def engine_env(workdir: Path, kernel_calls: Path | None = None) -> dict[str, str]:
    """The environment SGLang runs in here: CPU engine on, the shims and q3agent importable.

    ``workdir`` gets a ``q3agent`` link to this package so the server (and an embedded
    engine's scheduler processes) can import the scripted processor without q3agent installed.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / "q3agent"
    if not link.exists():
        link.symlink_to(Path(__file__).resolve().parents[1], target_is_directory=True)
    env = {
        **os.environ,
        "SGLANG_USE_CPU_ENGINE": "1",
        "PYTHONPATH": os.pathsep.join([str(SHIMS_DIR), str(workdir)]),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SGLANG_DISABLE_REQUEST_LOGGING": "1",
    }
    if kernel_calls is not None:
        env[KERNEL_CALLS_ENV] = str(kernel_calls)
    env.pop("VIRTUAL_ENV", None)
    return env


def server_command(model: str | Path, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The ``sglang.launch_server`` command line for the CPU engine, plus ``extra`` flags."""
    return [
        str(sglang_python()),
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(model),
        *CPU_FLAGS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


def kernel_calls(path: Path) -> list[str]:
    """The shimmed ``sgl_kernel`` functions called so far (an empty list is the only good one)."""
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    except FileNotFoundError:
        return []


class SGLangServer(ServerProcess):
    """An SGLang CPU server in a subprocess (``/generate``, the OpenAI API, ``/flush_cache``).

    ``extra_args`` are added to :data:`CPU_FLAGS` (e.g. ``["--context-length", "4096"]``,
    ``["--json-model-override-args", ...]``). ``start()`` launches it in its own process group,
    ``wait_ready()`` polls ``/health``, ``stop()`` ends the group; ``kernel_calls()`` lists the
    shimmed kernels it called (must stay empty). About 2.8 GB RSS; ready in 30 s on a quiet
    2-core machine, minutes under load. Use it as a context manager.
    """

    engine_name = "SGLang"
    health_timeout = 5.0
    ready_timeout = 600.0

    def __init__(
        self,
        model: str | Path,
        *,
        port: int,
        extra_args: Sequence[str] = (),
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model = Path(model)
        self.port = port
        self.extra_args = list(extra_args)
        self.base_url = f"http://127.0.0.1:{port}"
        self._workdir = Path(tempfile.mkdtemp(prefix="q3agent-sglang-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "server.log"
        self.kernel_calls_path = self._workdir / "sgl_kernel_calls.txt"
        self._extra_env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    def start(self) -> None:
        """Launch the server (returns at once; see :meth:`wait_ready`)."""
        reason = sglang_missing_reason()
        if reason:
            raise RuntimeError(reason)
        env = {**engine_env(self._workdir, self.kernel_calls_path), **self._extra_env}
        self.started_at = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                server_command(self.model, self.port, self.extra_args),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._workdir,
                start_new_session=True,
            )

    def kernel_calls(self) -> list[str]:
        """Shimmed ``sgl_kernel`` functions this server called (see ``sglang_cpu_shims``)."""
        return kernel_calls(self.kernel_calls_path)

    def stop(self) -> None:
        """Stop the server and its children (SIGTERM to the group, SIGKILL after 30 s)."""
        self._end_process_group()

    def cleanup(self) -> None:
        """Stop, then remove the work directory (unless the log lives there and is wanted)."""
        self.stop()
        if self._workdir not in self.log_path.parents:
            shutil.rmtree(self._workdir, ignore_errors=True)

    close = cleanup

    def __enter__(self) -> SGLangServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m q3agent.testing.sglang_server MODEL_DIR PORT [SGLANG FLAGS...]``: serve
    until Ctrl-C/SIGTERM (one long-lived server for repeated test or benchmark runs)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print(
            "usage: python -m q3agent.testing.sglang_server MODEL_DIR PORT [FLAGS...]",
            file=sys.stderr,
        )
        return 2
    return SGLangServer(args[0], port=int(args[1]), extra_args=args[2:]).serve()


if __name__ == "__main__":
    raise SystemExit(main())
