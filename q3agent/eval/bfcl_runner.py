"""Running BFCL v3 on a runtime: single-turn FC and prompt modes, multi-turn through the agent.

Single-turn entries need no loop: the prompt is rendered once (the functions in Qwen3's tools
block in FC mode; BFCL's Python-call system prompt in prompt mode), generated once under the
thinking policy's mode and budget, parsed, and scored by BFCL's checker. Multi-turn entries run
through BFCL's own loop (:mod:`q3agent.eval.bfcl_multi_turn`): each user turn runs until a step
holds no call (at most BFCL's per-turn step limit), calls run on BFCL's executor, and the
functions ``miss_func`` holds back arrive at their turn. Every result carries two verdicts: with
q3agent's parser (what ran) and with BFCL's own decoder on the same completions.

Entries run concurrently (bounded), so a prefix-caching runtime shares the tools block and the
history of entries with the same functions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio

from q3agent.errors import UsageError
from q3agent.eval.bfcl_convert import decoded_calls, to_qwen3_tools
from q3agent.eval.bfcl_data import (
    MAX_STEPS_PER_TURN,
    BfclEntry,
    bfcl_module,
    load_category,
    resolve_categories,
)
from q3agent.eval.bfcl_decode import bfcl_ast_verdict
from q3agent.eval.bfcl_multi_turn import TurnTally, run_multi_turn
from q3agent.eval.bfcl_settings import (
    HOLDOUT_NOTE,
    Holdout,
    SamplingName,
    model_capability,
    request_max_tokens,
    step_sampling,
    yarn_factor,
)
from q3agent.eval.oracle import bind_entry
from q3agent.eval.scoring import CategoryScore, Verdict, check_ast, v3_summary
from q3agent.loop import parse_generation
from q3agent.policy.base import Policy, ThinkingCapability
from q3agent.policy.builtin import AlwaysThink, NeverThink, PlanAct
from q3agent.qwen3.chat_format import render_ids
from q3agent.qwen3.messages import ToolCall, to_messages
from q3agent.qwen3.parsing import parse
from q3agent.qwen3.pythonic import parse_pythonic
from q3agent.serving.base import GenerationRequest, Runtime
from q3agent.serving.budget import BudgetedGeneration, generate_with_budget
from q3agent.types import Usage

__all__ = [
    "MAX_STEPS_PER_TURN",
    "EntryResult",
    "EvalConfig",
    "EvalReport",
    "ResultsLog",
    "ResumeMismatchError",
    "bfcl_eval_version",
    "data_fingerprint",
    "model_capability",
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
    applies to single-turn categories; multi-turn categories always use native tool calls.
    ``sampling``: ``report`` (the Qwen3 presets, 32,768 new tokens) or ``bfcl`` (BFCL's handler:
    temperature 0.001, 4,096 new tokens); ``max_tokens`` and ``temperature`` override either.
    ``holdout``: where ``miss_func``'s held-out functions go (``tools`` block or user
    ``message``). ``context_length`` / ``multi_turn_context_length``: the window requests are
    sized against (single-turn / multi-turn; ``None``: not limited by the harness). ``preset``
    only records which named setting the values came from (see :mod:`bfcl_settings`).
    """

    categories: tuple[str, ...] = ("all",)
    model: str | None = None
    capability: ThinkingCapability | None = None
    """What the model can do when the registry does not know ``model`` (``--capability``)."""
    mode: Mode = "fc"
    thinking: Thinking = "off"
    thinking_budget: int | None = None
    limit: int | None = None
    concurrency: int = 64
    max_tokens: int | None = None
    temperature: float | None = None
    max_steps_per_turn: int = MAX_STEPS_PER_TURN
    sampling: SamplingName = "report"
    holdout: Holdout = "tools"
    context_length: int | None = None
    multi_turn_context_length: int | None = None
    preset: str | None = None

    def describe(self) -> str:
        """The settings in words, printed before a run (which preset, sampling, context…)."""
        thinking: str = self.thinking
        if self.thinking == "on":
            if self.thinking_budget is None:
                thinking = "on (no thinking budget)"
            else:
                thinking = f"on ({self.thinking_budget:,} reasoning tokens per step)"
        if self.sampling == "bfcl":
            sampling = "bfcl (temperature 0.001, up to 4,096 new tokens, context - prompt - 2)"
        else:
            sampling = (
                "report (thinking: temperature 0.6, top-p 0.95, top-k 20; non-thinking: 0.7, "
                "0.8, 20, presence penalty 1.5; up to 32,768 new tokens)"
            )
        overrides = [
            f"{name} {value}"
            for name, value in (("max tokens", self.max_tokens), ("temperature", self.temperature))
            if value is not None
        ]
        if overrides:
            sampling += ", overridden: " + ", ".join(overrides)

        def window(context: int | None) -> str:
            if context is None:
                return "the runtime's own"
            factor = yarn_factor(context)
            yarn = f" (YaRN factor {factor:g} over 32,768)" if factor else ""
            return f"{context:,}{yarn}"

        multi = self.multi_turn_context_length or self.context_length
        holdout = {
            "tools": "tools block (BFCL's FC path)",
            "message": "user message as a Python list (bfcl-eval's local Qwen3 handler)",
        }[self.holdout]
        lines = [
            f"BFCL settings: {'preset ' + self.preset if self.preset else 'no preset'}",
            f"  mode {self.mode} (multi-turn always FC), thinking {thinking}",
            f"  sampling {sampling}",
            f"  context: single-turn {window(self.context_length)}, multi-turn {window(multi)}",
            f"  held-out functions (miss_func): {holdout}",
        ]
        if self.preset == "report":
            lines.append(f"    ({HOLDOUT_NOTE})")
        lines.append(f"  data: bfcl-eval {bfcl_eval_version()}")
        return "\n".join(lines)

    def context_for(self, entry: BfclEntry) -> int | None:
        """The context window an entry's requests must fit in."""
        if entry.is_multi_turn and self.multi_turn_context_length is not None:
            return self.multi_turn_context_length
        return self.context_length


_USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "requests",
)


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
    bfcl_verdict: Verdict | None = None
    """The verdict with BFCL's own decoder on the same completions (``None``: not scored,
    the entry failed before producing any)."""
    bfcl_calls: Any = None
    """What BFCL's decoder read (single-turn: its ``decode_ast`` output; multi-turn: per turn,
    per step, ``name(a=1)`` strings)."""

    @property
    def inference_error(self) -> bool:
        """Whether the entry failed before it could be scored (a request or runtime error)."""
        return (self.verdict.error_type or "").endswith("inference_error")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryResult:
        """The result one line of a results file holds (the inverse of :meth:`to_json`)."""
        bfcl = data.get("bfcl_decoder")
        usage = data.get("usage") or {}
        return cls(
            id=str(data["id"]),
            category=str(data["category"]),
            verdict=Verdict(bool(data["valid"]), data.get("error"), data.get("error_type")),
            prompt=data.get("prompt") or "",
            raw_output=data.get("raw_output"),
            calls=data.get("calls"),
            messages=data.get("messages"),
            usage=Usage(**{k: int(usage.get(k, 0)) for k in _USAGE_FIELDS}),
            latency_s=float(data.get("latency_s") or 0.0),
            bfcl_verdict=None
            if bfcl is None
            else Verdict(bool(bfcl["valid"]), bfcl.get("error"), bfcl.get("error_type")),
            bfcl_calls=None if bfcl is None else bfcl.get("calls"),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of the results file)."""
        bfcl = self.bfcl_verdict
        return {
            "id": self.id,
            "category": self.category,
            **self.verdict.to_json(),
            "bfcl_decoder": None if bfcl is None else {**bfcl.to_json(), "calls": self.bfcl_calls},
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
    """Scores of one run under both decoders, BFCL v3's groups and overall, and throughput.

    ``scores``/``summary`` use q3agent's parser (the calls that ran); ``bfcl_scores``/
    ``bfcl_summary`` use BFCL's own decoder on the same completions. ``data`` records the
    bfcl-eval version and a hash of the entries run (BFCL's data changes between releases).
    """

    config: EvalConfig
    model_name: str
    scores: dict[str, CategoryScore]
    summary: dict[str, Any]
    elapsed_s: float
    results: list[EntryResult] = field(default_factory=list, repr=False)
    bfcl_scores: dict[str, CategoryScore] = field(default_factory=dict)
    bfcl_summary: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    planned: int | None = None
    """Entries the run set out to score (``None``: all of ``results``)."""
    resumed: int = 0
    """Entries of ``results`` read back from an earlier run's files (not run now)."""
    interrupted: bool = False
    """Ctrl-C or SIGTERM stopped the run; ``results`` holds the entries that finished."""

    @classmethod
    def merge(cls, config: EvalConfig, parts: Sequence[EvalReport]) -> EvalReport:
        """One report from runs over disjoint categories (the report's single-turn phase on the
        native window, multi-turn on YaRN), scored and summarised together."""
        if len(parts) == 1:
            return replace(parts[0], config=config)
        results = [r for part in parts for r in part.results]
        scores = {k: v for part in parts for k, v in part.scores.items()}
        bfcl_scores = {k: v for part in parts for k, v in part.bfcl_scores.items()}
        summary, bfcl_summary = v3_summary(scores), v3_summary(bfcl_scores)
        if config.limit is not None:
            summary["complete"] = bfcl_summary["complete"] = False
        hashes = {k: v for p in parts for k, v in p.data.get("per_category_sha256", {}).items()}
        data = _fingerprint(hashes)
        interrupted = any(p.interrupted for p in parts)
        if interrupted:
            summary["complete"] = bfcl_summary["complete"] = False
        return cls(
            config,
            parts[0].model_name,
            scores,
            summary,
            sum(p.elapsed_s for p in parts),
            results,
            bfcl_scores=bfcl_scores,
            bfcl_summary=bfcl_summary,
            data=data,
            planned=sum(p.planned if p.planned is not None else len(p.results) for p in parts),
            resumed=sum(p.resumed for p in parts),
            interrupted=interrupted,
        )

    @property
    def entries_per_s(self) -> float:
        """Entries scored per second of wall time (those run now, not those resumed)."""
        ran = len(self.results) - self.resumed
        return ran / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def failures(self) -> list[EntryResult]:
        """Entries that failed with an inference error (never scored on their merits)."""
        return [r for r in self.results if r.inference_error]

    def failure_summary(self) -> str:
        """One line per distinct inference-error reason, with how many entries it hit."""
        reasons: dict[str, list[str]] = {}
        for result in self.failures:
            error = result.verdict.error
            text = str(error[0] if isinstance(error, list) and error else error)
            reasons.setdefault(text, []).append(result.id)
        lines = []
        for text, ids in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(ids)} × {text} (e.g. {ids[0]})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Scores and settings as a JSON-ready dict (``scores.json``)."""

        def table(scores: dict[str, CategoryScore]) -> dict[str, Any]:
            return {
                name: {"accuracy": s.accuracy, "correct": s.correct, "total": s.total}
                for name, s in scores.items()
            }

        return {
            "model": self.model_name,
            "config": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.config).items()
            },
            "data": self.data,
            "categories": table(self.scores),
            "summary": self.summary,
            "bfcl_decoder": {"categories": table(self.bfcl_scores), "summary": self.bfcl_summary},
            "inference_errors": len(self.failures),
            "entries": len(self.results),
            "entries_planned": self.planned if self.planned is not None else len(self.results),
            "entries_resumed": self.resumed,
            "interrupted": self.interrupted,
            "elapsed_s": round(self.elapsed_s, 3),
            "entries_per_s": round(self.entries_per_s, 3),
        }

    def table(self) -> str:
        """A plain-text table of the scores under both decoders."""
        lines = [
            f"BFCL v3 — {self.model_name}",
            f"{'category':<26}{'q3agent':>10}{'BFCL dec.':>11}{'n':>7}",
        ]
        for name, s in self.scores.items():
            other = self.bfcl_scores.get(name)
            bfcl = f"{other.accuracy * 100:>10.2f}%" if other is not None else f"{'-':>11}"
            lines.append(f"{name:<26}{s.accuracy * 100:>9.2f}%{bfcl}{s.total:>7}")
        for key in ("non_live", "live", "multi_turn", "overall"):
            value = self.summary.get(key)
            if value is not None:
                other_value = self.bfcl_summary.get(key)
                bfcl = f"{other_value * 100:>10.2f}%" if other_value is not None else ""
                lines.append(f"{key.upper():<26}{value * 100:>9.2f}%{bfcl}")
        if self.interrupted:
            planned = self.planned if self.planned is not None else len(self.results)
            lines.append(
                f"(interrupted: partial scores over the {len(self.results)} of {planned} "
                "entries that finished)"
            )
        elif not self.summary.get("complete"):
            lines.append("(not every v3 category was run in full: the overall figure covers")
            lines.append(" only what ran and is not comparable with the leaderboard)")
        if self.data:
            lines.append(
                f"data: bfcl-eval {self.data.get('bfcl_eval_version')}, "
                f"sha256 {str(self.data.get('sha256'))[:16]}"
            )
        resumed = f" ({self.resumed} from an earlier run)" if self.resumed else ""
        lines.append(
            f"{len(self.results)} entries{resumed}; {len(self.results) - self.resumed} in "
            f"{self.elapsed_s:.1f}s ({self.entries_per_s:.1f} entries/s)"
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


SETTINGS_FILE = "settings.json"
"""The file in ``--out`` recording the settings its results were run with (for resuming)."""

_RESUME_KEYS = (
    "model",
    "capability",
    "mode",
    "thinking",
    "thinking_budget",
    "max_tokens",
    "temperature",
    "max_steps_per_turn",
    "sampling",
    "holdout",
    "context_length",
    "multi_turn_context_length",
)
"""The settings that change an entry's result: a run resumes only when they all match."""


