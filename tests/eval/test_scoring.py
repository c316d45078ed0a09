"""BFCL v3's aggregation: which means are weighted by entry count and which are not."""

from __future__ import annotations

import pytest

from q3agent.eval.bfcl_data import V3_CATEGORIES
from q3agent.eval.scoring import CategoryScore, v3_summary


def test_overall_weights_groups_as_bfcl_v3() -> None:
    scores = {c: CategoryScore(c, 0, 10) for c in V3_CATEGORIES}
    scores["simple"] = CategoryScore("simple", 10, 10)  # 1/3 of simple_ast
    scores["multiple"] = CategoryScore("multiple", 5, 10)
    scores["live_simple"] = CategoryScore("live_simple", 30, 30)  # weighted by count
    scores["multi_turn_base"] = CategoryScore("multi_turn_base", 10, 10)
    summary = v3_summary(scores)
    assert summary["simple_ast"] == pytest.approx(1 / 3)
    assert summary["non_live"] == pytest.approx((1 / 3 + 0.5) / 5)
    assert summary["live"] == pytest.approx(30 / (30 + 50))
    assert summary["multi_turn"] == pytest.approx(0.25)
    expected = (summary["non_live"] + summary["live"] + summary["multi_turn"]) / 3
    assert summary["overall"] == pytest.approx(expected)
    assert summary["complete"] is True
    assert summary["entries"] == 10 * len(V3_CATEGORIES) + 20


def test_partial_runs_are_flagged() -> None:
    summary = v3_summary({"simple": CategoryScore("simple", 3, 4)})
    assert summary["complete"] is False
    assert summary["overall"] == pytest.approx(0.75)
    assert summary["live"] is None
