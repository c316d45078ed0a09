"""Worst-case parsing time: adversarial and random inputs of 100 KB and 1 MB.

Run: ``python benchmarks/parse_worst_bench.py [--random N]``. For each input family (deep
nesting inside a call block, unclosed strings, thousands of call blocks, bracket soup for the
pythonic reader, random fragments of real output, ...) at ~100 KB and ~1 MB, times
``parse``, ``StreamParser`` (fed in 7-character pieces), ``parse_ids`` and ``parse_pythonic``
in CPU seconds, and prints the worst cases against the goals: every input <= 100 KB in <= 50 ms
and 1 MB in <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from q3agent.qwen3.parsing import parse, parse_ids
from q3agent.qwen3.pythonic import parse_pythonic
from q3agent.qwen3.streaming import StreamParser
from q3agent.qwen3.tokenizer import Qwen3Tokenizer

GOALS = {100_000: 0.050, 1_000_000: 1.0}
FRAGMENTS = [
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<|im_end|>", "\n", " ", "{", "}",
    "[", "]", '"', "'", "\\", ",", ":", "name", '"arguments": ', "f(a=1)", "[f(", ")]", "text ",
    '{"name": "f", "arguments": {"a": ', "</tool", "True", "1.5e3",
]  # fmt: skip


def _fill(unit: str, size: int, head: str = "", tail: str = "") -> str:
    return head + unit * max(1, (size - len(head) - len(tail)) // max(1, len(unit))) + tail


def families(size: int, rng: random.Random) -> dict[str, str]:
    """Adversarial inputs of about ``size`` characters, by name."""
    return {
        "deep-objects-broken": _fill('{"a": ', size, '<tool_call>\n{"b"f(a=b)}\n'),
        "deep-objects-in-call": _fill('{"a": ', size, "<tool_call>\n"),
        "deep-lists-closed": _fill("[", size // 2, '<tool_call>{"name": "f", "arguments": ')
        + "]" * (size // 2),
        "unclosed-string": _fill("x", size, '<tool_call>{"name": "f", "arguments": {"t": "'),
        "escaped-quotes": _fill('\\"', size, '<tool_call>{"name": "f", "arguments": {"t": "'),
        "many-calls": _fill('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>', size),
        "many-open-tags": _fill("<tool_call>", size),
        "broken-big-args": '<tool_call>{"name": "f", "arguments": {'
        + ", ".join(f"'k{i}': 'v{i}'," for i in range(size // 16))
        + "}}</tool_call>",
        "partial-tags": _fill("<tool_cal", size),
        "long-reasoning": _fill("let me think about it. ", size, "<think>\n", "\n</think>\nOK"),
        "pythonic-brackets": _fill("[f(", size),
        "pythonic-many-lists": _fill('[f(a="x")] and ', size),
        "pythonic-nested": _fill("[f(x=", size // 2) + ")]" * (size // 10),
        "pythonic-prose-quotes": _fill("It's 'quoted' [f(a='x', b=\"it's\")] isn't it? ", size),
        "pythonic-unclosed-in-prose": _fill("I'll call [f(a='x', ", size),
        "pythonic-essay-then-list": _fill("It's long, isn't it, ", size, tail='[f(a="x")]'),
        "random-fragments": "".join(rng.choice(FRAGMENTS) for _ in range(size // 5))[:size],
    }


def cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def stream(text: str) -> None:
    parser = StreamParser(events=False)
    for i in range(0, len(text), 7):
        parser.feed(text[i : i + 7])
    parser.close()
    parser.result()


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--random", type=int, default=3, help="random-fragment inputs per size")
    options = args.parse_args()
    tok = Qwen3Tokenizer.offline()
    parse_ids(tok.encode_trusted("warm-up"), tok)  # builds the tokenizer's byte table once
    rng = random.Random(0)
    print("CPU seconds per input (worst of parse / StreamParser / parse_ids / parse_pythonic)")
    for size, goal in GOALS.items():
        inputs = families(size, rng)
        for i in range(options.random - 1):
            inputs[f"random-fragments-{i + 2}"] = families(size, rng)["random-fragments"]
        worst: list[tuple[float, str, str]] = []
        for name, text in inputs.items():
            ids = tok.encode_trusted(text)
            timings = {
                "parse": cpu(lambda t=text: parse(t)),  # type: ignore[misc]
                "stream": cpu(lambda t=text: stream(t)),  # type: ignore[misc]
                "parse_ids": cpu(lambda i=ids: parse_ids(i, tok)),  # type: ignore[misc]
                "pythonic": cpu(lambda t=text: parse_pythonic(t)),  # type: ignore[misc]
            }
            fn, seconds = max(timings.items(), key=lambda kv: kv[1])
            worst.append((seconds, name, fn))
        worst.sort(reverse=True)
        over = [w for w in worst if w[0] > goal]
        print(f"~{size:,} chars (goal <= {goal * 1000:.0f} ms): {len(over)} of {len(worst)} over")
        for seconds, name, fn in worst[:6]:
            print(f"  {seconds * 1000:8.1f} ms  {name:24s} ({fn})")


if __name__ == "__main__":
    main()
