"""Scoring with BFCL's own checkers, and the BFCL v3 way of combining category accuracies.

Single-turn answers go through ``ast_checker``; irrelevance/relevance entries are scored by
whether any call was made (BFCL's rule: no decodable call is correct for irrelevance, at least
one is needed for relevance); multi-turn entries go through ``multi_turn_checker``, which
re-executes the model's calls and the ground truth against fresh environments and compares
states and results turn by turn.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from q3agent.eval.bfcl_convert import decoded_calls
from q3agent.eval.bfcl_data import V3_CATEGORIES, BfclEntry, bfcl_module
from q3agent.qwen3.messages import ToolCall

__all__ = [
    "CategoryScore",
    "Verdict",
    "check_ast",
    "check_decoded",
    "check_multi_turn",
    "check_relevance",
    "check_relevance_made_call",
    "v3_summary",
]

CHECKER_MODEL_NAME = "q3agent"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an entry passed, and BFCL's error text and type when it did not."""

    valid: bool
    error: Any = None
    error_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"valid": self.valid, "error": self.error, "error_type": self.error_type}


def check_relevance(entry: BfclEntry, calls: Sequence[ToolCall]) -> Verdict:
    """BFCL's relevance rule: irrelevance passes with no call, relevance needs one."""
    return check_relevance_made_call(entry, len(calls) > 0)


def check_relevance_made_call(entry: BfclEntry, made_call: bool) -> Verdict:
    """BFCL's relevance rule given whether the answer held a decodable call."""
    if "irrelevance" in entry.category:
        if made_call:
            return Verdict(
                False,
                ["Valid syntax. Successfully decode AST when it should not."],
                "irrelevance_error:decoder_success",
            )
        return Verdict(True)
    if not made_call:
        return Verdict(
            False,
            ["Invalid syntax. Failed to decode AST when it should have."],
            "relevance_error:decoder_failed",
        )
    return Verdict(True)


def check_ast(entry: BfclEntry, calls: Sequence[ToolCall]) -> Verdict:
    """Score a single-turn answer with BFCL's ``ast_checker`` against the possible answers."""
    if entry.is_relevance:
        return check_relevance(entry, calls)
    return check_decoded(entry, decoded_calls(calls))


def check_decoded(entry: BfclEntry, decoded: list[dict[str, Any]]) -> Verdict:
    """BFCL's ``ast_checker`` on calls already in its ``[{name: {arg: value}}]`` form."""
    checker = bfcl_module("eval_checker.ast_eval.ast_checker")
    enums = bfcl_module("constants.enums")
    language = {
        "python": enums.Language.PYTHON,
        "java": enums.Language.JAVA,
        "javascript": enums.Language.JAVASCRIPT,
    }[entry.language]
    try:
        result: dict[str, Any] = checker.ast_checker(
            entry.checker_functions,
            decoded,
            entry.ground_truth,
            language,
            V3_CATEGORIES[entry.category],
            CHECKER_MODEL_NAME,
        )
    except Exception as exc:  # BFCL's converters raise on malformed values
        return Verdict(False, [f"checker error: {type(exc).__name__}: {exc}"], "checker_error")
    if result["valid"]:
        return Verdict(True)
    return Verdict(False, result.get("error"), result.get("error_type"))


