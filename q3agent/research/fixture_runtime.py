"""A stand-in model for the research pipeline: reads each stage's prompt, writes plausible output.

:class:`ResearchFixtureRuntime` is a :class:`~q3agent.testing.runtimes.FunctionRuntime` that
recognises the stage from the prompt's ``Research stage: <name>.`` line and answers the way
a careful model would: plans sub-questions per entity in the question, calls ``rag_search``
and ``fetch_url`` with queries taken from the sub-question, follows relevant links, quotes
retrieved sentences verbatim with their source numbers, outlines, writes sections (with a
table where figures compare) and a summary. It lets tests, examples and
``q3agent research --fixture-runtime`` run the whole pipeline with real tools on a CPU.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

import anyio

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.research.prompts import TABLE_HINT, stage_of
from q3agent.serving.base import GenerationRequest
from q3agent.testing.runtimes import FunctionRuntime

_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>|\Z)", re.DOTALL)
_BLOCK = re.compile(r"(?m)^\[(\d+)\] (.*)$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_STOP_WORDS = """
a an the and or of to in on at by for with from as is are was were be how what which who
do does did their its this that these those it compare compared comparison between across
about report sources say said versus vs than more most less least each other both use uses
used using per when where why whose them they there into over under can could should would
will shall may might sub question overall brief research
"""
_STOP = frozenset(_STOP_WORDS.split())


def _think(prompt: str, text: str) -> str:
    """Open and close a think block unless the prompt already closed (or skipped) it."""
    if prompt.endswith("</think>\n\n"):
        return ""
    return f"<think>\n{text}\n</think>\n\n"


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z][A-Za-z0-9-]+", text) if w.casefold() not in _STOP]


def _entities(question: str) -> list[str]:
    """Capitalised names in the question (not its first word), in order."""
    names: list[str] = []
    for i, word in enumerate(re.findall(r"[A-Za-z][A-Za-z0-9-]*", question)):
        if i > 0 and word[0].isupper() and word.casefold() not in _STOP and word not in names:
            names.append(word)
    return names


def _line_value(text: str, label: str) -> str:
    match = re.search(rf"(?m)^{re.escape(label)}:?\s*(.+)$", text)
    return match.group(1).strip() if match else ""


def _blocks(text: str) -> list[tuple[int, str, str]]:
    """``(number, heading, body)`` for each ``[n] heading`` block of tool output."""
    found = list(_BLOCK.finditer(text))
    out = []
    for i, match in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        body = text[match.end() : end]
        body = body.split("\n\nLinks on this page:")[0].split("\n---\n")[0]
        out.append((int(match.group(1)), match.group(2).strip(), body.strip()))
    return out


def _sentences(body: str) -> list[str]:
    out = []
    for paragraph in re.split(r"\n\s*\n", body):
        if paragraph.lstrip().startswith(("#", "|", "-", "*", "```")):
            continue
        flat = " ".join(paragraph.split())
        for sentence in _SENTENCE.split(flat):
            sentence = sentence.strip().rstrip(" …")
            if 30 <= len(sentence) <= 320 and sentence.endswith((".", "!", "?")):
                out.append(sentence)
    return out


def _focus(subquestion: str, overall: str) -> list[str]:
    """Terms a researcher looks for: the sub-question's names, else its content words."""
    names = _entities(subquestion)
    return names or _words(subquestion)[:3] or _words(overall)[:3]


def _relevant(sentences: list[str], terms: list[str]) -> list[str]:
    lowered = [t.casefold() for t in terms]
    return [s for s in sentences if any(t in s.casefold() for t in lowered)]


def _call(name: str, arguments: dict[str, object]) -> str:
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


@dataclass
class _Prompt:
    text: str
    system: str
    users: list[str]
    tool_responses: list[str]
    call_turns: int
    """Assistant turns that called tools."""

    @classmethod
    def parse(cls, text: str) -> _Prompt:
        system, users, responses, call_turns = "", [], [], 0
        for role, content in _TURN.findall(text):
            if role == "assistant" and "<tool_call>" in content:
                call_turns += 1
            elif role == "system":
                system = content
            elif role == "user":
                found = re.findall(r"<tool_response>\n?(.*?)\n?</tool_response>", content, re.S)
                if found:
                    responses.extend(found)
                else:
                    users.append(content)
        return cls(text, system, users, responses, call_turns)

    @property
    def task(self) -> str:
        return self.users[-1] if self.users else ""


