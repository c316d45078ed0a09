"""Benchmark of Qwen3 output parsing: ``parse`` throughput and token-by-token streaming cost.

Run: ``python benchmarks/parse_bench.py``. Prints

* ``parse`` throughput in MB/s on a ~100 KB completion (long reasoning, an answer, several tool
  calls, one of them broken JSON that goes through repair);
* the total time of a :class:`StreamParser` fed an ~8K-token completion one token at a time
  (tokens from the real offline Qwen3 tokenizer) against ``parse`` on the whole text, as a ratio.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from q3agent.qwen3.parsing import parse
from q3agent.qwen3.streaming import StreamParser

_VOCABULARY = (
    "the user wants to know whether the function returns a list or a dict so I should check "
    "the documentation first and then call the search tool with a precise query because the "
    "previous result was incomplete and maybe the cache is stale wait let me reconsider"
)
WORDS = _VOCABULARY.split()


def completion(target_chars: int, calls: int, seed: int = 0) -> str:
    """A realistic thinking-mode completion of about ``target_chars`` characters."""
    rng = random.Random(seed)
    reasoning_chars = int(target_chars * 0.8)
    lines: list[str] = []
    size = 0
    while size < reasoning_chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))).capitalize() + "."
        lines.append(line)
        size += len(line) + 1
    parts = ["<think>\n", "\n".join(lines), "\n</think>\n\n"]
    answer: list[str] = []
    while sum(map(len, answer)) < target_chars - reasoning_chars - 200 * calls:
        answer.append(" ".join(rng.choice(WORDS) for _ in range(20)) + ".")
    parts.append("\n".join(answer))
    for i in range(calls):
        if i == calls - 1:
            body = "{'name': 'search', 'arguments': {'query': 'qwen3 parser', 'k': 5,},}"
        else:
            args = {"query": " ".join(rng.choice(WORDS) for _ in range(6)), "k": i}
            body = json.dumps({"name": f"tool_{i}", "arguments": args})
        parts.append(f"\n<tool_call>\n{body}\n</tool_call>")
    parts.append("<|im_end|>")
    return "".join(parts)


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def token_pieces(text: str) -> tuple[list[str], str]:
    """Split ``text`` into the strings a runtime streams, one per token."""
    try:
        from q3agent.qwen3.tokenizer import Qwen3Tokenizer

        tokenizer = Qwen3Tokenizer.offline()
    except Exception as exc:  # the tokenizer is optional for this benchmark
        return [text[i : i + 4] for i in range(0, len(text), 4)], f"4-char pieces ({exc})"
    decoder = tokenizer.decoder()
    pieces = [decoder.push([token]) for token in tokenizer.encode_trusted(text)]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    return pieces, "Qwen3 tokens (offline tokenizer)"


def stream_all(pieces: list[str]) -> None:
    parser = StreamParser()
    for piece in pieces:
        parser.feed(piece)
    parser.close()
    parser.result()


def main() -> None:
    big = completion(100_000, calls=6)
    parsed = parse(big)
    assert len(parsed.tool_calls) == 6, parsed.errors
    seconds = best_of(20, lambda: parse(big))
    megabytes = len(big.encode()) / 1e6
    print(f"parse: {len(big):,} chars, {len(parsed.tool_calls)} calls (1 repaired)")
    print(f"parse throughput: {megabytes / seconds:.1f} MB/s ({seconds * 1e3:.2f} ms per parse)")

    text = completion(42_000, calls=4, seed=1)
    pieces, unit = token_pieces(text)
    whole = best_of(20, lambda: parse(text))
    streamed = best_of(10, lambda: stream_all(pieces))
    print(f"stream: {len(text):,} chars as {len(pieces):,} {unit}")
    print(
        f"StreamParser token by token: {streamed * 1e3:.2f} ms; parse on the whole text: "
        f"{whole * 1e3:.3f} ms; ratio {streamed / whole:.1f}x "
        f"({streamed / len(pieces) * 1e6:.2f} µs per token)"
    )


if __name__ == "__main__":
    main()
