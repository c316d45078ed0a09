"""Running BFCL v3 on a runtime: single-turn FC and prompt modes, multi-turn through the agent.

Single-turn entries need no loop: the prompt is rendered once (the functions in Qwen3's tools
block in FC mode; BFCL's Python-call system prompt in prompt mode), generated once under the
thinking policy's mode and budget, parsed, and scored by BFCL's checker. Multi-turn entries run
through an :class:`~q3agent.agent.AgentSession` whose tools are BFCL's environments: each user
turn runs until the model stops calling tools (at most BFCL's per-turn step limit), and the
functions ``miss_func`` holds back are added at their turn.

Entries run concurrently (bounded), so a prefix-caching runtime shares the tools block and the
history of entries with the same functions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio

from q3agent.eval.bfcl_convert import call_string, decoded_calls, to_qwen3_tools
from q3agent.eval.bfcl_data import (
    MAX_STEPS_PER_TURN,
    BfclEntry,
    bfcl_module,
    load_category,
    resolve_categories,
)
from q3agent.eval.bfcl_envs import BfclEnvironment
from q3agent.eval.oracle import HOLDOUT_MESSAGE, bind_entry
from q3agent.eval.scoring import (
    CategoryScore,
    Verdict,
    check_ast,
    check_multi_turn,
    v3_summary,
)
from q3agent.policy.base import Policy, RunState, StepMode, ThinkingCapability
from q3agent.policy.builtin import AlwaysThink, NeverThink, PlanAct
from q3agent.qwen3.chat_format import render_ids
from q3agent.qwen3.messages import ToolCall, dump_messages, to_messages
from q3agent.qwen3.parsing import parse
from q3agent.qwen3.pythonic import parse_pythonic
from q3agent.serving.base import GenerationRequest, Runtime, Usage
from q3agent.serving.budget import BudgetedGeneration, generate_with_budget

__all__ = [
    "MAX_STEPS_PER_TURN",
    "EntryResult",
    "EvalConfig",
    "EvalReport",
    "run_bfcl",
    "run_budget_sweep",
    "run_entry",
]

Mode = Literal["fc", "prompt"]
Thinking = Literal["on", "off", "policy"]


@dataclass(frozen=True)
class EvalConfig:
    """What to run and how.

    ``thinking``: ``off`` (non-thinking), ``on`` (every step thinks, under ``thinking_budget``
    reasoning tokens when set) or ``policy`` (q3agent's default :class:`PlanAct`). ``mode``
    applies to single-turn categories; multi-turn categories always use native tool calls
    (the agent loop). ``max_tokens`` and ``temperature`` override the Qwen3 sampling presets.
    """

    categories: tuple[str, ...] = ("all",)
    model: str | None = None
    mode: Mode = "fc"
    thinking: Thinking = "off"
    thinking_budget: int | None = None
    limit: int | None = None
    concurrency: int = 64
    max_tokens: int | None = None
    temperature: float | None = None
    max_steps_per_turn: int = MAX_STEPS_PER_TURN


@dataclass
class EntryResult:
    """One scored entry: its verdict and everything needed to see why."""

    id: str
    category: str
    verdict: Verdict
    prompt: str = ""
    raw_output: Any = None
    """Single-turn: the completion text. Multi-turn: per turn, per step, the completion."""
    calls: Any = None
    """Single-turn: ``[{name: args}]``. Multi-turn: per turn, per step, ``name(a=1)`` strings."""
    messages: list[dict[str, Any]] | None = None
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of the results file)."""
        return {
            "id": self.id,
            "category": self.category,
            **self.verdict.to_json(),
            "prompt": self.prompt,
            "raw_output": self.raw_output,
            "calls": self.calls,
            "messages": self.messages,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "cached_tokens": self.usage.cached_tokens,
                "reasoning_tokens": self.usage.reasoning_tokens,
                "requests": self.usage.requests,
            },
            "latency_s": round(self.latency_s, 4),
        }


