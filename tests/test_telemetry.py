"""OpenTelemetry GenAI spans recorded for a run (SDK with an in-memory exporter)."""

from __future__ import annotations

import json

import pytest

from q3agent import Agent, NeverThink, tool
from q3agent.telemetry import emit_run_spans
from q3agent.testing.runtimes import ScriptedRuntime

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk not installed")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First.
        b: Second.
    """
    return a + b


def test_a_run_becomes_agent_chat_and_tool_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    call = json.dumps({"name": "add", "arguments": {"a": 1, "b": 2}})
    runtime = ScriptedRuntime([f"<tool_call>\n{call}\n</tool_call>", "3"])
    result = Agent(runtime=runtime, tools=[add], policy=NeverThink()).run("1+2?")

    assert emit_run_spans(result, model="Qwen3-8B", tracer=provider.get_tracer("test"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"invoke_agent Qwen3-8B", "chat Qwen3-8B", "execute_tool add"}
    run = spans["invoke_agent Qwen3-8B"]
    assert run.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert run.attributes["q3agent.run.status"] == "answer"
    tool_span = spans["execute_tool add"]
    assert tool_span.parent is not None
    assert tool_span.parent.span_id == run.context.span_id
    assert tool_span.attributes["gen_ai.tool.call.id"] == result.tool_calls[0].id
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    assert len(chats) == 2
    assert all(c.start_time <= c.end_time for c in chats)
