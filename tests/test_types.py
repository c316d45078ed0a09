"""q3agent.types: the shared value types, importable without any upper layer (the package's
lazy-export helper ``q3agent._lazy`` aside)."""

from __future__ import annotations

import subprocess
import sys

from q3agent.types import SamplingParams, Usage


def test_usage_adds_up_and_derives_totals() -> None:
    total = Usage(10, 4, cached_tokens=6, reasoning_tokens=2, requests=1) + Usage(5, 1, requests=1)
    assert total == Usage(15, 5, cached_tokens=6, reasoning_tokens=2, requests=2)
    assert (total.total_tokens, total.prefilled_tokens) == (20, 9)


def test_sampling_params_with_changes_a_copy() -> None:
    base = SamplingParams()
    changed = base.with_(max_tokens=16, stop=("x",))
    assert (changed.max_tokens, changed.stop, base.max_tokens) == (16, ("x",), 32768)


def test_the_leaf_module_imports_no_other_q3agent_module() -> None:
    code = (
        "import sys, q3agent.types; "
        "print(sorted(m for m in sys.modules if m.startswith('q3agent.')"
        " and m not in ('q3agent.types', 'q3agent._lazy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