@dataclass
class EvalReport:
    """Scores of one run: per category, BFCL v3's groups and overall, and throughput."""

    config: EvalConfig
    model_name: str
    scores: dict[str, CategoryScore]
    summary: dict[str, Any]
    elapsed_s: float
    results: list[EntryResult] = field(default_factory=list, repr=False)

    @property
    def entries_per_s(self) -> float:
        """Entries scored per second of wall time."""
        return len(self.results) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Scores and settings as a JSON-ready dict (``scores.json``)."""
        return {
            "model": self.model_name,
            "config": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.config).items()
            },
            "categories": {
                name: {"accuracy": s.accuracy, "correct": s.correct, "total": s.total}
                for name, s in self.scores.items()
            },
            "summary": self.summary,
            "elapsed_s": round(self.elapsed_s, 3),
            "entries_per_s": round(self.entries_per_s, 3),
        }

    def table(self) -> str:
        """A plain-text table of the scores."""
        lines = [f"BFCL v3 — {self.model_name}", f"{'category':<26}{'accuracy':>10}{'n':>7}"]
        for name, s in self.scores.items():
            lines.append(f"{name:<26}{s.accuracy * 100:>9.2f}%{s.total:>7}")
        for key in ("non_live", "live", "multi_turn", "overall"):
            value = self.summary.get(key)
            if value is not None:
                lines.append(f"{key.upper():<26}{value * 100:>9.2f}%")
        if not self.summary.get("complete"):
            lines.append("(not every v3 category was run in full: the overall figure covers")
            lines.append(" only what ran and is not comparable with the leaderboard)")
        lines.append(
            f"{len(self.results)} entries in {self.elapsed_s:.1f}s "
            f"({self.entries_per_s:.1f} entries/s)"
        )
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``scores.json`` and one JSONL of entries per category under ``out_dir``."""
        root = Path(out_dir)
        root.mkdir(parents=True, exist_ok=True)
        by_category: dict[str, list[EntryResult]] = {}
        for result in self.results:
            by_category.setdefault(result.category, []).append(result)
        for category, results in by_category.items():
            with (root / f"{category}.jsonl").open("w", encoding="utf-8") as fh:
                for result in results:
                    fh.write(json.dumps(result.to_json(), ensure_ascii=False, default=str) + "\n")
        (root / "scores.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return root


# --------------------------------------------------------------------------------------------
# Thinking policy and sampling


@dataclass(frozen=True)
class _Sampling:
    """Wraps a policy to apply the run's sampling overrides to every step."""

    inner: Policy
    max_tokens: int | None
    temperature: float | None

    def decide(self, state: RunState) -> StepMode:
        mode = self.inner.decide(state)
        sampling = mode.sampling
        if self.max_tokens is not None:
            sampling = sampling.with_(max_tokens=self.max_tokens)
        if self.temperature is not None:
            sampling = sampling.with_(temperature=self.temperature)
        return replace(mode, sampling=sampling)


def policy_for(config: EvalConfig) -> Policy:
    """The thinking policy a run uses (``--thinking`` and ``--thinking-budget``)."""
    inner: Policy
    if config.thinking == "off":
        inner = NeverThink()
    elif config.thinking == "on":
        inner = AlwaysThink(config.thinking_budget)
    else:
        inner = PlanAct()
    if config.max_tokens is None and config.temperature is None:
        return inner
    return _Sampling(inner, config.max_tokens, config.temperature)


def _capability(model: str | None) -> ThinkingCapability:
    if model is None:
        return "hybrid"
    from q3agent.qwen3.models import get_model

    try:
        return get_model(model).thinking
    except Exception:  # unknown names and paths: assume a hybrid Qwen3
        return "hybrid"


# --------------------------------------------------------------------------------------------
# Single turn


def _prompt_mode_messages(entry: BfclEntry) -> list[dict[str, Any]]:
    """The entry's messages with BFCL's Python-call system prompt, as BFCL's generation adds it."""
    utils = bfcl_module("model_handler.utils")
    messages = [dict(m) for m in entry.turns[0]]
    return list(utils.system_prompt_pre_processing_chat_model(messages, entry.functions, entry.id))


def _decode_prompt_mode(entry: BfclEntry, text: str) -> list[ToolCall]:
    """Calls from a prompt-mode completion (BFCL's own decoder for Java and JavaScript)."""
    if entry.language == "python":
        return [c for c in parse_pythonic(text) if isinstance(c, ToolCall)]
    utils = bfcl_module("model_handler.utils")
    enums = bfcl_module("constants.enums")
    fmt = enums.ReturnFormat.JAVA if entry.language == "java" else enums.ReturnFormat.JAVASCRIPT
    try:
        decoded = utils.default_decode_ast_prompting(parse(text).content, fmt)
    except Exception:  # BFCL counts an undecodable answer as no call
        return []
    calls: list[ToolCall] = []
    for item in decoded if isinstance(decoded, list) else []:
        if isinstance(item, dict):
            for name, args in item.items():
                if isinstance(args, dict):
                    calls.append(ToolCall(name=str(name), arguments=args, index=len(calls)))
    return calls


async def _run_single_turn(
    entry: BfclEntry, runtime: Runtime, config: EvalConfig, policy: Policy
) -> EntryResult:
    tok = runtime.tokenizer
    if config.mode == "prompt":
        messages: list[dict[str, Any]] = _prompt_mode_messages(entry)
        tools: list[dict[str, Any]] | None = None
    else:
        messages = [dict(m) for m in entry.turns[0]]
        tools = to_qwen3_tools(entry.functions)
    capability = _capability(config.model)
    task = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    mode = policy.decide(
        RunState(
            step=0,
            task_tokens=tok.count(task),
            num_tools=len(entry.functions),
            capability=capability,
            tool_calls_so_far=0,
            failures_so_far=0,
            last_step_failed=False,
            last_step_had_calls=False,
            last_thinking_hit_budget=False,
            thinking_steps=0,
            thinking_tokens_used=0,
            max_steps=1,
        )
    )
    enable_thinking = mode.thinking if capability == "hybrid" else None
    typed = to_messages(messages)
    prompt_ids = render_ids(tok, typed, tools, enable_thinking=enable_thinking)
    request = GenerationRequest(
        prompt_ids=tuple(prompt_ids),
        sampling=mode.sampling,
        messages=tuple(typed),
        tools=tuple(tools or ()),
        enable_thinking=enable_thinking,
        request_id=entry.id,
    )
    started = time.perf_counter()
    generation: BudgetedGeneration | None = None
    async for item in generate_with_budget(
        runtime, request, mode.budget if mode.thinking else None
    ):
        if isinstance(item, BudgetedGeneration):
            generation = item
    assert generation is not None
    latency = time.perf_counter() - started
    if config.mode == "prompt":
        calls = _decode_prompt_mode(entry, generation.text)
    else:
        calls = list(parse(generation.text).tool_calls)
    return EntryResult(
        id=entry.id,
        category=entry.category,
        verdict=check_ast(entry, calls),
        prompt=tok.decode(prompt_ids),
        raw_output=generation.text,
        calls=decoded_calls(calls),
        usage=generation.usage,
        latency_s=latency,
    )


# --------------------------------------------------------------------------------------------
# Multi turn


async def _run_multi_turn(
    entry: BfclEntry, runtime: Runtime, config: EvalConfig, policy: Policy
) -> EntryResult:
    from q3agent.agent import Agent

    env = BfclEnvironment.create(entry)
    agent = Agent(
        config.model,
        runtime=runtime,
        tools=env.tools(entry.functions),
        policy=policy,
        max_steps=config.max_steps_per_turn + 1,
        max_tool_errors=config.max_steps_per_turn + 1,
        tool_timeout=None,
        max_output_chars=1_000_000,
        parallel_tool_calls=False,  # BFCL executes a step's calls in order on one state
        context_window=None,  # the benchmark fixes the conversation; never summarise it
    )
    session = agent.session()
    turns: list[list[list[str]]] = []
    raw: list[list[str]] = []
    usage = Usage()
    force_quit = False
    failure: Verdict | None = None
    started = time.perf_counter()
    for turn, messages in enumerate(entry.turns):
        if turn in entry.missed_functions:
            session.add_tools(env.tools(entry.missed_functions[turn]))
            message = HOLDOUT_MESSAGE
        else:
            message = str(messages[-1]["content"])
        result = await session.arun(message)
        usage += result.usage
        turns.append(
            [
                [call_string(c) for c in step.tool_calls if isinstance(c, ToolCall)]
                for step in result.steps
            ]
        )
        raw.append(
            [
                (f"<think>\n{step.reasoning}\n</think>\n\n" if step.reasoning else "")
                + step.content
                for step in result.steps
            ]
        )
        if result.error is not None:
            failure = Verdict(
                False, [f"inference error: {result.detail}"], "multi_turn:inference_error"
            )
            break
        if result.status in ("step_limit", "usage_limit"):
            force_quit = True
            break
    latency = time.perf_counter() - started
    verdict = failure or check_multi_turn(entry, turns, force_quit=force_quit)
    return EntryResult(
        id=entry.id,
        category=entry.category,
        verdict=verdict,
        raw_output=raw,
        calls=turns,
        messages=dump_messages(session.messages),
        usage=usage,
        latency_s=latency,
    )


async def run_entry(
    entry: BfclEntry, runtime: Runtime, config: EvalConfig, policy: Policy | None = None
) -> EntryResult:
    """Run and score one entry (binds it for oracle runtimes)."""
    policy = policy or policy_for(config)
    mode: Mode = "fc" if entry.is_multi_turn else config.mode
    with bind_entry(entry, mode):
        if entry.is_multi_turn:
            return await _run_multi_turn(entry, runtime, config, policy)
        return await _run_single_turn(entry, runtime, config, policy)


# --------------------------------------------------------------------------------------------
# Whole runs


async def run_bfcl(
    runtime: Runtime,
    config: EvalConfig,
    *,
    entries: Sequence[BfclEntry] | None = None,
    on_result: Callable[[EntryResult], None] | None = None,
) -> EvalReport:
    """Run the configured categories (or the given entries) concurrently and score them."""
    if entries is None:
        loaded: list[BfclEntry] = []
        for category in resolve_categories(config.categories):
            loaded.extend(load_category(category, config.limit))
        entries = loaded
    policy = policy_for(config)
    results: list[EntryResult | None] = [None] * len(entries)
    limiter = anyio.CapacityLimiter(max(1, config.concurrency))

    async def one(index: int, entry: BfclEntry) -> None:
        async with limiter:
            try:
                result = await run_entry(entry, runtime, config, policy)
            except Exception as exc:  # one failing request must not end a long run
                error = f"{type(exc).__name__}: {exc}"
                verdict = Verdict(False, [f"inference error: {error}"], "inference_error")
                result = EntryResult(entry.id, entry.category, verdict)
        results[index] = result
        if on_result is not None:
            on_result(result)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for index, entry in enumerate(entries):
            tg.start_soon(one, index, entry)
    elapsed = time.perf_counter() - started
    done = [r for r in results if r is not None]
    scores: dict[str, CategoryScore] = {}
    for category in dict.fromkeys(e.category for e in entries):
        mine = [r for r in done if r.category == category]
        scores[category] = CategoryScore(category, sum(r.verdict.valid for r in mine), len(mine))
    summary = v3_summary(scores)
    if config.limit is not None:
        summary["complete"] = False
    return EvalReport(config, runtime.model_name, scores, summary, elapsed, done)


async def run_budget_sweep(
    runtime: Runtime, config: EvalConfig, budgets: Sequence[int]
) -> list[tuple[int, EvalReport]]:
    """Accuracy against thinking budget (the Qwen3 report's Figure 2): one run per budget."""
    entries: list[BfclEntry] = []
    for category in resolve_categories(config.categories):
        entries.extend(load_category(category, config.limit))
    out: list[tuple[int, EvalReport]] = []
    for budget in budgets:
        run_config = replace(config, thinking="on", thinking_budget=budget)
        out.append((budget, await run_bfcl(runtime, run_config, entries=entries)))
    return out


def sweep_table(sweep: Sequence[tuple[int, EvalReport]]) -> str:
    """Accuracy per budget as a text table (overall and per category)."""
    if not sweep:
        return ""
    categories = list(sweep[0][1].scores)
    header = f"{'budget':>8}{'overall':>10}" + "".join(f"{c[:14]:>16}" for c in categories)
    lines = ["Thinking budget sweep (accuracy %)", header]
    for budget, report in sweep:
        overall = report.summary.get("overall")
        row = f"{budget:>8}{(overall or 0) * 100:>10.2f}"
        row += "".join(f"{report.scores[c].accuracy * 100:>16.2f}" for c in categories)
        lines.append(row)
    return "\n".join(lines)
