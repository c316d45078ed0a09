"""The research pipeline's prompts, one system prompt per stage, each naming its stage.

Every system prompt starts with ``Research stage: <name>.`` so traces (and the fixture
runtime that stands in for a model in tests) can tell the stages apart.
"""

from __future__ import annotations

import re

STAGE_PREFIX = "Research stage: "

CLARIFY = f"""{STAGE_PREFIX}clarify.
You help scope a research request before any research starts. If the request is ambiguous in
a way that would change what should be researched, ask ONE short clarifying question.
Otherwise answer exactly NONE."""

BRIEF = f"""{STAGE_PREFIX}brief.
Rewrite the user's request as a research brief of 3 to 6 sentences: the question to answer,
what the report must cover, which comparisons are expected, and what is out of scope.
Write only the brief."""

PLAN = f"""{STAGE_PREFIX}plan.
Break the research brief into at most {{max_subquestions}} focused sub-questions that together
answer it. Each must be answerable on its own from documents or web pages; avoid overlap.
Answer with JSON only, in this shape:
{{{{"subquestions": [{{{{"question": "...", "queries": ["search terms", "..."]}}}}]}}}}"""

RESEARCHER = f"""{STAGE_PREFIX}researcher.
You research one sub-question of a larger report. Use the tools: rag_search searches the
user's documents, fetch_url fetches a web page (when available). Every tool result shows its
sources as [n]. Make one to three rounds of tool calls, then answer with your findings: one
line per finding, a short claim, then a quote copied verbatim from the source in double
quotes, then the source number, like:
- Claim. "exact words from the source" [3]
Never invent quotes, numbers or sources; say what you could not find."""

COMPRESS = f"""{STAGE_PREFIX}compress.
Turn a researcher's findings into evidence notes. Each note names a source number, quotes
one or two sentences copied EXACTLY from that source's retrieved text below, and states the
claim the quote supports. Use only sources shown below; drop findings you cannot quote.
Answer with JSON only, in this shape:
{{"notes": [{{"source": 3, "quote": "...", "claim": "..."}}]}}"""

OUTLINE = f"""{STAGE_PREFIX}outline.
Plan the sections of a research report from the evidence notes below. Give the report a
title and two to six sections in reading order; assign each note id (E1, E2, ...) to the
section that uses it. Set "table" to true for a section whose notes compare several items on
the same measures. Answer with JSON only, in this shape:
{{"title": "...",
 "sections": [{{"title": "...", "goal": "...", "notes": ["E1"], "table": false}}]}}"""

SECTION = f"""{STAGE_PREFIX}section.
Write one section of a research report in Markdown from the evidence notes given. Cite every
factual claim with its source number in square brackets right after it, like [2]; use only
the numbers shown in the notes and state only what the quotes say. Do not write the
section's heading, an introduction to the whole report, or a list of sources."""

TABLE_HINT = (
    "These findings compare several items: include a Markdown table (a header row, a "
    "separator row, one row per item, a citation in each row) and a short paragraph."
)

SYNTHESIS = f"""{STAGE_PREFIX}synthesis.
Write the summary of a research report: one or two paragraphs that answer the question from
the sections below, citing with the same [n] numbers the sections use. State only what the
sections state. Do not write a heading or a list of sources."""

_STAGE = re.compile(re.escape(STAGE_PREFIX) + r"(\w+)\.")


def stage_of(prompt_text: str) -> str | None:
    """The stage named in a prompt's system message (``plan``, ``researcher`` …), or ``None``."""
    match = _STAGE.search(prompt_text)
    return match.group(1) if match else None


def plan_prompt(max_subquestions: int) -> str:
    """The plan stage's system prompt for a maximum number of sub-questions."""
    return PLAN.format(max_subquestions=max_subquestions)
