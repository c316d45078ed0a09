"""BFCL v3 evaluation: data loading, Qwen3 conversion, runners, oracles and scoring.

Heavy parts (``bfcl-eval`` and its checkers) are imported on first use, not here.
"""

from __future__ import annotations

from q3agent.eval.bfcl_data import (
    CATEGORY_GROUPS,
    V3_CATEGORIES,
    BfclEntry,
    BfclUnavailableError,
    load_category,
    resolve_categories,
)
from q3agent.eval.bfcl_multi_turn import BfclExecutor
from q3agent.eval.bfcl_runner import (
    EntryResult,
    EvalConfig,
    EvalReport,
    run_bfcl,
    run_budget_sweep,
    sweep_table,
)
from q3agent.eval.bfcl_settings import PRESETS
from q3agent.eval.oracle import NoisyOracleRuntime, OracleRuntime, bind_entry
from q3agent.eval.scoring import CategoryScore, Verdict, v3_summary

__all__ = [
    "CATEGORY_GROUPS",
    "PRESETS",
    "V3_CATEGORIES",
    "BfclEntry",
    "BfclExecutor",
    "BfclUnavailableError",
    "CategoryScore",
    "EntryResult",
    "EvalConfig",
    "EvalReport",
    "NoisyOracleRuntime",
    "OracleRuntime",
    "Verdict",
    "bind_entry",
    "load_category",
    "resolve_categories",
    "run_bfcl",
    "run_budget_sweep",
    "sweep_table",
    "v3_summary",
]
