"""A multi-turn tool workflow: a stateful class-based tool and a session with follow-ups.

The session keeps history (and the append-only prompt) across tasks, so the follow-up sees
the earlier turns and a prefix-caching runtime re-prefills nothing it already saw.

    python examples/multi_turn_tools.py                          # scripted
    Q3AGENT_MODEL=Qwen3-30B-A3B python examples/multi_turn_tools.py
"""

from __future__ import annotations

import os

from q3agent import Agent, NeverThink, ScriptedRuntime, tool


class TodoList:
    """A stateful toolset: methods become tools bound to one instance."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add_item(self, text: str) -> str:
        """Add an item to the to-do list.

        Args:
            text: What to do.
        """
        self.items.append(text)
        return f"added #{len(self.items)}: {text}"

    def list_items(self) -> list[str]:
        """List the to-do items in order."""
        return self.items


SCRIPT = [
    '<tool_call>\n{"name": "add_item", "arguments": {"text": "buy milk"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "add_item", "arguments": {"text": "call Ada"}}\n</tool_call>',
    "Added two items: buy milk, call Ada.",
    '<tool_call>\n{"name": "list_items", "arguments": {}}\n</tool_call>',
    "Your list: 1. buy milk 2. call Ada.",
]


def main() -> None:
    todo = TodoList()
    model = os.environ.get("Q3AGENT_MODEL")
    agent = Agent(
        model,
        runtime=None if model else ScriptedRuntime(SCRIPT),
        tools=[tool(todo.add_item), tool(todo.list_items)],
        policy=NeverThink(),
    )
    session = agent.session()
    for task in ("Add 'buy milk' and 'call Ada' to my list.", "What's on my list now?"):
        result = session.run(task)
        print(f"user: {task}\nassistant: {result.answer}")
        print(f"  ({len(result.steps)} steps, {result.usage.cached_tokens} cached prompt tokens)")
    print(f"state: {todo.items}")


if __name__ == "__main__":
    main()
