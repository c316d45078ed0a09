"""Tests for function_schema(): a function's signature and docstring read into a FunctionSchema,
without building a tool."""

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from q3agent.tools import (
    FunctionSchema,
    FunctionTool,
    RunContext,
    ToolDefinitionError,
    function_schema,
)


class Point(BaseModel):
    x: int
    y: int


def plan_trip(
    city: str,
    days: int = 2,
    mode: Literal["train", "car"] = "train",
    stops: list[Point] | None = None,
    budget: Annotated[float, Field(description="Euros in all.")] = 100.0,
) -> str:
    """Plan a trip.

    Args:
        city: Where to go.
        days: How many days.
        budget: Ignored: the Field description wins.
    """
    return city


def test_parameters_required_defaults_and_descriptions() -> None:
    schema = function_schema(plan_trip)
    assert isinstance(schema, FunctionSchema)
    assert schema.name == "plan_trip"
    assert schema.description == "Plan a trip."
    params = schema.parameters
    assert list(params["properties"]) == ["city", "days", "mode", "stops", "budget"]
    assert params["required"] == ["city"]
    assert params["properties"]["city"] == {"type": "string", "description": "Where to go."}
    assert params["properties"]["days"] == {
        "type": "integer",
        "description": "How many days.",
        "default": 2,
    }
    assert params["properties"]["mode"] == {
        "type": "string",
        "enum": ["train", "car"],
        "default": "train",
    }
    assert params["properties"]["budget"]["description"] == "Euros in all."
    stops = params["properties"]["stops"]
    assert stops["anyOf"][0]["type"] == "array"
    assert stops["anyOf"][0]["items"]["properties"] == {
        "x": {"type": "integer"},
        "y": {"type": "integer"},
    }
    assert "additionalProperties" not in params


def test_name_description_and_strict_options() -> None:
    schema = function_schema(plan_trip, name="trip", description="Custom.", strict=True)
    assert schema.name == "trip"
    assert schema.description == "Custom."
    assert schema.parameters["additionalProperties"] is False


def test_arguments_model_validates_and_maps_back_to_parameters() -> None:
    def f(a: int, /, b: str, ctx: RunContext[None], model_name: str = "m") -> str:
        """F."""
        return b

    schema = function_schema(f)
    assert schema.context_param == ("ctx", False)
    assert "ctx" not in schema.parameters["properties"]
    assert "model_name" in schema.parameters["properties"]  # aliased field keeps its name
    assert schema.is_async is False
    validated = schema.arguments_model.model_validate({"a": 1, "b": "x", "model_name": "q"})
    ctx: RunContext[None] = RunContext(deps=None, run_id="r", step=0, messages=[])
    args, kwargs = schema.call_arguments(validated, ctx)
    assert args == [1]
    assert kwargs == {"b": "x", "model_name": "q", "ctx": ctx}


def test_async_functions_are_marked_async() -> None:
    async def g(x: int) -> int:
        """G."""
        return x

    assert function_schema(g).is_async is True


def test_function_tool_uses_the_same_schema() -> None:
    made = FunctionTool(plan_trip)
    assert made.parameters == function_schema(plan_trip).parameters
    assert made.function_schema.name == made.name == "plan_trip"


class Opaque:
    pass


def takes_opaque(thing: Opaque) -> str:
    """Unsupported."""
    return ""


def takes_star_args(*items: str) -> str:
    """Unsupported."""
    return ""


def two_contexts(a: RunContext[Any], b: RunContext[Any]) -> str:
    """Unsupported."""
    return ""


def generator() -> Any:
    """Unsupported."""
    yield 1


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (takes_opaque, "cannot build a JSON schema for tool 'takes_opaque'"),
        (takes_star_args, "own named, typed parameter"),
        (two_contexts, "two RunContext parameters"),
        (generator, "is a generator"),
        (lambda x: x, "pass one: tool"),
    ],
)
def test_unsupported_functions_raise_definition_errors(function: Any, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=message):
        function_schema(function)
