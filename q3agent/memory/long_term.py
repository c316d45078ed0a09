"""Long-term memory: per-user facts in their own Chroma collection, curated mem0-style.

Remembering a fact first retrieves the most similar facts already stored; a decision
function then chooses ADD (new fact), UPDATE (replace a fact that the new one supersedes),
DELETE (the new statement retracts a fact) or NOOP (already known). The default decision is
deterministic (embedding similarity plus a negation check); :func:`llm_decider` asks a model.
``remember`` and ``recall`` are exposed as tools.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread

if TYPE_CHECKING:
    from q3agent.rag.store import RagStore
    from q3agent.tools import FunctionTool

MemoryEvent = Literal["ADD", "UPDATE", "DELETE", "NOOP"]


@dataclass(frozen=True)
class MemoryFact:
    """A stored fact and, for search results, its cosine similarity to the query."""

    id: str
    text: str
    created_at: float
    updated_at: float
    similarity: float = 0.0


@dataclass(frozen=True)
class MemoryDecision:
    """What to do with a new fact."""

    event: MemoryEvent
    text: str
    """The fact to store (ADD, UPDATE) or the statement that caused the change."""
    target_id: str | None = None
    """The existing fact to update or delete."""
    reason: str = ""


Decider = Callable[[str, Sequence[MemoryFact]], Awaitable[MemoryDecision]]
"""Chooses what to do with a new fact given the most similar stored facts (best first)."""

_NEGATION = re.compile(
    r"\b(no longer|not anymore|any ?more|stopped|quit|doesn't|does not|don't|do not|isn't|"
    r"is not|never|forget)\b",
    re.IGNORECASE,
)


def similarity_decider(
    *, duplicate: float = 0.93, update: float = 0.6, retract: float = 0.7
) -> Decider:
    """The deterministic default (thresholds tuned for all-MiniLM-L6-v2 cosine similarity).

    A statement with a negation ("no longer", "doesn't", ...) that matches a fact at
    ``retract`` or above DELETEs it; a near-identical fact (``duplicate``) is a NOOP; a fact
    about the same thing with a different value (``update``, e.g. "lives in Paris" then
    "lives in Berlin") is UPDATEd; anything else is ADDed.
    """

    async def decide(fact: str, similar: Sequence[MemoryFact]) -> MemoryDecision:
        best = similar[0] if similar else None
        negated = bool(_NEGATION.search(fact)) and not (best and _NEGATION.search(best.text))
        if best is not None and negated and best.similarity >= retract:
            return MemoryDecision("DELETE", fact, best.id, f"retracts {best.text!r}")
        if best is not None and best.similarity >= duplicate:
            return MemoryDecision("NOOP", fact, best.id, f"already known as {best.text!r}")
        if best is not None and best.similarity >= update and not negated:
            return MemoryDecision("UPDATE", fact, best.id, f"supersedes {best.text!r}")
        return MemoryDecision("ADD", fact, None, "new fact")

    return decide


LLM_DECISION_PROMPT = """You manage a user's long-term memory. Existing facts:
{facts}

New information: {fact}

