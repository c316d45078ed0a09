"""BFCL function docs → Qwen3 tools, calls → BFCL's checker formats, ground truth → calls."""

from __future__ import annotations

import pytest

from q3agent.eval.bfcl_convert import (
    call_string,
    calls_from_answer,
    convert_schema,
    parse_call_string,
    source_value,
    to_qwen3_tool,
)
from q3agent.qwen3.messages import ToolCall

pytest.importorskip("bfcl_eval", reason="bfcl-eval not installed: pip install --no-deps bfcl-eval")


def test_bfcl_types_become_json_schema_types() -> None:
    doc = {
        "name": "math.solve",
        "description": "Solve.",
        "parameters": {
            "type": "dict",
            "properties": {
                "coeffs": {"type": "tuple", "items": {"type": "float"}},
                "opts": {"type": "dict", "properties": {"tol": {"type": "float"}}},
                "anything": {"type": "any", "description": "Any value."},
                "rows": {"type": "array", "items": {"type": "dict", "properties": {}}},
            },
            "required": ["coeffs"],
        },
    }
    tool = to_qwen3_tool(doc)
    assert tool["type"] == "function"
    fn = tool["function"]
    assert fn["name"] == "math.solve"
    params = fn["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["coeffs"]
    props = params["properties"]
    assert props["coeffs"] == {"type": "array", "items": {"type": "number"}}
    assert props["opts"]["type"] == "object"
    assert props["opts"]["properties"]["tol"]["type"] == "number"
    assert props["anything"] == {"description": "Any value."}
    assert props["rows"]["items"]["type"] == "object"
    # the BFCL doc itself is left untouched (the checker needs its own types)
    assert doc["parameters"]["properties"]["coeffs"]["type"] == "tuple"
    assert convert_schema({"type": "SomethingNew"}) == {"type": "SomethingNew"}


def test_call_string_matches_bfcl_execution_format() -> None:
    from q3agent.eval.bfcl_data import bfcl_module

    utils = bfcl_module("model_handler.utils")
    call = ToolCall(name="mv", arguments={"source": "a'b.txt", "n": 2, "flags": [True, None]})
    assert [call_string(call)] == utils.convert_to_function_call(
        [{"mv": {"source": "a'b.txt", "n": 2, "flags": [True, None]}}]
    )


def test_ground_truth_strings_with_positional_arguments() -> None:
    name, args = parse_call_string("sort('final_report.pdf')", lambda _: ["file_name"])
    assert (name, args) == ("sort", {"file_name": "final_report.pdf"})
    name, args = parse_call_string("cd(folder='docs')")
    assert (name, args) == ("cd", {"folder": "docs"})
    with pytest.raises(ValueError, match="positional"):
        parse_call_string("sort('x')")


def test_answer_options_pick_a_value_and_omit_optional_ones() -> None:
    answer = [
        {"area": {"base": [10], "unit": ["", "units"], "opts": [{"k": ["a", "b"], "z": [""]}]}}
    ]
    assert calls_from_answer(answer) == [("area", {"base": 10, "opts": {"k": "a"}})]


def test_java_values_are_written_as_source_the_converter_reads_back() -> None:
    from q3agent.eval.bfcl_data import bfcl_module

    conv = bfcl_module("eval_checker.ast_eval.type_convertor.java_type_converter")
    cases = [
        (True, {"type": "boolean"}),
        (5, {"type": "long"}),
        (1.5, {"type": "float"}),
        (["a", "b"], {"type": "ArrayList", "items": {"type": "String"}}),
        ({"limit": 50}, {"type": "HashMap"}),
        ([1, 2], {"type": "Array", "items": {"type": "integer"}}),
    ]
    for value, schema in cases:
        text = source_value(value, schema, "java")
        nested = schema.get("items", {}).get("type")
        assert conv.java_type_converter(text, schema["type"], nested) == value, text