class ResumeMismatchError(UsageError):
    """``--out`` holds results run with other settings; the message names the differences."""


def resume_settings(config: EvalConfig) -> dict[str, Any]:
    """What ``settings.json`` records: every setting that changes a result, and the data."""
    settings: dict[str, Any] = {key: getattr(config, key) for key in _RESUME_KEYS}
    settings["bfcl_eval_version"] = bfcl_eval_version()
    return settings


class ResultsLog:
    """The results folder of one run, written as entries finish so that nothing is lost.

    Each finished entry is appended at once to ``<category>.jsonl``; ``settings.json`` says
    what the entries were run with. Opening a folder that already holds results of the same
    settings resumes it: :attr:`finished` holds the entries that need not run again (those
    that failed with an inference error are run again). A folder of other settings is an
    error rather than a mix.
    """

    def __init__(self, root: Path, finished: dict[str, EntryResult]) -> None:
        self.root = root
        self.finished = finished
        """Entry id → result read back from an earlier run."""

    @classmethod
    def open(cls, root: str | Path, config: EvalConfig) -> ResultsLog:
        """Open (creating it when new) the results folder ``root`` for ``config``."""
        folder = Path(root)
        settings = resume_settings(config)
        settings_path = folder / SETTINGS_FILE
        finished: dict[str, EntryResult] = {}
        if settings_path.is_file():
            try:
                saved = json.loads(settings_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ResumeMismatchError(
                    f"--out {root}: {SETTINGS_FILE} cannot be read ({exc}); use another --out"
                ) from None
            differ = [k for k in settings if saved.get(k) != settings[k]]
            if differ:
                what = ", ".join(f"{k} {saved.get(k)!r} there, {settings[k]!r} now" for k in differ)
                raise ResumeMismatchError(
                    f"--out {root} holds results run with other settings ({what}); use "
                    f"another --out, or delete {root} to start over"
                )
            for path in sorted(folder.glob("*.jsonl")):
                for result in _read_results(path):
                    if result.inference_error:
                        finished.pop(result.id, None)  # failed for the runtime: run it again
                    else:
                        finished[result.id] = result
            return cls(folder, finished)
        if any(folder.glob("*.jsonl")):
            raise ResumeMismatchError(
                f"--out {root} holds results without {SETTINGS_FILE} (an older q3agent): use "
                f"another --out, or delete {root} to start over"
            )
        folder.mkdir(parents=True, exist_ok=True)
        settings_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        return cls(folder, finished)

    def append(self, result: EntryResult) -> None:
        """Add one finished entry to its category's file (written through at once)."""
        line = json.dumps(result.to_json(), ensure_ascii=False, default=str) + "\n"
        with (self.root / f"{result.category}.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(line)


def _read_results(path: Path) -> list[EntryResult]:
    """The whole lines of a results file; a last line cut short by a kill is dropped (and
    removed from the file, so that the next append starts on a line of its own)."""
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with path.open("r+b") as fh:
            fh.truncate(len(whole))
    results = []
    for line in whole.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            results.append(EntryResult.from_json(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # not a result line: that entry is simply run again
    return results


def bfcl_eval_version() -> str:
    """The installed bfcl-eval's version (``"unknown"`` when its metadata is missing)."""
    try:
        return importlib.metadata.version("bfcl-eval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def data_fingerprint(entries: Sequence[BfclEntry]) -> dict[str, Any]:
    """The bfcl-eval version and SHA-256 hashes of the entries run (questions, functions,
    answers, initial states) per category, and one over the categories' hashes in name order,
    so results say which data they measured."""
    per_category: dict[str, str] = {}
    for category in dict.fromkeys(e.category for e in entries):
        digest = hashlib.sha256()
        for entry in (e for e in entries if e.category == category):
            blob = [entry.raw, entry.ground_truth]
            text = json.dumps(blob, sort_keys=True, ensure_ascii=False, default=str)
            digest.update(text.encode())
        per_category[category] = digest.hexdigest()
    return _fingerprint(per_category)


def _fingerprint(per_category: dict[str, str]) -> dict[str, Any]:
    overall = hashlib.sha256("".join(per_category[c] for c in sorted(per_category)).encode())
    return {
        "bfcl_eval_version": bfcl_eval_version(),
        "sha256": overall.hexdigest(),
        "per_category_sha256": per_category,
    }


# --------------------------------------------------------------------------------------------
# Thinking policy and sampling


def policy_for(config: EvalConfig) -> Policy:
    """The thinking policy a run uses (``--thinking`` and ``--thinking-budget``)."""
    if config.thinking == "off":
        return NeverThink()
    if config.thinking == "on":
        return AlwaysThink(config.thinking_budget)
    return PlanAct()


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
    capability = model_capability(config.model, config.capability)
    task = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    first_step = TurnTally(
        task_tokens=tok.count(task),
        num_tools=len(entry.functions),
        capability=capability,
        max_steps=1,
    )
    mode = policy.decide(first_step.state())
    enable_thinking = mode.thinking if capability == "hybrid" else None
    typed = to_messages(messages)
    prompt_ids = render_ids(tok, typed, tools, enable_thinking=enable_thinking)
    sampling = step_sampling(config.sampling, mode.sampling, config.max_tokens, config.temperature)
    sampling = sampling.with_(
        max_tokens=request_max_tokens(
            config.sampling, sampling.max_tokens, len(prompt_ids), config.context_for(entry)
        )
    )
    request = GenerationRequest(
        prompt_ids=tuple(prompt_ids),
        sampling=sampling,
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
        calls = list(parse_generation(tok, generation).tool_calls)
    bfcl_verdict, bfcl_calls = bfcl_ast_verdict(entry, generation.text, config.mode)
    return EntryResult(
        id=entry.id,
        category=entry.category,
        verdict=check_ast(entry, calls),
        prompt=tok.decode(prompt_ids),
        raw_output=generation.text,
        calls=decoded_calls(calls),
        usage=generation.usage,
        latency_s=latency,
        bfcl_verdict=bfcl_verdict,
        bfcl_calls=bfcl_calls,
    )


async def run_entry(
    entry: BfclEntry, runtime: Runtime, config: EvalConfig, policy: Policy | None = None
) -> EntryResult:
    """Run and score one entry (binds it for oracle runtimes)."""
    policy = policy or policy_for(config)
    mode: Mode = "fc" if entry.is_multi_turn else config.mode
    with bind_entry(entry, mode, config.holdout):
        if entry.is_multi_turn:
            return await run_multi_turn(entry, runtime, config, policy, config.context_for(entry))
        return await _run_single_turn(entry, runtime, config, policy)


# --------------------------------------------------------------------------------------------
# Whole runs


def _scores(
    entries: Sequence[BfclEntry], results: Sequence[EntryResult], bfcl: bool
) -> dict[str, CategoryScore]:
    scores: dict[str, CategoryScore] = {}
    for category in dict.fromkeys(e.category for e in entries):
        mine = [r for r in results if r.category == category]
        if bfcl:
            correct = sum(r.bfcl_verdict is not None and r.bfcl_verdict.valid for r in mine)
        else:
            correct = sum(r.verdict.valid for r in mine)
        scores[category] = CategoryScore(category, correct, len(mine))
    return scores


async def run_bfcl(
    runtime: Runtime,
    config: EvalConfig,
    *,
    entries: Sequence[BfclEntry] | None = None,
    on_result: Callable[[EntryResult], None] | None = None,
    log: ResultsLog | None = None,
    cancel: anyio.Event | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Run the configured categories (or the given entries) concurrently and score them.

    An entry whose requests fail is recorded as an inference error with the reason (the run
    goes on); :attr:`EvalReport.failures` lists them. With ``log``, entries it already holds
    are not run again and every entry that finishes is appended to it at once. Setting
    ``cancel`` stops the run: entries in flight are dropped and the report (``interrupted``)
    scores the ones that finished. ``on_start(planned, resumed)`` is called once the entries
    are loaded; ``on_result`` after each entry that finishes.
    """
    if entries is None:
        loaded: list[BfclEntry] = []
        for category in resolve_categories(config.categories):
            loaded.extend(load_category(category, config.limit))
        entries = loaded
    policy = policy_for(config)
    finished = log.finished if log is not None else {}
    results: list[EntryResult | None] = [finished.get(entry.id) for entry in entries]
    resumed = sum(r is not None for r in results)
    limiter = anyio.CapacityLimiter(max(1, config.concurrency))
    interrupted = False
    if on_start is not None:
        on_start(len(entries), resumed)

    async def one(index: int, entry: BfclEntry) -> None:
        async with limiter:
            try:
                result = await run_entry(entry, runtime, config, policy)
            except Exception as exc:  # one failing request must not end a long run
                error = f"{type(exc).__name__}: {exc}"
                verdict = Verdict(False, [f"inference error: {error}"], "inference_error")
                result = EntryResult(entry.id, entry.category, verdict, bfcl_verdict=verdict)
        results[index] = result
        if log is not None:
            log.append(result)
        if on_result is not None:
            on_result(result)

    async def stop_on_cancel(scope: anyio.CancelScope) -> None:
        nonlocal interrupted
        assert cancel is not None
        await cancel.wait()
        interrupted = True
        scope.cancel()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        if cancel is not None:
            tg.start_soon(stop_on_cancel, tg.cancel_scope)
        async with anyio.create_task_group() as work:
            for index, entry in enumerate(entries):
                if results[index] is None:
                    work.start_soon(one, index, entry)
        tg.cancel_scope.cancel()  # all entries done: stop the watcher
    elapsed = time.perf_counter() - started
    done = [r for r in results if r is not None]
    scores = _scores(entries, done, bfcl=False)
    bfcl_scores = _scores(entries, done, bfcl=True)
    summary, bfcl_summary = v3_summary(scores), v3_summary(bfcl_scores)
    if config.limit is not None or interrupted:
        summary["complete"] = bfcl_summary["complete"] = False
    return EvalReport(
        config,
        runtime.model_name,
        scores,
        summary,
        elapsed,
        done,
        bfcl_scores=bfcl_scores,
        bfcl_summary=bfcl_summary,
        data=data_fingerprint(entries),
        planned=len(entries),
        resumed=resumed,
        interrupted=interrupted,
    )


async def run_budget_sweep(
    runtime: Runtime,
    config: EvalConfig,
    budgets: Sequence[int],
    *,
    out_dir: str | Path | None = None,
    cancel: anyio.Event | None = None,
    on_result: Callable[[EntryResult], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> list[tuple[int, EvalReport]]:
    """Accuracy against thinking budget (the Qwen3 report's Figure 2): one run per budget.

    With ``out_dir`` each budget's entries go to (and resume from) ``out_dir/budget-N``. After
    ``cancel`` the interrupted budget's report is the last one returned.
    """
    entries: list[BfclEntry] = []
    for category in resolve_categories(config.categories):
        entries.extend(load_category(category, config.limit))
    out: list[tuple[int, EvalReport]] = []
    for budget in budgets:
        run_config = replace(config, thinking="on", thinking_budget=budget)
        log = (
            None
            if out_dir is None
            else ResultsLog.open(Path(out_dir) / f"budget-{budget}", run_config)
        )
        report = await run_bfcl(
            runtime,
            run_config,
            entries=entries,
            log=log,
            cancel=cancel,
            on_result=on_result,
            on_start=on_start,
        )
        out.append((budget, report))
        if report.interrupted:
            break
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
