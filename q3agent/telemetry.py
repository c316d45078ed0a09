"""OpenTelemetry GenAI spans for finished runs, when ``opentelemetry-api`` is installed.

Spans are emitted from the run's step records after it ends (real start times and
durations), so the loop itself carries no tracing code and pays nothing when tracing is off.
Names and attributes follow the OpenTelemetry GenAI semantic conventions: an
``invoke_agent`` span per run, a ``chat`` span per model step and an ``execute_tool`` span per
tool call.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from q3agent.result import RunResult
from q3agent.types import Usage

_NS = 1_000_000_000


@functools.cache
def telemetry_available() -> bool:
    """Whether the OpenTelemetry API can be imported (looked up once per process: every run
    asks, and the lookup searches the import path)."""
    return importlib.util.find_spec("opentelemetry") is not None


def _model_call_attributes(operation: str, model: str, usage: Usage) -> dict[str, Any]:
    """The GenAI attributes an ``invoke_agent`` and a ``chat`` span share."""
    return {
        "gen_ai.operation.name": operation,
        "gen_ai.system": "qwen",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
    }


def emit_run_spans(result: RunResult, *, model: str, tracer: Any = None) -> bool:
    """Record ``result`` as GenAI spans on ``tracer`` (default: the global tracer provider).

    Returns False when OpenTelemetry is not installed. With no SDK configured the API's no-op
    tracer drops the spans, so calling this is always safe.
    """
    if not telemetry_available():
        return False
    from opentelemetry import trace

    tracer = tracer or trace.get_tracer("q3agent")
    if not result.steps:
        return True
    start = int(result.steps[0].started_at * _NS)
    last = result.steps[-1]
    tools_s = sum(r.duration_s for r in last.tool_results)
    end = int((last.started_at + last.latency_s + tools_s) * _NS)
    run_span = tracer.start_span(
        f"invoke_agent {model}",
        start_time=start,
        attributes={
            **_model_call_attributes("invoke_agent", model, result.usage),
            "q3agent.run.id": result.run_id,
            "q3agent.run.status": result.status,
        },
    )
    context = trace.set_span_in_context(run_span)
    for step in result.steps:
        step_start = int(step.started_at * _NS)
        step_end = step_start + int(step.latency_s * _NS)
        chat = tracer.start_span(
            f"chat {model}",
            context=context,
            start_time=step_start,
            attributes={
                **_model_call_attributes("chat", model, step.usage),
                "gen_ai.response.finish_reasons": [step.finish_reason],
                "q3agent.step.index": step.index,
                "q3agent.step.thinking": step.thinking,
                "q3agent.step.budget": step.budget if step.budget is not None else -1,
                "q3agent.step.reason": step.reason,
                "q3agent.usage.cached_tokens": step.usage.cached_tokens,
                "q3agent.usage.reasoning_tokens": step.usage.reasoning_tokens,
            },
        )
        chat.end(end_time=step_end)
        for tool_result in step.tool_results:
            span = tracer.start_span(
                f"execute_tool {tool_result.name}",
                context=context,
                start_time=step_end,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool_result.name or "",
                    "gen_ai.tool.call.id": tool_result.call_id,
                    "q3agent.tool.is_error": tool_result.is_error,
                    "q3agent.tool.error_kind": tool_result.error_kind or "",
                },
            )
            span.end(end_time=step_end + int(tool_result.duration_s * _NS))
    run_span.end(end_time=max(end, start))
    return True
