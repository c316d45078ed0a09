"""Run every BFCL v3 entry through the harness with the oracle and the noisy oracle.

Prints, per category, the number of entries and both oracles' accuracy (entries BFCL's own
checker cannot pass are listed separately), then entries per second of the whole harness
(render → generate → parse → score) with each oracle. Usage::

    python benchmarks/bfcl_oracle_bench.py [--mode fc|prompt] [--categories all] [--limit N]
"""

from __future__ import annotations

import argparse

import anyio

from q3agent.eval.bfcl_data import load_category, resolve_categories
from q3agent.eval.bfcl_runner import EvalConfig, EvalReport, run_bfcl
from q3agent.eval.oracle import (
    PROMPT_MODE_UNSATISFIABLE,
    UNSATISFIABLE,
    NoisyOracleRuntime,
    OracleRuntime,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("fc", "prompt"), default="fc")
    parser.add_argument("--categories", nargs="+", default=["all"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    categories = resolve_categories(args.categories)
    entries = [e for c in categories for e in load_category(c, args.limit)]
    known = UNSATISFIABLE if args.mode == "fc" else PROMPT_MODE_UNSATISFIABLE
    config = EvalConfig(mode=args.mode, thinking="on", concurrency=args.concurrency)

    reports: dict[str, EvalReport] = {}
    for name, runtime in (("oracle", OracleRuntime()), ("noisy", NoisyOracleRuntime())):
        reports[name] = anyio.run(lambda r=runtime: run_bfcl(r, config, entries=entries))

    print(f"BFCL v3 harness check, mode={args.mode}")
    print(f"{'category':<26}{'entries':>8}{'oracle %':>10}{'noisy %':>10}{'unsat.':>8}")
    for category in categories:
        oracle, noisy = reports["oracle"].scores[category], reports["noisy"].scores[category]
        unsat = sum(e.id in known for e in entries if e.category == category)
        print(
            f"{category:<26}{oracle.total:>8}{oracle.accuracy * 100:>10.2f}"
            f"{noisy.accuracy * 100:>10.2f}{unsat:>8}"
        )
    for name, report in reports.items():
        bad = {r.id for r in report.results if not r.verdict.valid}
        print(
            f"{name}: {len(report.results)} entries in {report.elapsed_s:.1f}s = "
            f"{report.entries_per_s:.1f} entries/s; failures outside the unsatisfiable list: "
            f"{sorted(bad - set(known)) or 'none'}"
        )
        if bad & set(known):
            print(f"  unsatisfiable through BFCL's checker: {sorted(bad & set(known))}")


if __name__ == "__main__":
    main()
