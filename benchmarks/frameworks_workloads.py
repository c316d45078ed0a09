"""The workloads of benchmarks/frameworks_bench.py: tools, tasks, scripted replies, checks.

Standard library only: the peer clients import this file from their own venvs. Every reply
the model gives is chosen by the forcing proxy from *the last turn of the conversation* (the
task, or the tool results after the last assistant turn), through the ``[[marker]]`` that
every task and every tool result carries. Nothing a client sends besides the conversation
decides a reply, so every framework gets the same model outputs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MARKER = re.compile(r"\[\[([a-z]+ [^\]]+)\]\]")
"""A reply key: ``[[task a]]`` in a task, ``[[station 3]]`` in a tool result."""

FALLBACK_REPLY = "I could not complete this.<|im_end|>"
"""The reply to a last turn with no known marker (a client's error message, say)."""

REPORT = (
    "Station {n} report: the river gauge read {n}.2 metres at dawn, sediment load was moderate, "
    "dredging continues on the northern channel and the flood stage is not expected this week. "
)


# ---------------------------------------------------------------------------- the tools


def read_station(n: int) -> str:
    """Read one gauge station's report.

    Args:
        n: Station number.
    """
    return f"[[station {n}]] " + REPORT.format(n=n) * 8


def lookup_order(order_id: int) -> str:
    """Look up an order's shipping day.

    Args:
        order_id: The order's number.
    """
    return f"[[order {order_id}]] Order {order_id} ships on Tuesday."


def get_weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: The city's name.
    """
    return f"[[weather {city}]] {city}: 21 degrees and sunny."


def plan_trip(cities: list[str], days: int) -> str:
    """Plan a trip through some cities.

    Args:
        cities: Cities.
        days: Length of the trip in days.
    """
    return f"[[trip {'-'.join(cities)}]] A {days}-day trip through {', '.join(cities)}."


TOOLS: dict[str, Any] = {
    "read_station": read_station,
    "lookup_order": lookup_order,
    "get_weather": get_weather,
    "plan_trip": plan_trip,
}

PARAMS: dict[str, dict[str, Any]] = {
    "read_station": {
        "type": "object",
        "properties": {"n": {"type": "integer", "description": "Station number."}},
        "required": ["n"],
    },
    "lookup_order": {
        "type": "object",
        "properties": {"order_id": {"type": "integer", "description": "The order's number."}},
        "required": ["order_id"],
    },
    "get_weather": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name."}},
        "required": ["city"],
    },
    "plan_trip": {
        "type": "object",
        "properties": {
            "cities": {"type": "array", "items": {"type": "string"}, "description": "Cities."},
            "days": {"type": "integer", "description": "Length of the trip in days."},
        },
        "required": ["cities", "days"],
    },
}
"""Each tool's JSON schema (the same for every framework)."""

ARG_DOCS: dict[str, dict[str, str]] = {
    name: {k: v["description"] for k, v in schema["properties"].items()}
    for name, schema in PARAMS.items()
}


# ---------------------------------------------------------------------------- replies


def call(name: str, **arguments: Any) -> str:
    """A well-formed Qwen3 tool call."""
    return (
        "<tool_call>\n"
        + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        + "\n</tool_call>"
    )


def think(text: str) -> str:
    return f"<think>\n{text}\n</think>\n\n"


END = "<|im_end|>"
LONG_REASONING = (
    "[[reasoning 1]] The user wants the flood outlook. I should read the station reports one by "
    "one, starting with the first station, then compare the gauge readings. "
    + "Each station may report a different sediment load, so I will keep track of them. "
    * 6
)
"""Step 1's reasoning in (b): about 160 tokens, over the 64-token budget."""


@dataclass(frozen=True)
class Task:
    """One user task: its text, what a correct run calls and what its answer contains."""

    text: str
    calls: tuple[tuple[str, dict[str, Any]], ...]
    answer: str
    thinking: bool = False


@dataclass(frozen=True)
class Workload:
    """Tasks run one after another in one conversation (a session when there are several)."""

    key: str
    title: str
    tasks: tuple[Task, ...]
    budget: int | None = None
    concurrent: int = 1


def _station_task(key: str, first: int, thinking: bool) -> tuple[Task, dict[str, str]]:
    ns = [first, first + 1, first + 2]
    answer = f"Stations {ns[0]} to {ns[2]} are below flood stage."
    replies: dict[str, str] = {}
    first_reasoning = think(LONG_REASONING) if thinking else ""
    replies[f"task {key}"] = first_reasoning + call("read_station", n=ns[0]) + END
    for k, n in enumerate(ns):
        nxt = ns[k + 1] if k + 1 < len(ns) else None
        lead = think(f"[[reasoning {n}]] Station {n} read; next step.") if thinking else ""
        replies[f"station {n}"] = lead + (
            call("read_station", n=nxt) + END if nxt is not None else answer + END
        )
    text = f"[[task {key}]] Read stations {ns[0]}, {ns[1]} and {ns[2]} and tell me the outlook."
    calls = tuple(("read_station", {"n": n}) for n in ns)
    return Task(text, calls, answer, thinking), replies


REPLIES: dict[str, str] = {}
"""Marker → the full scripted reply (reasoning, calls, answer; Qwen3 text with control tokens)."""

_a, _ra = _station_task("a", 1, thinking=False)
_b, _rb = _station_task("b", 11, thinking=True)
REPLIES.update(_ra)
REPLIES.update(_rb)

_session: list[Task] = []
for _k, _n in ((1, 21), (2, 22), (3, 23)):
    REPLIES[f"task c{_k}"] = think(f"[[reasoning c{_k}]] One station to read.") + (
        call("read_station", n=_n) + END
    )
    REPLIES[f"station {_n}"] = think(f"Station {_n} is fine.") + f"Station {_n} is fine." + END
    _session.append(
        Task(
            f"[[task c{_k}]] Is station {_n} fine?",
            (("read_station", {"n": _n}),),
            f"Station {_n} is fine.",
            thinking=True,
        )
    )


# ---------------------------------------------------------------------------- the panel


@dataclass(frozen=True)
class PanelCase:
    """A realistic Qwen3 reply with a quirk, and the calls a robust client makes from it."""

    name: str
    reply: str
    calls: tuple[tuple[str, dict[str, Any]], ...]
    thinking: bool = False


def _order(k: int) -> int:
    return 1000 + k


def _panel() -> list[PanelCase]:
    o = _order
    cases = [
        PanelCase(
            "clean call",
            call("lookup_order", order_id=o(1)),
            (("lookup_order", {"order_id": o(1)}),),
        ),
        PanelCase(
            "no newline after <tool_call>",
            f'<tool_call>{{"name": "lookup_order", "arguments": {{"order_id": {o(2)}}}}}</tool_call>',  # noqa: E501
            (("lookup_order", {"order_id": o(2)}),),
        ),
        PanelCase(
            "string-encoded arguments",
            '<tool_call>\n{"name": "lookup_order", "arguments": "{\\"order_id\\": '
            f'{o(3)}}}"}}\n</tool_call>',
            (("lookup_order", {"order_id": o(3)}),),
        ),
        PanelCase(
            "trailing comma in arguments",
            f'<tool_call>\n{{"name": "lookup_order", "arguments": {{"order_id": {o(4)},}}}}\n</tool_call>',  # noqa: E501
            (("lookup_order", {"order_id": o(4)}),),
        ),
        PanelCase(
            "trailing comma after arguments",
            f'<tool_call>\n{{"name": "lookup_order", "arguments": {{"order_id": {o(5)}}},}}\n</tool_call>',  # noqa: E501
            (("lookup_order", {"order_id": o(5)}),),
        ),
        PanelCase(
            "two calls",
            call("lookup_order", order_id=o(6)) + "\n" + call("get_weather", city="Oslo"),
            (("lookup_order", {"order_id": o(6)}), ("get_weather", {"city": "Oslo"})),
        ),
        PanelCase(
            "three calls, no newline between",
            call("lookup_order", order_id=o(7))
            + call("lookup_order", order_id=o(7) + 100)
            + call("lookup_order", order_id=o(7) + 200),
            tuple(("lookup_order", {"order_id": o(7) + d}) for d in (0, 100, 200)),
        ),
        PanelCase(
            "call after reasoning",
            think(f"The user asks about order {o(8)}; I will look it up.")
            + call("lookup_order", order_id=o(8)),
            (("lookup_order", {"order_id": o(8)}),),
            thinking=True,
        ),
        PanelCase(
            "unclosed final </tool_call>",
            f'<tool_call>\n{{"name": "lookup_order", "arguments": {{"order_id": {o(9)}}}}}\n',
            (("lookup_order", {"order_id": o(9)}),),
        ),
        PanelCase(
            "call quoted inside reasoning",
            think(
                "I could call "
                + call("lookup_order", order_id=9999)
                + f" but the user means order {o(10)}."
            )
            + call("lookup_order", order_id=o(10)),
            (("lookup_order", {"order_id": o(10)}),),
            thinking=True,
        ),
        PanelCase(
            "prose before the call",
            "Let me look that order up for you.\n\n" + call("lookup_order", order_id=o(11)),
            (("lookup_order", {"order_id": o(11)}),),
        ),
        PanelCase(
            "prose after the call",
            call("lookup_order", order_id=o(12)) + "\nI will report back once I have the result.",
            (("lookup_order", {"order_id": o(12)}),),
        ),
        PanelCase(
            "prose around the call",
            "Sure.\n" + call("lookup_order", order_id=o(13)) + "\nOne moment.",
            (("lookup_order", {"order_id": o(13)}),),
        ),
        PanelCase(
            "pretty-printed JSON",
            '<tool_call>\n{\n  "name": "lookup_order",\n  "arguments": {\n    "order_id": '
            f"{o(14)}\n  }}\n}}\n</tool_call>",
            (("lookup_order", {"order_id": o(14)}),),
        ),
        PanelCase(
            "number as a string",
            f'<tool_call>\n{{"name": "lookup_order", "arguments": {{"order_id": "{o(15)}"}}}}\n</tool_call>',  # noqa: E501
            (("lookup_order", {"order_id": o(15)}),),
        ),
        PanelCase(
            "non-ASCII argument",
            call("get_weather", city="São Paulo"),
            (("get_weather", {"city": "São Paulo"}),),
        ),
        PanelCase(
            "array argument",
            call("plan_trip", cities=["Kyoto", "Nara"], days=4),
            (("plan_trip", {"cities": ["Kyoto", "Nara"], "days": 4}),),
        ),
        PanelCase(
            "extra closing brace",
            f'<tool_call>\n{{"name": "lookup_order", "arguments": {{"order_id": {o(18)}}}}}}}\n</tool_call>',  # noqa: E501
            (("lookup_order", {"order_id": o(18)}),),
        ),
        PanelCase(
            "reasoning without the opening <think>",
            f"The user wants order {o(19)}.\n</think>\n\n" + call("lookup_order", order_id=o(19)),
            (("lookup_order", {"order_id": o(19)}),),
            thinking=True,
        ),
        PanelCase(
            "a call and an unclosed second call",
            call("lookup_order", order_id=o(20))
            + f'\n<tool_call>\n{{"name": "lookup_order", "arguments": {{"order_id": {o(20) + 100}}}}}',  # noqa: E501
            (("lookup_order", {"order_id": o(20)}), ("lookup_order", {"order_id": o(20) + 100})),
        ),
    ]
    return cases


PANEL: list[PanelCase] = _panel()


def _result_markers(name: str, args: dict[str, Any]) -> str:
    return str(MARKER.search(TOOLS[name](**args)).group(1))  # type: ignore[union-attr]


PANEL_TASKS: list[Task] = []
for _i, _case in enumerate(PANEL, 1):
    _answer = f"Panel case {_i} is done."
    REPLIES[f"panel {_i}"] = _case.reply + END
    for _name, _args in _case.calls:
        REPLIES[_result_markers(_name, _args)] = _answer + END
    PANEL_TASKS.append(
        Task(
            f"[[panel {_i}]] Please handle request {_i}.",
            _case.calls,
            _answer,
            thinking=_case.thinking,
        )
    )

BUDGET = 64
WORKLOADS: dict[str, Workload] = {
    "a": Workload("a", "4-step tool task, thinking off", (_a,)),
    "b": Workload("b", f"4-step tool task, thinking on, budget {BUDGET}", (_b,), budget=BUDGET),
    "c": Workload("c", "3-task session, thinking on", tuple(_session)),
    "d": Workload("d", "16 concurrent agents running (a)", (_a,), concurrent=16),
}


def expected_reasoning(key: str) -> frozenset[str]:
    """The ``reasoning …`` markers the official template keeps in the prompt of the request
    whose last turn carries ``key``: every reasoning of the current task's earlier steps,
    none of an earlier task's (the template drops reasoning before the last user query)."""
    words = key.split()
    if words[0] == "station" and 11 <= int(words[1]) <= 13:
        return frozenset({"reasoning 1", *(f"reasoning {m}" for m in range(11, int(words[1])))})
    if words[0] == "station" and 21 <= int(words[1]) <= 23:
        return frozenset({f"reasoning c{int(words[1]) - 20}"})
    return frozenset()


def reply_for(
    last_turn: str,
    tool_names: frozenset[str] = frozenset(),
    *,
    required: bool = False,
    tagged: bool = False,
    engine: str = "vllm",
) -> str:
    """The scripted reply to a conversation whose last turn (the text after the last assistant
    turn) is ``last_turn``: the reply of its last known marker, or :data:`FALLBACK_REPLY`.

    A final answer goes through a ``final_answer`` tool when the conversation offers one
    (smolagents' protocol): a model that follows its prompt answers that way. Where the engine
    constrains the reply with its own grammar, the same calls are written in the shape that
    grammar admits, as a constrained model would write them:

    - ``required`` (``tool_choice`` is ``"required"`` or names a tool): vLLM's JSON-array
      grammar; on SGLang (``engine="sglang"``) its ``qwen25`` structural tag with at least one
      call, starting right after ``</think>``: only calls, each
      ``<tool_call>\\n{"name":"NAME", "arguments":ARGS}\\n</tool_call>``;
    - ``tagged`` (SGLang, ``tool_choice="auto"`` with a ``strict`` tool): the same tag, triggered
      by ``<tool_call>``: the text around the calls stays, each call is written in that shape.
    """
    reply, found = FALLBACK_REPLY, ""
    for key in reversed(MARKER.findall(last_turn)):
        if key in REPLIES:
            reply, found = REPLIES[key], key
            break
    if required and engine == "sglang":
        return _sglang_required_form(found, reply, tool_names)
    if required:
        return _required_form(found, reply, tool_names)
    if "final_answer" in tool_names and "<tool_call>" not in reply.rsplit("</think>", 1)[-1]:
        head, sep, answer = reply.rpartition("</think>\n\n")
        answer = answer.removesuffix(END)
        reply = head + sep + call("final_answer", answer=answer) + END
    if tagged and engine == "sglang":
        return _sglang_tagged_form(found, reply)
    return reply


_CALL_JSON = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def _intended_calls(key: str, body: str) -> list[tuple[str, dict[str, Any]]]:
    """The calls a reply means: a panel case's (whatever its quirks), else the calls in it."""
    if key.startswith("panel "):
        return list(PANEL[int(key.split()[1]) - 1].calls)
    return [tuple(json.loads(m).values()) for m in _CALL_JSON.findall(body)]  # type: ignore[misc]


def _required_form(key: str, reply: str, tool_names: frozenset[str]) -> str:
    # the engine's grammar starts right after </think> and admits no newline before the array
    head, sep, body = reply.rpartition("</think>")
    body = body.removesuffix(END).lstrip("\n")
    calls = _intended_calls(key, body)
    if not calls:
        name = (
            "final_answer" if "final_answer" in tool_names else next(iter(sorted(tool_names)), "")
        )
        calls = [(name, {"answer": body})]
    array = [{"name": n, "parameters": a} for n, a in calls]
    return head + sep + json.dumps(array, ensure_ascii=False) + END


def sglang_tag_call(name: str, arguments: dict[str, Any]) -> str:
    """One call as SGLang's ``qwen25`` structural tag writes it (begin
    ``<tool_call>\\n{"name":"NAME", "arguments":``, the arguments, end ``}\\n</tool_call>``)."""
    args = json.dumps(arguments, ensure_ascii=False)
    return f'<tool_call>\n{{"name":"{name}", "arguments":{args}}}\n</tool_call>'


def _sglang_required_form(key: str, reply: str, tool_names: frozenset[str]) -> str:
    # the grammar starts right after </think> with a call: no newline, no text around the calls
    head, sep, body = reply.rpartition("</think>")
    body = body.removesuffix(END).lstrip("\n")
    calls = _intended_calls(key, body)
    if not calls:
        name = (
            "final_answer" if "final_answer" in tool_names else next(iter(sorted(tool_names)), "")
        )
        calls = [(name, {"answer": body})]
    return head + sep + "\n".join(sglang_tag_call(n, a) for n, a in calls) + END


def _sglang_tagged_form(key: str, reply: str) -> str:
    # text is free; from each <tool_call> on, the tag writes the call (and closes it)
    head, sep, body = reply.rpartition("</think>")
    body = body.removesuffix(END)
    calls = _intended_calls(key, body)
    pieces = body.split("<tool_call>")
    if len(pieces) - 1 != len(calls):
        return reply
    out = pieces[0]
    for (name, args), piece in zip(calls, pieces[1:], strict=True):
        _, closed, after = piece.partition("</tool_call>")
        out += sglang_tag_call(name, args) + (after if closed else "")
    return head + sep + out + END


# ---------------------------------------------------------------------------- checking


@dataclass
class Outcome:
    """What one client reported for one task."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answer: str = ""
    error: str = ""


def _canon(calls: Any) -> list[str]:
    return sorted(json.dumps([n, a], sort_keys=True, ensure_ascii=False) for n, a in calls)


def task_ok(task: Task, calls: Any, answer: str) -> bool:
    """Right tools with the right arguments (any order), and the right answer."""
    return _canon(calls) == _canon(task.calls) and task.answer in (answer or "")
