"""Oracle runtimes: Qwen3 completions that carry BFCL's ground-truth calls, to prove the harness.

:class:`OracleRuntime` answers each request with the ground truth of the entry being run, in
the exact Qwen3 format (``<tool_call>\\n{json}\\n</tool_call>``), or as BFCL's Python call list
in prompt mode; irrelevance entries get a plain-text answer. :class:`NoisyOracleRuntime` writes
the same calls the way real Qwen3 output looks: a ``<think>`` block first, JSON without
newlines, arguments as a JSON string, keys in another order, text between and after the calls,
several calls split across blocks and steps. A harness that scores 100% with both renders the
entry into the prompt, parses the completion and scores it correctly.

The runner binds the entry to the task that runs it (:func:`bind_entry`, a context variable,
so concurrent entries do not mix). The oracle reads its position from the prompt itself: which
user turn it is in and how many assistant steps that turn already has. It checks the prompt
carries the current user message (and, in FC mode, every function's name); when it does not,
it answers with a text saying so and no call, so the entry fails visibly.
"""

from __future__ import annotations

import contextlib
import json
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from q3agent.eval.bfcl_convert import calls_from_answer, parse_call_string
from q3agent.eval.bfcl_data import MAX_STEPS_PER_TURN, BfclEntry
from q3agent.eval.bfcl_envs import method_parameters
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import GenerationRequest
from q3agent.testing.runtimes import FunctionRuntime

__all__ = [
    "HOLDOUT_MESSAGE",
    "PROMPT_MODE_UNSATISFIABLE",
    "UNSATISFIABLE",
    "NoisyOracleRuntime",
    "OracleRuntime",
    "bind_entry",
    "ground_truth_calls",
]

Mode = Literal["fc", "prompt"]
Call = tuple[str, dict[str, Any]]

HOLDOUT_MESSAGE = "I have updated some more functions you can choose from. What about now?"
"""BFCL's user message for the turn where ``miss_func`` functions are added (FC mode)."""

NO_CALL_ANSWER = "None of the available functions can do this, so I cannot make a call for it."
DONE_ANSWER = "All requested operations are done."


@dataclass(frozen=True, slots=True)
class _Binding:
    entry: BfclEntry
    mode: Mode
    holdout: str = "tools"


_CURRENT: ContextVar[_Binding | None] = ContextVar("q3agent_bfcl_entry", default=None)


@contextlib.contextmanager
def bind_entry(entry: BfclEntry, mode: Mode, holdout: str = "tools") -> Iterator[None]:
    """Tell an oracle runtime which entry the requests of the current task belong to (and, for
    ``miss_func``, how the harness announces held-out functions)."""
    token = _CURRENT.set(_Binding(entry, mode, holdout))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def ground_truth_calls(entry: BfclEntry, turn: int = 0) -> list[Call]:
    """One correct list of calls for a single-turn entry or for turn ``turn`` of a multi-turn.

    ``live_relevance`` entries have no answer; any call counts, so the first function is called
    with placeholder values for its required arguments. Irrelevance entries get ``[]``.
    """
    if entry.is_multi_turn:
        assert entry.ground_truth is not None
        return [
            parse_call_string(text, lambda name: method_parameters(entry.involved_classes, name))
            for text in entry.ground_truth[turn]
        ]
    if "irrelevance" in entry.category:
        return []
    if entry.ground_truth is None:  # live_relevance
        doc = entry.functions[0]
        params = doc.get("parameters", {})
        props: Mapping[str, Any] = params.get("properties", {})
        args = {name: _placeholder(props.get(name, {})) for name in params.get("required", [])}
        return [(str(doc["name"]), args)]
    return calls_from_answer(entry.ground_truth, entry.checker_functions, entry.language)


def _placeholder(schema: Mapping[str, Any]) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    return {
        "integer": 1,
        "float": 1.0,
        "number": 1.0,
        "boolean": True,
        "array": [],
        "tuple": [],
        "dict": {},
        "object": {},
    }.get(str(kind), "example")


# --------------------------------------------------------------------------------------------
# Reading the position from the prompt


@dataclass(frozen=True, slots=True)
class _Position:
    user_messages: list[str]
    """Contents of the real user messages so far (tool responses excluded)."""
    step: int
    """Completed assistant messages after the last user message."""
    answer_prefix: str
    """What the current assistant message already holds (generation prompt onwards)."""
    system: str


def _position(prompt: str) -> _Position:
    blocks = prompt.split("<|im_start|>")
    users: list[str] = []
    step = 0
    system = ""
    for block in blocks[1:-1]:
        role, _, body = block.partition("\n")
        content = body.split("<|im_end|>", 1)[0]
        if role == "system":
            system = content
        elif role == "user" and not content.startswith("<tool_response>"):
            users.append(content)
            step = 0
        elif role == "assistant":
            step += 1
    last_role, _, prefix = blocks[-1].partition("\n")
    if last_role != "assistant":
        prefix = ""
    return _Position(users, step, prefix, system)


