"""Tests for @tool: schemas from signatures and docstrings, argument validation, registries."""

import enum
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from q3agent.tools import (
    FunctionTool,
    RunContext,
    StaticToolset,
    Tool,
    ToolArgumentsError,
    ToolDefinitionError,
    collect_tools,
    render_output,
    resolve_tools,
    tool,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ctx() -> RunContext[None]:
    return RunContext(deps=None, run_id="run-1", step=0, messages=[])


def _keys_anywhere(node: Any, key: str) -> bool:
    """Whether ``key`` is a schema keyword anywhere (property names are not keywords)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                return True
            if k == "properties" and isinstance(v, dict):
                if any(_keys_anywhere(s, key) for s in v.values()):
                    return True
            elif _keys_anywhere(v, key):
                return True
    if isinstance(node, list):
        return any(_keys_anywhere(v, key) for v in node)
    return False


def _errors(t: Tool, arguments: dict[str, Any]) -> list[str]:
    with pytest.raises(ToolArgumentsError) as info:
        t.validate(arguments)
    return info.value.errors


class Unit(enum.Enum):
    """Temperature unit."""

    CELSIUS = "c"
    FAHRENHEIT = "f"


class Address(BaseModel):
    """A postal address."""

    street: str
    city: str
    zip_code: str | None = None


class Node(BaseModel):
    """A tree node."""

    label: str
    children: list["Node"] = []


# -- schema generation -------------------------------------------------------------------------


def test_literal_becomes_enum_with_default_and_required_is_correct() -> None:
    @tool
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        """Current weather in a city."""
        return f"{city}:{unit}"

    schema = get_weather.schema()
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "get_weather"
    assert fn["description"] == "Current weather in a city."
    params = fn["parameters"]
    assert list(params) == ["type", "properties", "required"]
    assert params["type"] == "object"
    assert params["properties"]["unit"] == {"type": "string", "enum": ["c", "f"], "default": "c"}
    assert params["properties"]["city"] == {"type": "string"}
    assert params["required"] == ["city"]
    assert not _keys_anywhere(params, "title")
    # The schema is what the chat template renders with tojson: it must be plain JSON.
    assert json.loads(json.dumps(schema)) == schema


def test_enum_parameter_is_listed_by_value_and_validated_into_the_enum() -> None:
    seen: list[Unit] = []

    @tool
    def set_unit(unit: Unit) -> str:
        """Choose the unit."""
        seen.append(unit)
        return unit.value

    prop = set_unit.parameters["properties"]["unit"]
    assert prop["type"] == "string"
    assert prop["enum"] == ["c", "f"]
    assert prop["description"] == "Temperature unit."
    assert "$defs" not in set_unit.parameters
    assert set_unit(set_unit.validate({"unit": "f"}).unit) == "f"  # type: ignore[attr-defined]
    assert seen == [Unit.FAHRENHEIT]


def test_optional_parameter_is_nullable_and_not_required() -> None:
    @tool
    def search(query: str, limit: int | None = None) -> str:
        """Search."""
        return query

    params = search.parameters
    assert params["properties"]["limit"] == {"type": ["integer", "null"], "default": None}
    assert params["required"] == ["query"]


async def test_nested_models_are_inlined_and_arrive_as_model_instances() -> None:
    received: list[list[Address]] = []

    @tool
    async def send_letters(to: list[Address], note: dict[str, float] | None = None) -> str:
        """Send letters."""
        received.append(to)
        return "sent"

    params = send_letters.parameters
    assert "$defs" not in params
    items = params["properties"]["to"]["items"]
    assert params["properties"]["to"]["type"] == "array"
    assert items["type"] == "object"
    assert items["description"] == "A postal address."
    assert items["required"] == ["street", "city"]
    assert items["properties"]["zip_code"] == {"type": ["string", "null"], "default": None}
    note = params["properties"]["note"]
    assert note["anyOf"][0] == {"type": "object", "additionalProperties": {"type": "number"}}

    arguments = send_letters.validate({"to": [{"street": "1 Main St", "city": "Oslo"}]})
    assert await send_letters.call(arguments, _ctx()) == "sent"
    assert received == [[Address(street="1 Main St", city="Oslo")]]


def test_recursive_model_keeps_a_defs_block() -> None:
    @tool
    def plant(tree: Node) -> int:
        """Plant a tree."""
        return len(tree.children)

    params = plant.parameters
    assert params["$defs"]["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert not _keys_anywhere(params, "title")
    args = plant.validate({"tree": {"label": "a", "children": [{"label": "b"}]}})
    assert plant(args.tree) == 1  # type: ignore[attr-defined]


def test_annotated_field_description_wins_over_docstring() -> None:
    @tool
    def tag(
        item: Annotated[str, Field(description="The item id, like 'A-12'.")],
        labels: list[str],
        count: int = Field(3, description="How many.", ge=1),
    ) -> str:
        """Tag an item.

        Args:
            item: Docstring text that should lose.
            labels: Labels to add.
            count: Docstring text that should also lose.
        """
        return item

    props = tag.parameters["properties"]
    assert props["item"]["description"] == "The item id, like 'A-12'."
    assert props["labels"] == {
        "type": "array",
        "description": "Labels to add.",
        "items": {"type": "string"},
    }
    assert props["count"]["description"] == "How many."
    assert props["count"]["minimum"] == 1
    assert props["count"]["default"] == 3
    assert tag.parameters["required"] == ["item", "labels"]


def test_google_docstring_gives_description_and_parameter_descriptions() -> None:
    @tool
    def convert(amount: float, currency: str) -> str:
        """Convert an amount to euros.

        Uses today's rate.

        Args:
            amount: How much money.
            currency: ISO code such as "USD".

        Returns:
            The amount in euros.
        """
        return ""

    assert convert.description == "Convert an amount to euros.\n\nUses today's rate."
    props = convert.parameters["properties"]
    assert props["amount"] == {"type": "number", "description": "How much money."}
    assert props["currency"]["description"] == 'ISO code such as "USD".'


def test_numpy_docstring_gives_parameter_descriptions() -> None:
    @tool
    def convert(amount: float, currency: str) -> str:
        """Convert an amount to euros.

        Parameters
        ----------
        amount : float
            How much money.
        currency : str
            ISO code.
        """
        return ""

    assert convert.description == "Convert an amount to euros."
    props = convert.parameters["properties"]
    assert props["amount"]["description"] == "How much money."
    assert props["currency"]["description"] == "ISO code."


def test_sphinx_docstring_gives_parameter_descriptions() -> None:
    @tool
    def convert(amount: float, currency: str) -> str:
        """Convert an amount to euros.

        :param amount: How much money.
        :param currency: ISO code.
        """
        return ""

    assert convert.description == "Convert an amount to euros."
    assert convert.parameters["properties"]["currency"]["description"] == "ISO code."


def test_decorator_options_override_defaults() -> None:
    @tool(
        name="rm",
        description="Delete a file.",
        requires_approval=True,
        timeout=5,
        max_retries=0,
    )
    def delete_file(path: str) -> None:
        """Ignored docstring."""

    assert isinstance(delete_file, FunctionTool)
    assert delete_file.name == "rm"
    assert delete_file.description == "Delete a file."
    assert delete_file.requires_approval is True
    assert delete_file.timeout == 5
    assert delete_file.max_retries == 0
    assert delete_file.schema()["function"]["name"] == "rm"


def test_decorated_function_is_still_callable() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    assert add(2, 3) == 5


async def test_run_context_parameter_is_injected_and_not_in_schema() -> None:
    @tool
    def whoami(ctx: RunContext[dict[str, str]], greeting: str) -> str:
        """Greet the current user."""
        return f"{greeting}, {ctx.deps['user']} (run {ctx.run_id}, step {ctx.step})"

    assert list(whoami.parameters["properties"]) == ["greeting"]
    ctx = RunContext(deps={"user": "ada"}, run_id="r9", step=2, messages=[])
    result = await whoami.call(whoami.validate({"greeting": "hi"}), ctx)
    assert result == "hi, ada (run r9, step 2)"


async def test_bound_method_excludes_self_and_keeps_state() -> None:
    class Notebook:
        def __init__(self) -> None:
            self.notes: list[str] = []

        def add_note(self, text: str) -> str:
            """Save a note.

            Args:
                text: The note.
            """
            self.notes.append(text)
            return f"saved note {len(self.notes)}"

    book = Notebook()
    add_note = tool(book.add_note)
    assert add_note.name == "add_note"
    assert list(add_note.parameters["properties"]) == ["text"]
    assert await add_note.call(add_note.validate({"text": "milk"}), _ctx()) == "saved note 1"
    assert await add_note.call({"text": "eggs"}, _ctx()) == "saved note 2"
    assert book.notes == ["milk", "eggs"]


def test_parameters_shadowing_pydantic_names_keep_their_names() -> None:
    @tool
    def fetch(json: bool, schema: str = "v1") -> str:
        """Fetch."""
        return f"{json}-{schema}"

    assert list(fetch.parameters["properties"]) == ["json", "schema"]
    args = fetch.validate({"json": True, "schema": "v2"})
    assert args is not None


async def test_shadowing_names_reach_the_function() -> None:
    @tool
    def fetch(json: bool, schema: str = "v1") -> str:
        """Fetch."""
        return f"{json}-{schema}"

    assert await fetch.call({"json": True, "schema": "v2"}, _ctx()) == "True-v2"


def test_star_args_are_rejected_with_guidance() -> None:
    def spread(*values: int) -> int:
        return sum(values)

    with pytest.raises(ToolDefinitionError, match="own named"):
        tool(spread)


def test_lambda_needs_a_name() -> None:
    with pytest.raises(ToolDefinitionError, match="name="):
        tool(lambda x: x)
    named = tool(lambda x: x, name="identity")
    assert named.name == "identity"


# -- validation --------------------------------------------------------------------------------


@tool
def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int = 1) -> str:
    """Weather forecast."""
    return city


def test_literal_violation_message_names_field_choices_and_value() -> None:
    errors = _errors(get_weather, {"city": "Paris", "unit": "kelvin"})
    assert errors == ["argument 'unit' must be one of 'c', 'f'; got 'kelvin'"]


def test_missing_unexpected_and_wrong_type_are_each_reported() -> None:
    errors = _errors(get_weather, {"units": "c", "days": "two"})
    assert "missing required argument 'city'" in errors
    assert "argument 'days' must be an integer; got 'two'" in errors
    assert "unexpected argument 'units' (accepted: city, unit, days)" in errors
    assert len(errors) == 3


def test_nested_errors_carry_the_path() -> None:
    @tool
    def mail(to: list[Address]) -> str:
        """Mail."""
        return ""

    errors = _errors(mail, {"to": [{"street": "x", "city": "y"}, {"street": "z", "city": 5}]})
    assert errors == ["argument 'to[1].city' must be a string; got 5"]
    errors = _errors(mail, {"to": [{"street": "x"}]})
    assert errors == ["missing required argument 'to[0].city'"]


def test_constraint_errors_quote_the_constraint() -> None:
    @tool
    def repeat(times: Annotated[int, Field(ge=1, le=5)]) -> str:
        """Repeat."""
        return ""

    (error,) = _errors(repeat, {"times": 9})
    assert error == "argument 'times': input should be less than or equal to 5; got 9"


def test_lax_mode_coerces_numbers_but_strict_mode_does_not() -> None:
    assert get_weather.validate({"city": "Oslo", "days": "3"}).days == 3  # type: ignore[attr-defined]

    @tool(strict=True)
    def forecast(city: str, days: int) -> str:
        """Forecast."""
        return city

    assert forecast.parameters["additionalProperties"] is False
    assert forecast.schema()["function"]["strict"] is True
    assert _errors(forecast, {"city": "Oslo", "days": "3"}) == [
        "argument 'days' must be an integer; got '3'"
    ]
    assert "additionalProperties" not in get_weather.parameters


# -- class-based tools validated by their JSON schema ------------------------------------------


class Counter(Tool):
    name = "increment"
    description = "Add to the counter."
    parameters = {  # noqa: RUF012 - the documented class-attribute pattern
        "type": "object",
        "properties": {
            "by": {"type": "integer"},
            "mode": {"type": "string", "enum": ["add", "sub"]},
        },
        "required": ["by"],
        "additionalProperties": False,
    }

    def __init__(self) -> None:
        self.total = 0

    async def call(self, arguments: Any, ctx: RunContext[Any]) -> Any:
        self.total += arguments["by"] if arguments.get("mode", "add") == "add" else -arguments["by"]
        return {"total": self.total}


async def test_subclassed_tool_validates_with_its_json_schema() -> None:
    counter = Counter()
    assert counter.validate({"by": 2}) == {"by": 2}
    errors = _errors(counter, {"mode": "mul", "extra": 1})
    assert "missing required argument 'by'" in errors
    assert "argument 'mode' must be one of 'add', 'sub'; got 'mul'" in errors
    assert "unexpected argument 'extra' (accepted: by, mode)" in errors
    assert _errors(counter, {"by": "2"}) == ["argument 'by' must be an integer; got '2'"]
    assert await counter.call({"by": 5}, _ctx()) == {"total": 5}
    assert counter.render({"total": 5}) == '{"total": 5}'
    assert counter.schema()["function"]["parameters"] is Counter.parameters


# -- output rendering --------------------------------------------------------------------------


def test_render_output_rules() -> None:
    assert render_output("as is") == "as is"
    assert render_output(None) == "(no output)"
    assert render_output({"city": "Zürich", "temp": 3.5}) == '{"city": "Zürich", "temp": 3.5}'
    assert render_output([1, True, None]) == "[1, true, null]"
    assert render_output(Address(street="Å 1", city="Malmö")) == (
        '{"street": "Å 1", "city": "Malmö", "zip_code": null}'
    )
    assert render_output(Unit.CELSIUS) == '"c"'
    assert render_output(b"\x00\x01\x02") == (
        "(binary output of 3 bytes, not shown; return text to show it)"
    )


# -- resolving Agent(tools=[...]) --------------------------------------------------------------


def lookup(key: str) -> str:
    """Look up a key."""
    return key


async def test_resolve_tools_wraps_functions_and_rejects_duplicates() -> None:
    counter = Counter()
    registry = resolve_tools([lookup, counter, get_weather])
    assert list(registry) == ["lookup", "increment", "get_weather"]
    assert isinstance(registry["lookup"], FunctionTool)
    assert registry["increment"] is counter
    # The same tool object twice is harmless.
    assert list(resolve_tools([counter, counter])) == ["increment"]
    with pytest.raises(ToolDefinitionError, match="two tools are named 'lookup'"):
        resolve_tools([lookup, tool(lookup)])
    with pytest.raises(ToolDefinitionError, match="is not a tool"):
        resolve_tools([42])  # type: ignore[list-item]
    with pytest.raises(ToolDefinitionError, match="toolset"):
        resolve_tools([StaticToolset([lookup])])  # type: ignore[list-item]


async def test_collect_tools_lists_toolsets() -> None:
    class Remote:
        def __init__(self) -> None:
            self.listed = 0

        async def list_tools(self) -> Sequence[Tool]:
            self.listed += 1
            return [Counter()]

    remote = Remote()
    registry = await collect_tools([lookup, remote, StaticToolset([get_weather])])
    assert list(registry) == ["lookup", "increment", "get_weather"]
    assert remote.listed == 1
    with pytest.raises(ToolDefinitionError, match="two tools are named 'increment'"):
        await collect_tools([remote, Counter()])
