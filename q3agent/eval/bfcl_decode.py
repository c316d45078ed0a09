"""BFCL's own decoders on q3agent's completions: the second score every result carries.

q3agent's parser is lenient (JSON without newlines, arguments as a JSON string, text around
the calls); BFCL's Qwen3 handlers are strict. To report what BFCL itself would score, the same
completion is decoded here exactly as bfcl-eval's local Qwen3 handlers do it:

* the text after the last ``</think>`` (left newlines stripped) is what BFCL stores;
* FC mode: ``QwenFCHandler.decode_ast`` / ``decode_execute`` (only
  ``<tool_call>\\n{json}\\n</tool_call>`` blocks count);
* prompt mode: ``QwenHandler``'s ``default_decode_ast_prompting`` (a Python call list).

The verdict then follows BFCL's evaluation runner: a decoder exception fails an AST entry
(``ast_decoder:decoder_failed``), a wrong shape fails it too, relevance entries count a call
only when decoding succeeds with a non-empty list, and multi-turn steps whose decoding fails
or is empty contribute no calls.

bfcl-eval's handler modules import the ``openai`` client at module level; when it is not
installed a stand-in is placed in ``sys.modules`` only while they are imported (the client is
never constructed: decoding needs no server).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any, Literal

from q3agent.eval.bfcl_data import BfclEntry, bfcl_module
from q3agent.eval.scoring import Verdict, check_decoded, check_relevance_made_call

__all__ = [
    "bfcl_ast_verdict",
    "bfcl_decode_ast",
    "bfcl_decode_execute",
    "bfcl_stored_response",
]

Mode = Literal["fc", "prompt"]

_HANDLERS: dict[Mode, Any] = {}


def bfcl_stored_response(completion: str) -> str:
    """What BFCL's Qwen3 handlers keep of a completion: the text after the last ``</think>``."""
    if "</think>" in completion:
        return completion.split("</think>")[-1].lstrip("\n")
    return completion


def _handler(mode: Mode) -> Any:
    """An instance of bfcl-eval's local Qwen3 handler (FC or prompting), never initialised.

    ``decode_ast``/``decode_execute`` read no instance state, so no client or server is set up.
    """
    if mode in _HANDLERS:
        return _HANDLERS[mode]
    name = "qwen_fc" if mode == "fc" else "qwen"
    stand_in = None
    if "openai" not in sys.modules and importlib.util.find_spec("openai") is None:
        stand_in = types.ModuleType("openai")
        stand_in.__doc__ = "q3agent stand-in while bfcl-eval's handlers import: never called."
        stand_in.OpenAI = object  # type: ignore[attr-defined]
        sys.modules["openai"] = stand_in
    try:
        module = bfcl_module(f"model_handler.local_inference.{name}")
    finally:
        if stand_in is not None and sys.modules.get("openai") is stand_in:
            del sys.modules["openai"]
    cls = module.QwenFCHandler if mode == "fc" else module.QwenHandler
    handler = object.__new__(cls)
    _HANDLERS[mode] = handler
    return handler


def _return_format(entry: BfclEntry) -> Any:
    enums = bfcl_module("constants.enums")
    return {
        "python": enums.ReturnFormat.PYTHON,
        "java": enums.ReturnFormat.JAVA,
        "javascript": enums.ReturnFormat.JAVASCRIPT,
    }[entry.language]


def bfcl_decode_ast(entry: BfclEntry, completion: str, mode: Mode) -> Any:
    """BFCL's ``decode_ast`` of a single-turn completion (raises as BFCL's decoder does)."""
    # BFCL decodes relevance entries as Python whatever their functions' language
    fmt = _return_format(entry)
    return _handler(mode).decode_ast(bfcl_stored_response(completion), fmt, False)


def bfcl_decode_execute(completion: str, mode: Mode = "fc") -> list[str]:
    """BFCL's ``decode_execute`` of one multi-turn step: ``name(a=1)`` strings, ``[]`` when
    BFCL's decoder fails or finds nothing (the step then contributes no calls)."""
    utils = bfcl_module("eval_checker.multi_turn_eval.multi_turn_utils")
    try:
        decoded: list[str] = _handler(mode).decode_execute(bfcl_stored_response(completion), False)
    except Exception:
        return []
    return [] if utils.is_empty_execute_response(decoded) else list(decoded)


def bfcl_ast_verdict(entry: BfclEntry, completion: str, mode: Mode) -> tuple[Verdict, Any]:
    """Score a single-turn completion the way BFCL's evaluation runner does, with its decoder.

    Returns the verdict and what BFCL's decoder produced (``None`` when it raised).
    """
    try:
        decoded = bfcl_decode_ast(entry, completion, mode)
    except Exception as exc:
        if entry.is_relevance:
            return check_relevance_made_call(entry, made_call=False), None
        return Verdict(
            False, [f"Invalid syntax. Failed to decode AST. {exc}"], "ast_decoder:decoder_failed"
        ), None
    utils = bfcl_module("utils")
    if entry.is_relevance:
        return check_relevance_made_call(entry, not utils.is_empty_output(decoded)), decoded
    if not utils.is_function_calling_format_output(decoded):
        return Verdict(
            False,
            ["Did not output in the specified format."],
            "ast_decoder:decoder_wrong_output_format",
        ), decoded
    return check_decoded(entry, decoded), decoded
