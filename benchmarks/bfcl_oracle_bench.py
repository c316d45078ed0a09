"""Run every BFCL v3 entry through the harness with the oracle and the noisy oracle.

Prints, per category, the number of entries and both oracles' accuracy under both decoders:
q3agent's parser (what the harness executes and scores) and BFCL's own decoder on the same
completions (entries BFCL's checker cannot pass are counted separately), then entries per
second of the whole harness (render → generate → parse → score twice) with each oracle.
Multi-turn categories always run in FC mode. Usage::

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

    data = reports["oracle"].data
    print(
        f"BFCL v3 harness check, mode={args.mode}, bfcl-eval {data['bfcl_eval_version']}, "
        f"data sha256 {data['sha256'][:16]}"
    )
    print("accuracy % with q3agent's parser / with BFCL's decoder on the same completions")
    print(
        f"{'category':<26}{'entries':>8}{'oracle q3a':>12}{'oracle BFCL':>12}"
        f"{'noisy q3a':>11}{'noisy BFCL':>11}{'unsat.':>8}"
    )
    for category in categories:
        oracle, noisy = reports["oracle"], reports["noisy"]
        unsat = sum(e.id in known for e in entries if e.category == category)
        print(
            f"{category:<26}{oracle.scores[category].total:>8}"
            f"{oracle.scores[category].accuracy * 100:>12.2f}"
            f"{oracle.bfcl_scores[category].accuracy * 100:>12.2f}"
            f"{noisy.scores[category].accuracy * 100:>11.2f}"
            f"{noisy.bfcl_scores[category].accuracy * 100:>11.2f}{unsat:>8}"
        )
    for key in ("non_live", "live", "multi_turn", "overall"):
        values = [
            reports[name].summary.get(key) if not bfcl else reports[name].bfcl_summary.get(key)
            for name in ("oracle", "noisy")
            for bfcl in (False, True)
        ]
        if all(v is not None for v in values):
            cells = [f"{v * 100:>{w}.2f}" for v, w in zip(values, (12, 12, 11, 11), strict=True)]
            print(f"{key.upper():<34}" + "".join(cells))
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
