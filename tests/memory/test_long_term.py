"""Long-term memory: per-user collections, ADD/UPDATE/DELETE/NOOP decisions, tools."""

from __future__ import annotations

from typing import Any

import pytest

from q3agent.memory.long_term import LongTermMemory, llm_decider
from q3agent.rag import RagStore
from q3agent.tools import RunContext


@pytest.mark.anyio
async def test_facts_are_added_updated_retracted_and_deduplicated(embedder: Any) -> None:
    memory = LongTermMemory(RagStore.ephemeral(embedder=embedder), "ana")
    assert (await memory.remember("The user lives in Paris.")).event == "ADD"
    assert (await memory.remember("The user is vegetarian.")).event == "ADD"
    assert (await memory.remember("User has a dog named Rex.")).event == "ADD"
    assert (await memory.remember("User lives in Paris")).event == "NOOP"

    moved = await memory.remember("The user lives in Berlin.")
    assert moved.event == "UPDATE"
    texts = [f.text for f in memory.all()]
    assert "The user lives in Berlin." in texts and "The user lives in Paris." not in texts
    assert len(texts) == 3

    retracted = await memory.remember("The user is no longer vegetarian.")
    assert retracted.event == "DELETE"
    assert not any("vegetarian" in f.text for f in memory.all())

    assert (await memory.recall("where does the user live?", k=1)) == ["The user lives in Berlin."]


@pytest.mark.anyio
async def test_each_user_has_their_own_facts(embedder: Any) -> None:
    store = RagStore.ephemeral(embedder=embedder)
    ana, bo = LongTermMemory(store, "ana@example.com"), LongTermMemory(store, "bo")
    await ana.remember("Ana prefers tea.")
    await bo.remember("Bo prefers coffee.")
    assert [f.text for f in ana.all()] == ["Ana prefers tea."]
    assert await bo.recall("drink preference") == ["Bo prefers coffee."]


@pytest.mark.anyio
async def test_an_llm_decider_drives_updates_and_falls_back_to_add(embedder: Any) -> None:
    prompts: list[str] = []

    async def complete(prompt: str) -> str:
        prompts.append(prompt)
        if "Berlin" in prompt:
            fact_id = prompt.split("id=")[1].split(":")[0]
            return (
                f'{{"event": "UPDATE", "id": "{fact_id}", "text": "Lives in Berlin (moved 2024)."}}'
            )
        return "I think this should be added."  # not JSON: falls back to ADD

    memory = LongTermMemory(
        RagStore.ephemeral(embedder=embedder), "u", decide=llm_decider(complete)
    )
    assert (await memory.remember("Lives in Paris.")).event == "ADD"
    decision = await memory.remember("Moved to Berlin.")
    assert decision.event == "UPDATE"
    assert [f.text for f in memory.all()] == ["Lives in Berlin (moved 2024)."]
    assert "Lives in Paris." in prompts[1]


@pytest.mark.anyio
async def test_remember_and_recall_tools(embedder: Any) -> None:
    memory = LongTermMemory(RagStore.ephemeral(embedder=embedder), "tools-user")
    remember, recall = memory.tools()
    assert (remember.name, recall.name) == ("remember", "recall")
    ctx: RunContext[None] = RunContext(deps=None, run_id="r", step=0, messages=[])
    assert await remember.call({"fact": "The user is allergic to peanuts."}, ctx) == "Saved."
    assert await remember.call({"fact": "The user is allergic to peanuts"}, ctx) == "Already known."
    found = await recall.call({"query": "food allergies"}, ctx)
    assert found == "- The user is allergic to peanuts."
