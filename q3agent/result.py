"""What a run returns: the answer, one record per step, usage, and how the run ended."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from q3agent.qwen3.messages import Message, ToolCall, ToolCallError, dump_messages
from q3agent.tools.executor import ToolResult
from q3agent.types import Usage

RunStatus = Literal["answer", "truncated", "step_limit", "usage_limit", "cancelled", "error"]
"""``answer``: the model answered; ``truncated``: it answered, but the answer was cut at the
completion-token limit (``max_tokens``, finish ``length``); ``step_limit``/``usage_limit``: a
limit stopped the run; ``cancelled``: the driving task was cancelled; ``error``: a runtime or
retry budget failed."""


@dataclass(frozen=True, slots=True)
class UsageLimits:
    """Caps on a run; reaching one ends the run with status ``usage_limit``."""

    max_requests: int | None = None
    max_total_tokens: int | None = None
    max_completion_tokens: int | None = None

    def exceeded(self, usage: Usage) -> str | None:
        """A sentence naming the limit ``usage`` has reached, or ``None``."""
        checks = (
            (self.max_requests, usage.requests, "model requests"),
            (self.max_total_tokens, usage.total_tokens, "total tokens"),
            (self.max_completion_tokens, usage.completion_tokens, "completion tokens"),
        )
        for limit, value, what in checks:
            if limit is not None and value >= limit:
                return f"reached the limit of {limit} {what} ({value} used)"
        return None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One model step: its mode and why, what it cost, what it said and what tools did."""

    index: int
    thinking: bool
    budget: int | None
    reason: str
    usage: Usage
    latency_s: float
    """Wall time of the model request(s) of this step."""
    reasoning: str | None
    content: str
    tool_calls: tuple[ToolCall | ToolCallError, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()
    hit_budget: bool = False
    """The thinking reached its budget and was closed with the early-stop text."""
    finish_reason: str = "stop"
    prompt_diverged_at: int | None = None
    """Where the prompt stopped being a prefix of the previous one (template re-render)."""
    redone: bool = False
    """This step's draft answer was discarded by the policy and regenerated with thinking."""
    started_at: float = 0.0
    """Wall-clock start of the step (``time.time()``), for traces and spans."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tool outputs as their text)."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["usage"] = asdict(self.usage)
        data["tool_calls"] = [_call_json(c) for c in self.tool_calls]
        data["tool_results"] = [
            {
                "call_id": r.call_id,
                "name": r.name,
                "content": r.content,
                "is_error": r.is_error,
                "error_kind": r.error_kind,
                "truncated": r.truncated,
                "duration_s": r.duration_s,
            }
            for r in self.tool_results
        ]
        return data


def _call_json(call: ToolCall | ToolCallError) -> dict[str, Any]:
    """A call as JSON; arguments too deep to serialise are recorded by their raw text."""
    try:
        return call.model_dump(mode="json")
    except (ValueError, RecursionError):  # pydantic: "Maximum serialization depth exceeded"
        data = call.model_dump(mode="python", exclude={"arguments"})
        data["arguments"] = None
        data["arguments_error"] = "nested too deeply to record; see raw"
        return data


@dataclass(slots=True)
class RunResult:
    """The outcome of ``Agent.run``: answer, reasoning, messages, steps, usage and status."""

    answer: str
    reasoning: str | None
    messages: list[Message]
    steps: list[StepRecord]
    usage: Usage
    status: RunStatus
    detail: str = ""
    """Why the run ended when it was not an answer (which limit, what error)."""
    run_id: str = ""
    prompt_ids: tuple[int, ...] = field(default=(), repr=False)
    """The final prompt as token ids (the append-only conversation)."""
    error: BaseException | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the model produced a whole answer (not cut at ``max_tokens``)."""
        return self.status == "answer"

    @property
    def truncated(self) -> bool:
        """Whether the answer was cut at the completion-token limit (status ``truncated``).

        ``answer`` then holds what the model wrote before the limit; raise ``max_tokens``
        (``Agent(max_tokens=...)``, ``--max-tokens``) or ask for a shorter answer.
        """
        return self.status == "truncated"

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every well-formed tool call of the run, in order."""
        return [c for s in self.steps for c in s.tool_calls if isinstance(c, ToolCall)]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary: answer, status, usage, steps and messages."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "detail": self.detail,
            "answer": self.answer,
            "reasoning": self.reasoning,
            "usage": asdict(self.usage),
            "steps": [s.to_json() for s in self.steps],
            "messages": dump_messages(self.messages),
        }

    def write_trace(self, path: str | Path) -> Path:
        """Append one JSON line per step, then a final summary line, to ``path`` (JSONL)."""
        target = Path(path)
        with target.open("a", encoding="utf-8") as fh:
            for step in self.steps:
                line = {"type": "step", "run_id": self.run_id, **step.to_json()}
                fh.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
            summary = {k: v for k, v in self.to_json().items() if k != "steps"}
            fh.write(json.dumps({"type": "run", **summary}, ensure_ascii=False, default=str))
            fh.write("\n")
        return target
