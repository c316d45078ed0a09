"""Runtimes and doubles for tests: Qwen3 stand-ins that speak the real chat format.

Use them in your own tests of agents and tools; none needs a GPU or a download.

* :class:`ScriptedRuntime` answers with scripted completions in order and
  :class:`FunctionRuntime` with what a function of the request returns
  (:mod:`q3agent.testing.runtimes`); both take and return the real Qwen3 token ids, and
  both (like :class:`SchemaRuntime`) take the keyword options of :class:`StandInOptions`.
* :class:`SGLangEngineDouble` stands in for ``sglang.Engine`` where SGLang cannot run
  (:mod:`q3agent.testing.sglang_double`).
* :func:`make_tiny_qwen3` writes a tiny random Qwen3 checkpoint (:mod:`q3agent.testing.models`).
* :class:`SchemaRuntime` calls every tool with schema-valid arguments, no script needed
  (:mod:`q3agent.testing.schema_runtime`).
* :mod:`q3agent.testing.http_server` is a scripted HTTP server for the runtimes' HTTP clients.
* :mod:`q3agent.testing.vllm_server` and :mod:`q3agent.testing.sglang_server` start the real
  vLLM and SGLang CPU engines for engine tests and benchmarks, with their scripted-token
  processors (imported on demand, not by this package; the SGLang CPU shims live in
  ``sglang_cpu_shims/``).
"""

from q3agent.testing.models import make_tiny_qwen3
from q3agent.testing.runtimes import (
    Completion,
    CompletionFn,
    FunctionRuntime,
    RecordedRequest,
    ScriptedRuntime,
    ScriptExhaustedError,
    ScriptFileError,
    StandInOptions,
    load_completions,
)
from q3agent.testing.schema_runtime import SchemaRuntime, example_arguments, example_value
from q3agent.testing.sglang_double import SGLangEngineDouble

__all__ = [
    "Completion",
    "CompletionFn",
    "FunctionRuntime",
    "RecordedRequest",
    "SGLangEngineDouble",
    "SchemaRuntime",
    "ScriptExhaustedError",
    "ScriptFileError",
    "ScriptedRuntime",
    "StandInOptions",
    "example_arguments",
    "example_value",
    "load_completions",
    "make_tiny_qwen3",
]