# --------------------------------------------------------------------------------------------
# Writing completions


def _literal(value: Any, language: str) -> str:
    """A value as a literal of the target syntax (strings in double quotes for Java/JS)."""
    if isinstance(value, bool):
        text = "True" if value else "False"
        return text if language == "python" else text.lower()
    if value is None:
        return "None" if language == "python" else "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v, language) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{_literal(k, language)}: {_literal(v, language)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return repr(value)


_SOURCE_RE = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*|-?\d+(\.\d+)?[fFlLn]?")


def _source_literal(value: Any, kind: str) -> str:
    """A Java/JS argument (BFCL's source string) as it appears in a prompt-mode call.

    BFCL's Java/JS decoders keep expressions as their source text and strip the quotes of
    string literals, so source code is written raw and plain text as a literal.
    """
    if not isinstance(value, str):
        return _literal(value, "java")
    if kind == "char":
        return f"'{value}'"
    if kind == "Array":  # BFCL's converter wants unquoted String elements: not valid Java
        return f'"{value}"'
    if kind != "String" and (
        _SOURCE_RE.fullmatch(value) or value.startswith(("new ", "[", "{", "function", "("))
    ):
        return value
    if '"' in value and "'" not in value:
        return f"'{value}'"
    return f'"{value}"'


def _python_calls(
    calls: Sequence[Call],
    language: str,
    sep: str = ", ",
    functions: Sequence[Mapping[str, Any]] = (),
) -> str:
    props = {d["name"]: d.get("parameters", {}).get("properties", {}) for d in functions}
    parts = []
    for name, args in calls:
        if language == "python":
            rendered = [f"{k}={_literal(v, language)}" for k, v in args.items()]
        else:
            kinds = {k: str(props.get(name, {}).get(k, {}).get("type", "any")) for k in args}
            rendered = [f"{k}={_source_literal(v, kinds[k])}" for k, v in args.items()]
        parts.append(f"{name}({', '.join(rendered)})")
    return "[" + sep.join(parts) + "]"