Decide one event:
- ADD: the information is new.
- UPDATE: it changes an existing fact (give that fact's id and the merged fact text).
- DELETE: it says an existing fact is no longer true (give that fact's id).
- NOOP: it is already known.
Answer with JSON only: {{"event": "...", "id": "... or null", "text": "..."}}"""


def llm_decider(complete: Callable[[str], Awaitable[str]]) -> Decider:
    """A decider that asks a model (``complete(prompt) -> text``, ideally non-thinking).

    Replies that are not valid JSON, or name an unknown fact, fall back to ADD so nothing
    the user said is lost.
    """

    async def decide(fact: str, similar: Sequence[MemoryFact]) -> MemoryDecision:
        listing = "\n".join(f"- id={f.id}: {f.text}" for f in similar) or "(none)"
        reply = await complete(LLM_DECISION_PROMPT.format(facts=listing, fact=fact))
        match = re.search(r"\{.*\}", reply, re.DOTALL)
        try:
            data = json.loads(match.group(0)) if match else {}
        except json.JSONDecodeError:
            data = {}
        event = str(data.get("event", "")).upper()
        known = {f.id for f in similar}
        target = data.get("id")
        text = str(data.get("text") or fact)
        if event in ("UPDATE", "DELETE") and target in known:
            return MemoryDecision(event, text, str(target), "model decision")  # type: ignore[arg-type]
        if event == "NOOP" and similar:
            return MemoryDecision("NOOP", fact, similar[0].id, "model decision")
        return MemoryDecision("ADD", text if event == "ADD" else fact, None, "model decision")

    return decide


def _collection_for(user_id: str) -> str:
    digest = hashlib.sha256(user_id.encode()).hexdigest()[:12]
    safe = re.sub(r"[^a-zA-Z0-9]+", "-", user_id).strip("-")[:40] or "user"
    return f"q3agent-memory-{safe}-{digest}"


class LongTermMemory:
    """A user's facts, in a collection of their own next to the document store.

    Args:
        store: Any :class:`~q3agent.rag.store.RagStore`; its client and embedder are reused.
        user_id: Whose memory this is (each user gets a separate collection).
        decide: The ADD/UPDATE/DELETE/NOOP decision (default :func:`similarity_decider`).
        candidates: How many similar facts the decision sees.
    """

    def __init__(
        self,
        store: RagStore,
        user_id: str,
        *,
        decide: Decider | None = None,
        candidates: int = 5,
    ) -> None:
        self.user_id = user_id
        self.facts = store.sibling(_collection_for(user_id))
        self.decide = decide or similarity_decider()
        self.candidates = candidates

    def _search(self, query: str, k: int) -> list[MemoryFact]:
        vector = self.facts.embedder.embed_queries([query])[0]
        return [
            MemoryFact(
                c.id,
                c.text,
                float(c.metadata.get("created_at", 0.0)),
                float(c.metadata.get("updated_at", 0.0)),
                1.0 - (c.distance or 0.0),
            )
            for c in self.facts.query(vector, k)
        ]

    def _write(self, fact_id: str, text: str, created_at: float) -> None:
        vector = self.facts.embedder.embed_documents([text])
        meta = {"user_id": self.user_id, "created_at": created_at, "updated_at": time.time()}
        self.facts.upsert([fact_id], [text], vector, [meta])

    async def remember(self, fact: str) -> MemoryDecision:
        """Store a fact (or update/delete an existing one); returns the decision applied."""
        fact = fact.strip()
        if not fact:
            return MemoryDecision("NOOP", fact, None, "empty")
        similar = await anyio.to_thread.run_sync(self._search, fact, self.candidates)
        decision = await self.decide(fact, similar)
        by_id = {f.id: f for f in similar}
        if decision.event == "ADD":
            new_id = uuid.uuid4().hex[:16]
            await anyio.to_thread.run_sync(self._write, new_id, decision.text, time.time())
        elif decision.event == "UPDATE" and decision.target_id in by_id:
            old = by_id[decision.target_id]
            await anyio.to_thread.run_sync(self._write, old.id, decision.text, old.created_at)
        elif decision.event == "DELETE" and decision.target_id:
            await anyio.to_thread.run_sync(self.facts.delete, [decision.target_id])
        return decision

    async def recall(self, query: str, k: int = 5, *, min_similarity: float = 0.2) -> list[str]:
        """Stored facts relevant to ``query``, most similar first."""
        facts = await anyio.to_thread.run_sync(self._search, query, k)
        return [f.text for f in facts if f.similarity >= min_similarity]

    def all(self) -> list[MemoryFact]:
        """Every stored fact, oldest first."""
        facts = [
            MemoryFact(
                c.id,
                c.text,
                float(c.metadata.get("created_at", 0.0)),
                float(c.metadata.get("updated_at", 0.0)),
            )
            for c in self.facts.iter_all()
        ]
        return sorted(facts, key=lambda f: f.created_at)

    def forget(self, fact_id: str) -> None:
        """Delete one fact by id."""
        self.facts.delete([fact_id])

    def tools(self) -> list[FunctionTool[..., Any]]:
        """``remember`` and ``recall`` tools bound to this user's memory."""
        from q3agent.tools import tool

        async def remember(fact: str) -> str:
            """Save a lasting fact about the user (preferences, circumstances, decisions).

            Args:
                fact: One self-contained statement, e.g. "The user is vegetarian."
            """
            decision = await self.remember(fact)
            return {
                "ADD": "Saved.",
                "UPDATE": "Updated an existing memory.",
                "DELETE": "Removed the memory this retracts.",
                "NOOP": "Already known.",
            }[decision.event]

        async def recall(query: str, k: int = 5) -> str:
            """Look up what is remembered about the user.

            Args:
                query: What to look for, e.g. "diet" or "where does the user live".
                k: Maximum number of facts.
            """
            facts = await self.recall(query, max(1, min(int(k), 20)))
            return "\n".join(f"- {f}" for f in facts) if facts else "Nothing remembered."

        return [tool(remember), tool(recall)]