class ResearchFixtureRuntime(FunctionRuntime):
    """Writes plausible research-pipeline outputs from the prompts alone (tests and demos).

    ``latency`` is slept per request inside the model call, so concurrent calls overlap;
    ``peak`` records the most concurrent requests seen per stage and ``calls`` the number of
    requests per stage. ``fabricate`` makes the section writer add a sentence citing a
    source number that was never retrieved (to exercise the citation check).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        fabricate: bool = False,
        tokenizer: Qwen3Tokenizer | None = None,
    ) -> None:
        super().__init__(self._respond, tokenizer=tokenizer, model_name="research-fixture")
        self.stage_latency = latency
        self.fabricate = fabricate
        self.peak: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._active: Counter[str] = Counter()

    async def _respond(self, request: GenerationRequest) -> str:
        text = self.tokenizer.decode(list(request.prompt_ids))
        prompt = _Prompt.parse(text)
        stage = stage_of(prompt.system) or "unknown"
        self.calls[stage] += 1
        self._active[stage] += 1
        self.peak[stage] = max(self.peak[stage], self._active[stage])
        try:
            if self.stage_latency:
                await anyio.sleep(self.stage_latency)
            handler = getattr(self, f"_stage_{stage}", None)
            if handler is None:
                return "I can only play the research pipeline's stages."
            result: str = handler(prompt)
            return result
        finally:
            self._active[stage] -= 1

    # -- stages -------------------------------------------------------------------------------

    def _stage_clarify(self, prompt: _Prompt) -> str:
        return "NONE"

    def _stage_brief(self, prompt: _Prompt) -> str:
        question = _line_value(prompt.task, "Request") or prompt.task
        names = _entities(question)
        scope = f" for {', '.join(names)}" if names else ""
        return (
            f"Answer the question: {question} The report must gather what the documents and "
            f"web pages state{scope}, compare the figures they give side by side, and cite "
            "every claim. Claims without a retrieved source are out of scope."
        )

    def _stage_plan(self, prompt: _Prompt) -> str:
        question = _line_value(prompt.task, "Request") or prompt.task
        limit_match = re.search(r"at most (\d+)", prompt.system)
        limit = int(limit_match.group(1)) if limit_match else 5
        names = _entities(question)
        aspects = [w for w in _words(question) if w not in names and w[0].islower()][:4]
        aspect_text = ", ".join(aspects) or "the question"
        if names:
            items = [
                {
                    "question": f"What do the sources report about {name} regarding {aspect_text}?",
                    "queries": [f"{name} {' '.join(aspects)}".strip()],
                }
                for name in names[:limit]
            ]
        else:
            items = [
                {"question": f"What do the sources say about {w}?", "queries": [w]}
                for w in _words(question)[:limit]
            ]
        thinking = (
            f"The question is: {question}\nI will give each named item its own sub-question "
            f"so researchers can work in parallel, and ask each about {aspect_text}."
        )
        return _think(prompt.text, thinking) + json.dumps({"subquestions": items}, indent=1)

    def _stage_researcher(self, prompt: _Prompt) -> str:
        task = prompt.users[0] if prompt.users else ""
        sub = re.sub(r"^Sub-question \d+ of \d+:\s*", "", task.splitlines()[0] if task else "")
        overall = _line_value(task, "Overall question")
        terms = _focus(sub, overall)
        tools = re.search(r"<tools>\n(.*?)\n</tools>", prompt.system, re.S)
        tool_names = set(re.findall(r'"name": "(\w+)"', tools.group(1) if tools else ""))
        responses = prompt.tool_responses
        wrap_up = any(r.startswith("Not run:") for r in responses)
        if not responses:
            calls = []
            if "rag_search" in tool_names:
                query = _line_value(task, "Suggested searches") or " ".join(terms)
                calls.append(_call("rag_search", {"query": query.split(";")[0], "k": 4}))
            if "fetch_url" in tool_names:
                urls = re.findall(r"(?m)^- (https?://\S+)$", task)
                calls.extend(_call("fetch_url", {"url": u}) for u in urls[:2])
            if not calls:
                return "I have no tools to search with, so I could not find evidence."
            thinking = f"I need evidence about {', '.join(terms)}. I will search first."
            return _think(prompt.text, thinking) + "\n".join(calls)
        fetched = set(re.findall(r'"url": "([^"]+)"', prompt.text))
        follow: list[str] = []
        if not wrap_up and prompt.call_turns == 1 and "fetch_url" in tool_names:
            for response in responses:
                for label, url in re.findall(r"(?m)^- (.*?): (https?://\S+)$", response):
                    hay = f"{label} {url}".casefold()
                    if url not in fetched and any(t.casefold() in hay for t in terms):
                        follow.append(url)
        if follow:
            calls = [_call("fetch_url", {"url": u}) for u in dict.fromkeys(follow)][:2]
            return _think(prompt.text, "A linked page looks relevant; fetching it.") + "\n".join(
                calls
            )
        findings = []
        for response in responses:
            for number, _heading, body in _blocks(response):
                for sentence in _relevant(_sentences(body), terms)[:2]:
                    findings.append(f'- {sentence[:80].rstrip()}… "{sentence}" [{number}]')
        if not findings:
            return _think(prompt.text, "Nothing relevant came back.") + (
                f"I found no passage about {', '.join(terms)} in the retrieved sources."
            )
        thinking = "I have enough quotes; writing the findings."
        return _think(prompt.text, thinking) + "Findings:\n" + "\n".join(findings[:6])

    def _stage_compress(self, prompt: _Prompt) -> str:
        task = prompt.task
        sub = _line_value(task, "Sub-question")
        terms = _focus(sub, "")
        evidence = task.split("Retrieved evidence:", 1)[-1]
        notes = []
        seen: set[str] = set()
        for number, heading, body in _blocks(evidence):
            for sentence in _relevant(_sentences(body), terms)[:3]:
                if sentence in seen:
                    continue
                seen.add(sentence)
                notes.append(
                    {
                        "source": number,
                        "quote": sentence,
                        "claim": f"{heading.split(' (')[0]} states that {sentence[0].lower()}"
                        f"{sentence[1:]}",
                    }
                )
        return json.dumps({"notes": notes[:6]}, ensure_ascii=False, indent=1)

    def _stage_outline(self, prompt: _Prompt) -> str:
        task = prompt.task
        question = _line_value(task, "Question")
        sections = []
        numeric: list[str] = []
        for group in re.split(r"(?m)^Sub-question \d+: ", task.split("Evidence notes:", 1)[-1]):
            ids = re.findall(r"(?m)^(E\d+) \[\d+\]", group)
            if not ids:
                continue
            heading = group.splitlines()[0].strip()
            names = _entities(heading)
            title = names[0] if names else heading.rstrip("?")
            sections.append({"title": title, "goal": heading, "notes": ids, "table": False})
            for note_id, quote in re.findall(r'(?m)^(E\d+) \[\d+\].*\n\s+Quote: "(.*)"$', group):
                if re.search(r"\d", quote):
                    numeric.append(note_id)
        if len(numeric) >= 2:
            sections.append(
                {
                    "title": "Comparison at a glance",
                    "goal": "Set the reported figures side by side.",
                    "notes": numeric,
                    "table": True,
                }
            )
        title = f"Research report: {question}" if question else "Research report"
        return json.dumps({"title": title, "sections": sections}, ensure_ascii=False, indent=1)

    def _stage_section(self, prompt: _Prompt) -> str:
        task = prompt.task
        notes = re.findall(
            r'(?m)^(E\d+) \[(\d+)\] (.*)\n\s+Quote: "(.*)"\n\s+Source: (.*)$',
            task.split("Evidence notes:", 1)[-1],
        )
        question = _line_value(task, "Report question")
        names = _entities(question)
        if TABLE_HINT in task:
            rows = ["| Item | Reported finding | Source |", "| --- | --- | --- |"]
            for _id, number, _claim, quote, title in notes:
                item = next((n for n in names if n in quote), title)
                rows.append(f"| {item} | {quote.replace('|', '/')} | [{number}] |")
            lead = "The figures reported by the sources, side by side:"
            text = f"{lead}\n\n" + "\n".join(rows)
        else:
            sentences = [f"{quote.rstrip('.')} [{number}]." for _id, number, _c, quote, _t in notes]
            text = " ".join(sentences)
        if self.fabricate:
            text += (
                "\n\n" if TABLE_HINT in task else " "
            ) + "Independent audits confirm a 99.999% uptime guarantee across vendors [42]."
        return text

    def _stage_synthesis(self, prompt: _Prompt) -> str:
        body = prompt.task.split("Sections:", 1)[-1]
        picks = []
        for section in re.split(r"(?m)^## ", body):
            text = section.partition("\n")[2]
            for sentence in re.split(r"(?<=\.)\s+", text):
                if re.search(r"\[\d+\]\.?$", sentence.strip()) and "|" not in sentence:
                    picks.append(sentence.strip())
                    break
        thinking = (
            "The sections agree on the main points; I will lead with each section's key fact."
        )
        return _think(prompt.text, thinking) + " ".join(picks[:4])
