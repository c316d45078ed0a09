"""SchemaRuntime: an Agent run that calls every tool with schema-valid arguments, unscripted."""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from q3agent import Agent, AlwaysThink, NeverThink, RunContext, tool
from q3agent.testing import SchemaRuntime, example_arguments, example_value
from q3agent.tools import Tool

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Address(BaseModel):
    street: str
    zip_code: Annotated[str, Field(min_length=5, max_length=5)]
    floor: int | None = None


class Order(BaseModel):
    item: str
    quantity: Annotated[int, Field(ge=1, le=10)]
    ship_to: Address


@tool
def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Current weather in a city.

    Args:
        city: City name.
        unit: Temperature unit.
    """
    return f"{city}: 18 {unit}"


@tool
def place_orders(orders: list[Order], priority: Priority, note: str | None = None) -> str:
    """Place orders.

    Args:
        orders: What to order and where to ship it.
        priority: How urgent.
        note: Anything to tell the shop.
    """
    return f"{len(orders)} order(s) to {orders[0].ship_to.zip_code}, {priority.value}"


@tool
async def tag_items(
    ctx: RunContext[None], tags: list[Literal["new", "sale"]], counts: dict[str, int], ratio: float
) -> dict[str, Any]:
    """Tag items."""
    return {"tags": tags, "counts": counts, "ratio": ratio, "step": ctx.step}


THERMOSTAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "celsius": {"type": "number", "exclusiveMinimum": 5, "maximum": 30},
        "minutes": {"type": "integer", "minimum": 10, "multipleOf": 15},
        "at": {"type": "string", "format": "date-time"},
        "room": {"$ref": "#/$defs/Room"},
        "days": {
            "type": "array",
            "items": {"type": "string", "enum": ["mon", "tue"]},
            "minItems": 2,
            "uniqueItems": True,
        },
    },
    "required": ["celsius", "minutes", "at", "room", "days"],
    "$defs": {"Room": {"allOf": [{"type": "object", "properties": {"name": {"type": "string"}}}]}},
}


class Thermostat(Tool):
    """A hand-written JSON schema (validated by Tool.validate): bounds, multipleOf, formats,
    $ref and allOf."""

    name = "set_thermostat"
    description = "Set the thermostat."

    def __init__(self) -> None:
        self.parameters = THERMOSTAT_SCHEMA

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        return arguments


async def test_agent_calls_every_tool_with_valid_arguments_then_answers() -> None:
    runtime = SchemaRuntime()
    agent = Agent(
        runtime=runtime,
        tools=[get_weather, place_orders, tag_items, Thermostat()],
        policy=NeverThink(),
    )
    result = await agent.arun("Use all the tools.")
    assert result.status == "answer"
    (step, _) = result.steps
    assert [r.name for r in step.tool_results] == [
        "get_weather",
        "place_orders",
        "tag_items",
        "set_thermostat",
    ]
    assert [r.is_error for r in step.tool_results] == [False] * 4, [
        r.content for r in step.tool_results
    ]
    assert [name for name, _ in runtime.calls] == [r.name for r in step.tool_results]
    answer = json.loads(result.answer)
    assert answer["get_weather"] == "city: 18 c"
    assert answer["place_orders"] == "1 order(s) to zip_c, low"
    tagged = json.loads(answer["tag_items"])
    assert tagged == {"tags": ["new"], "counts": {"key": 1}, "ratio": 1.5, "step": 0}
    thermostat = json.loads(answer["set_thermostat"])
    assert thermostat["celsius"] == 5.5
    assert thermostat["minutes"] == 15
    assert thermostat["at"] == "2024-01-31T12:00:00Z"
    assert thermostat["room"] == {"name": "name"}
    assert thermostat["days"] == ["mon", "tue"]


async def test_thinking_mode_subset_of_tools_and_a_fixed_answer() -> None:
    runtime = SchemaRuntime(call_tools=["get_weather"], answer="Done.")
    agent = Agent(runtime=runtime, tools=[get_weather, place_orders], policy=AlwaysThink())
    result = await agent.arun("Weather?")
    assert result.answer == "Done."
    assert result.reasoning
    assert runtime.calls == [("get_weather", {"city": "city", "unit": "c"})]
    assert [r.content for s in result.steps for r in s.tool_results] == ["city: 18 c"]


async def test_without_tools_it_just_answers() -> None:
    result = await Agent(runtime=SchemaRuntime(), policy=NeverThink()).arun("Hi")
    assert result.status == "answer"
    assert result.answer == "There are no tools to call."


async def test_each_task_of_a_session_calls_the_tools_again() -> None:
    runtime = SchemaRuntime()
    session = Agent(runtime=runtime, tools=[get_weather], policy=NeverThink()).session()
    await session.arun("first")
    await session.arun("second")
    assert [name for name, _ in runtime.calls] == ["get_weather", "get_weather"]


def test_example_values_fit_their_schemas() -> None:
    assert example_arguments(get_weather.parameters) == {"city": "city", "unit": "c"}
    assert example_value({"type": ["null", "integer"], "maximum": -3}) == -3
    assert example_value({"type": "string", "minLength": 8}, name="id") == "idxxxxxx"
    assert example_value({"type": "string", "pattern": "^[0-9]+$", "default": "42"}) == "42"
    assert example_value({"type": "integer", "examples": [7]}) == 7
    assert example_value({"const": "fixed"}) == "fixed"
    assert example_value({"type": "array", "items": {"type": "integer"}, "minItems": 3}) == [
        1,
        2,
        3,
    ]
    assert example_value({"type": "array", "prefixItems": [{"type": "boolean"}, {}]}) == [
        True,
        "value1",
    ]
    recursive = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["label"],
            }
        },
    }
    # deep down, objects keep only required properties and arrays only minItems: it ends
    assert example_value(recursive) == {
        "label": "label",
        "children": [{"label": "label", "children": []}],
    }