def _exact_block(name: str, args: Mapping[str, Any]) -> str:
    body = json.dumps({"name": name, "arguments": dict(args)}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def _noisy_block(name: str, args: Mapping[str, Any], style: int) -> str:
    if style == 0:  # no newlines around the JSON, compact separators
        body = json.dumps({"name": name, "arguments": args}, separators=(",", ":"))
        return f"<tool_call>{body}</tool_call>"
    if style == 1:  # arguments as a JSON string
        body = json.dumps({"name": name, "arguments": json.dumps(args, ensure_ascii=False)})
        return f"<tool_call>\n{body}</tool_call>"
    # arguments first, pretty-printed over several lines
    body = json.dumps({"arguments": args, "name": name}, indent=2, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


class OracleRuntime(FunctionRuntime):
    """Answers BFCL requests with the ground truth, formatted exactly as Qwen3 would.

    Multi-turn: one ground-truth call per step (more when a turn would otherwise exceed
    BFCL's step limit), then a short text answer ending the turn.
    Only the last few requests are kept in ``.requests`` (long-context prompts are large).
    """

    noisy = False
    calls_per_step = 1

    def __init__(
        self, *, tokenizer: Qwen3Tokenizer | None = None, model_name: str | None = None
    ) -> None:
        name = model_name or ("bfcl-noisy-oracle" if self.noisy else "bfcl-oracle")
        super().__init__(self._respond, tokenizer=tokenizer, model_name=name)

    # -- the completion function ------------------------------------------------------------

    def completion_for(self, prompt_ids: Sequence[int]) -> str:
        """The text the oracle writes after ``prompt_ids`` for the entry bound to this task.

        Lets an engine double (``SGLangEngineDouble(oracle.completion_for)``) answer BFCL
        entries through a real runtime.
        """
        return self._respond(GenerationRequest(prompt_ids=tuple(prompt_ids)))

    def _respond(self, request: GenerationRequest) -> str:
        binding = _CURRENT.get()
        record = self.requests[-1] if self.requests else None
        if record is not None and record.request is request:
            prompt = record.prompt_text
        else:
            prompt = self.tokenizer.decode(list(request.prompt_ids))
        del self.requests[:-4]
        if binding is None:
            return (
                "The BFCL oracle got a request outside an entry; run it through "
                "q3agent.eval.run_bfcl (which binds each entry) or use bind_entry()."
            )
        entry, mode = binding.entry, binding.mode
        pos = _position(prompt)
        think_done = "</think>" in pos.answer_prefix
        if entry.is_multi_turn:
            body = self._multi_turn_body(entry, pos, mode, binding.holdout)
        else:
            body = self._single_turn_body(entry, pos, prompt, mode)
        if self.noisy and not think_done:
            return self._think(entry, pos) + body
        return body

    def _single_turn_body(self, entry: BfclEntry, pos: _Position, prompt: str, mode: Mode) -> str:
        expected = [m["content"] for m in entry.turns[0] if m["role"] == "user"]
        if expected and expected[-1] not in pos.user_messages[-1:]:
            return f"ORACLE MISMATCH: the prompt lacks the user message {expected[-1][:80]!r}."
        if mode == "fc":
            missing = [d["name"] for d in entry.functions if f'"{d["name"]}"' not in prompt]
            if missing:
                return f"ORACLE MISMATCH: the tools block lacks {missing}."
        if pos.step > 0:
            return DONE_ANSWER
        calls = ground_truth_calls(entry)
        if not calls:
            return NO_CALL_ANSWER
        return self._format(entry, calls, mode)

    def _multi_turn_body(self, entry: BfclEntry, pos: _Position, mode: Mode, holdout: str) -> str:
        turn = len(pos.user_messages) - 1
        if turn < 0 or entry.ground_truth is None or turn >= len(entry.ground_truth):
            return f"ORACLE MISMATCH: unexpected user turn {turn} for {entry.id}."
        messages = entry.turns[turn]
        if messages:
            expected = messages[-1]["content"]
        else:
            from q3agent.eval.bfcl_multi_turn import holdout_message

            expected = holdout_message(entry.missed_functions.get(turn, []), holdout)
        if pos.user_messages[-1].strip() != expected.strip():
            return f"ORACLE MISMATCH: turn {turn} should be {expected[:80]!r}."
        calls = ground_truth_calls(entry, turn)
        if not calls:
            return NO_CALL_ANSWER
        # stay within BFCL's step limit: a long turn packs several calls into one step
        per_step = max(self.calls_per_step, -(-len(calls) // (MAX_STEPS_PER_TURN - 1)))
        start = pos.step * per_step
        chunk = calls[start : start + per_step]
        if not chunk:
            return DONE_ANSWER
        return self._format(entry, chunk, mode)

    # -- formatting -------------------------------------------------------------------------

    def _format(self, entry: BfclEntry, calls: Sequence[Call], mode: Mode) -> str:
        if mode == "prompt":
            return _python_calls(calls, entry.language, functions=entry.checker_functions)
        return "\n".join(_exact_block(name, args) for name, args in calls)

    def _think(self, entry: BfclEntry, pos: _Position) -> str:
        return ""


class NoisyOracleRuntime(OracleRuntime):
    """The oracle's calls written the way real Qwen3 completions vary (see the module doc).

    Multi-turn: two calls per step (parallel blocks, run in order), then a text answer.
    """

    noisy = True
    calls_per_step = 2

    def _think(self, entry: BfclEntry, pos: _Position) -> str:
        question = pos.user_messages[-1][:200] if pos.user_messages else ""
        return (
            "<think>\nThe user asks: "
            + question
            + "\nI should pick the right functions and fill in every required argument "
            "from the request. Let me check the parameters one by one before answering.\n"
            "</think>\n\n"
        )

    def _format(self, entry: BfclEntry, calls: Sequence[Call], mode: Mode) -> str:
        seed = zlib.crc32(entry.id.encode())
        if mode == "prompt":
            if entry.language == "python":
                listing = _python_calls(calls, "python", sep=",\n ")
                return f"Here are the calls:\n```python\n{listing}\n```\nThat covers the request."
            listing = _python_calls(calls, entry.language, ",  ", entry.checker_functions)
            return f"  {listing}\n"
        parts = ["I'll call the functions for this."]
        for i, (name, args) in enumerate(calls):
            if i:
                parts.append("Next:" if i % 2 else "")
            parts.append(_noisy_block(name, args, (seed + i) % 3))
        parts.append("These calls should answer the request.")
        return "\n".join(parts)


UNSATISFIABLE: dict[str, str] = {
    "simple_java_36": "ArrayList of 'any': BFCL converts elements to strings, the answer has ints",
    "simple_java_64": "the answer's dict values are not lists of options (BFCL data defect)",
    "simple_java_65": "ArrayList of 'any': BFCL converts elements to strings, the answer has bools",
    "live_simple_106-63-0": "a required parameter has no acceptable value in the answer",
    "live_simple_112-68-0": "a required parameter has no acceptable value in the answer",
    "live_multiple_507-149-4": "a required parameter's only acceptable value is omission",
    "live_multiple_862-181-3": "the answer uses a parameter the function doc does not have",
    "live_multiple_964-207-0": "the answer names a parameter the function doc does not have",
}
"""Entries (bfcl-eval 2026.3.23) that no output can pass through BFCL's own checker in FC mode.

The oracle fails exactly these; every other entry with an answer scores 100%.
"""

PROMPT_MODE_UNSATISFIABLE: dict[str, str] = {
    **{k: v for k, v in UNSATISFIABLE.items() if k != "simple_java_64"},
    "simple_java_1": "BFCL's Java decoder drops a HashMap's put(...) body",
    "simple_java_67": "BFCL's Java decoder drops a HashMap's put(...) body",
    "simple_java_68": "BFCL's Java decoder drops a HashMap's put(...) body",
}
"""The same for prompt mode (``simple_java_64`` passes there through a checker quirk)."""
