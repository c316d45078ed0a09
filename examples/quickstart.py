"""Quick start: one agent, two tools, budgeted thinking.

Runs out of the box with a scripted runtime (raw Qwen3 completions through the real
tokenizer). With a model configured it runs the real thing:

    python examples/quickstart.py                          # scripted
    Q3AGENT_MODEL=Qwen3-30B-A3B python examples/quickstart.py   # SGLang / transformers
"""

from __future__ import annotations

import os

from q3agent import Agent, PlanAct, ScriptedRuntime, tool


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


@tool
def convert_currency(amount: float, rate: float) -> float:
    """Convert an amount with an exchange rate.

    Args:
        amount: The amount in the source currency.
        rate: Units of the target currency per unit of the source currency.
    """
    return round(amount * rate, 2)


SCRIPT = [
    # step 0 (thinking: planning) - the model plans, then calls the first tool
    "<think>\nThe user wants 17 * 23 in euros at 0.92. First multiply, then convert.\n</think>"
    '\n\n<tool_call>\n{"name": "multiply", "arguments": {"a": 17, "b": 23}}\n</tool_call>',
    # step 1 (direct: executing the plan)
    '<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 391, "rate": 0.92}}'
    "\n</tool_call>",
    # step 2 (direct): the answer
    "17 × 23 = 391 dollars, which is 359.72 euros at a rate of 0.92.",
]


def main() -> None:
    model = os.environ.get("Q3AGENT_MODEL")
    runtime = None if model else ScriptedRuntime(SCRIPT)
    agent = Agent(model, runtime=runtime, tools=[multiply, convert_currency], policy=PlanAct())
    result = agent.run("What is 17 * 23 dollars in euros at a rate of 0.92?")
    for step in result.steps:
        mode = f"thinking (budget {step.budget})" if step.thinking else "direct"
        calls = ", ".join(f"{c.name}{getattr(c, 'arguments', '')}" for c in step.tool_calls)
        print(f"step {step.index}: {mode:<22} {step.reason:<32} {calls}")
    print(f"\nanswer: {result.answer}")
    u = result.usage
    print(
        f"status: {result.status}; {u.requests} requests, {u.prompt_tokens} prompt tokens "
        f"({u.cached_tokens} cached), {u.completion_tokens} completion tokens"
    )


if __name__ == "__main__":
    main()