def check_multi_turn(
    entry: BfclEntry, turns: Sequence[Sequence[Sequence[str]]], *, force_quit: bool = False
) -> Verdict:
    """Score a multi-turn run with BFCL's ``multi_turn_checker``.

    ``turns[t][s]`` holds the calls (``name(a=1)`` strings) the model made at step ``s`` of
    turn ``t``; steps without calls are ignored, as BFCL does. A run that stopped early
    (``force_quit``, or fewer turns than the ground truth) fails like BFCL's force-terminated
    entries.
    """
    assert entry.ground_truth is not None
    if force_quit or len(turns) != len(entry.ground_truth):
        return Verdict(
            False,
            [
                "Model was force-terminated during inference phase. The length of the model "
                f"result turns ({len(turns)}) does not match the length of the ground truth "
                f"turns ({len(entry.ground_truth)})."
            ],
            "multi_turn:force_terminated",
        )
    checker = bfcl_module("eval_checker.multi_turn_eval.multi_turn_checker")
    utils = bfcl_module("eval_checker.multi_turn_eval.multi_turn_utils")
    decoded = [[list(step) for step in turn if step] for turn in turns]
    # BFCL keeps environment instances in its module globals, keyed by model name and entry id;
    # a name unique to this check keeps runs apart, and they are dropped afterwards.
    model_name = f"{CHECKER_MODEL_NAME}_{uuid.uuid4().hex}"
    try:
        result: dict[str, Any] = checker.multi_turn_checker(
            decoded,
            entry.ground_truth,
            entry.raw,
            V3_CATEGORIES[entry.category],
            model_name,
        )
    except Exception as exc:
        return Verdict(False, [f"checker error: {type(exc).__name__}: {exc}"], "checker_error")
    finally:
        namespace = vars(utils)
        for key in [k for k in namespace if k.startswith(model_name)]:
            del namespace[key]
    if result["valid"]:
        return Verdict(True)
    return Verdict(False, result.get("error_message"), result.get("error_type"))


# --------------------------------------------------------------------------------------------
# Aggregation


@dataclass(frozen=True, slots=True)
class CategoryScore:
    """Accuracy of one category."""

    category: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        """Fraction correct (0 for an empty category)."""
        return self.correct / self.total if self.total else 0.0


def _unweighted(values: Sequence[tuple[float, int]]) -> tuple[float, int] | None:
    if not values:
        return None
    return sum(a for a, _ in values) / len(values), sum(n for _, n in values)


def _weighted(values: Sequence[tuple[float, int]]) -> tuple[float, int] | None:
    total = sum(n for _, n in values)
    if not values or total == 0:
        return None
    return sum(a * n for a, n in values) / total, total


def v3_summary(scores: Mapping[str, CategoryScore]) -> dict[str, Any]:
    """Group and overall accuracy as BFCL v3's leaderboard computes them.

    - non-live: unweighted mean of simple (itself the mean of Python, Java, JavaScript simple),
      multiple, parallel, parallel_multiple and irrelevance;
    - live: mean of the six live categories weighted by entry count;
    - multi-turn: unweighted mean of base, miss_func, miss_param, long_context;
    - overall: unweighted mean of non-live, live and multi-turn.

    BFCL counts a category that was not run as 0. Here a group is computed over the categories
    that were run and ``complete`` says whether every v3 category was; only a complete run
    gives a figure comparable with the leaderboard (and the Qwen3 report).
    """

    def acc(name: str) -> tuple[float, int] | None:
        score = scores.get(name)
        return (score.accuracy, score.total) if score is not None else None

    def present(names: Sequence[str]) -> list[tuple[float, int]]:
        return [v for v in (acc(n) for n in names) if v is not None]

    simple = _unweighted(present(["simple", "java", "javascript"]))
    non_live_parts = present(["multiple", "parallel", "parallel_multiple", "irrelevance"])
    non_live = _unweighted([simple, *non_live_parts] if simple else non_live_parts)
    live = _weighted(
        present(
            [
                "live_simple",
                "live_multiple",
                "live_parallel",
                "live_parallel_multiple",
                "live_irrelevance",
                "live_relevance",
            ]
        )
    )
    multi_turn = _unweighted(
        present(
            [
                "multi_turn_base",
                "multi_turn_miss_func",
                "multi_turn_miss_param",
                "multi_turn_long_context",
            ]
        )
    )
    groups = {"non_live": non_live, "live": live, "multi_turn": multi_turn}
    overall = _unweighted([g for g in groups.values() if g is not None])
    return {
        "overall": overall[0] if overall else None,
        "non_live": non_live[0] if non_live else None,
        "simple_ast": simple[0] if simple else None,
        "live": live[0] if live else None,
        "multi_turn": multi_turn[0] if multi_turn else None,
        "complete": all(c in scores for c in V3_CATEGORIES),
        "entries": sum(s.total for s in scores.values()),
    }
