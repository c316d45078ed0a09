"""The thinking budget inside the engine: the report's early-stop text forced at the budget.

The Qwen3 report's budget procedure (:mod:`q3agent.serving.budget`) cuts a reasoning that
reaches its budget, appends the early-stop sentence ("Considering the limited time by the
user, … \\n</think>\\n\\n") and asks again: a second request that re-prefills the sentence
(and, on vLLM, the last partial cache block). Engines' own budget switches (SGLang's
``Qwen3ThinkingBudgetLogitProcessor``, vLLM's ``thinking_token_budget``) force ``</think>``
alone, without the sentence. Where the engine runs our code per sampled token, this module
forces the sentence there instead: once the reasoning holds ``budget`` tokens without
``</think>``, the next tokens are the early-stop ids, one per step, and then the model answers
in the same request. A budget-hit step is one request with nothing re-prefilled.

Two processors share :func:`forced_budget_token`:

* :class:`VLLMThinkingBudget`, a vLLM v1 logits processor. Start the server with
  ``--logits-processors q3agent.serving.engine_budget:VLLMThinkingBudget`` (q3agent importable
  there: installed, or on ``PYTHONPATH``; this file imports only the standard library at the
  top) and pass ``OpenAICompatibleRuntime(..., engine_budget=True)``. The parameters travel in
  ``vllm_xargs``.
* An SGLang ``CustomLogitProcessor`` (:func:`sglang_processor_str`), for the embedded engine
  and servers started with ``--enable-custom-logit-processor``; its parameters travel in
  ``sampling_params.custom_params``. SGLang's overlap scheduler hands processors the output
  one token late, so the server also needs ``--disable-overlap-schedule``.

Runtimes say whether they apply the budget in the engine (:func:`applies_budget_in_engine`).
The budget procedure checks, token by token, that the ids after the budget are the early-stop
ids: if they are not (a server without the processor, a router that drops its parameters, an
overlap-scheduled SGLang), it cuts the stream there and falls back to abort-and-continue.
"""

from __future__ import annotations

import functools
import inspect
import json
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from q3agent.qwen3.tokenizer import Qwen3Tokenizer
    from q3agent.serving.base import Runtime

LIMIT_ARG = "q3agent_budget_limit"
"""Completion tokens the reasoning may take before the early-stop ids are forced (the budget,
plus one for the ``<think>`` a hybrid Qwen3 writes itself)."""
OPEN_ARG = "q3agent_budget_open"
"""1 when the prompt already opened the reasoning (Thinking-2507), else 0."""
THINK_ARG = "q3agent_budget_think"
"""``[<think> id, </think> id]``."""
STOP_ARG = "q3agent_budget_stop"
"""The ids of the early-stop text (the sentence, ``</think>``, ``\\n\\n``)."""
BREAKS_ARG = "q3agent_budget_breaks"
"""``[id of "\\n", id of "\\n\\n"]``: the paragraph break put before the sentence."""

PARAM_KEYS = (LIMIT_ARG, OPEN_ARG, THINK_ARG, STOP_ARG, BREAKS_ARG)


@dataclass(frozen=True, slots=True)
class EngineBudget:
    """A thinking budget for the engine to apply to one request.

    ``budget``: reasoning tokens allowed; ``model_opens_think``: the model writes ``<think>``
    itself (hybrid Qwen3), so the completion's reasoning share is one token more.
    """

    budget: int
    model_opens_think: bool = True

    @property
    def limit(self) -> int:
        """Completion tokens before the early-stop ids are forced."""
        return self.budget + (1 if self.model_opens_think else 0)


def budget_params(budget: EngineBudget, tokenizer: Qwen3Tokenizer) -> dict[str, Any]:
    """The request parameters the engine processors read (flat: ``vllm_xargs`` takes no nesting)."""
    from q3agent.qwen3.thinking import EARLY_STOP_TEXT

    return {
        LIMIT_ARG: budget.limit,
        OPEN_ARG: 0 if budget.model_opens_think else 1,
        THINK_ARG: [tokenizer.think_id, tokenizer.think_end_id],
        STOP_ARG: tokenizer.encode_trusted(EARLY_STOP_TEXT),
        BREAKS_ARG: [tokenizer.encode_trusted("\n")[0], tokenizer.encode_trusted("\n\n")[0]],
    }


def forced_budget_ids(
    head: Sequence[int], params: Mapping[str, Any], trailing_newlines: int | None
) -> list[int]:
    """The ids forced after ``head`` (the reasoning cut at the budget).

    The early-stop ids after a paragraph break, as
    :func:`q3agent.qwen3.thinking.budget_continuation` puts it: none after an empty head or one
    that ends with a blank line, ``"\\n"`` after one newline, ``"\\n\\n"`` otherwise.
    ``trailing_newlines`` is how many newlines the head's text ends with (``None``: unknown,
    an engine without a tokenizer; the Qwen documentation's ``"\\n\\n"`` is used).
    """
    newline, blank = params[BREAKS_ARG]
    stop = [int(t) for t in params[STOP_ARG]]
    if not head or (trailing_newlines is not None and trailing_newlines >= 2):
        return stop
    if trailing_newlines == 1:
        return [int(newline), *stop]
    return [int(blank), *stop]


def forced_budget_token(
    output_ids: Sequence[int],
    params: Mapping[str, Any],
    trailing_newlines: Callable[[Sequence[int]], int | None] | None = None,
) -> int | None:
    """The token the budget forces next, or ``None`` when it leaves the step to the model.

    ``output_ids`` are the request's completion so far. Nothing is forced before ``limit``
    tokens, when the reasoning was never opened (no ``<think>`` in the first ``limit`` and the
    prompt did not open it), when it closed within them, or once the early-stop ids are
    written. ``trailing_newlines(ids)`` counts the newlines the text of ``ids`` ends with (an
    engine's tokenizer), for the paragraph break.
    """
    limit = int(params[LIMIT_ARG])
    written = len(output_ids) - limit
    # the longest forced sequence is the stop ids plus one break token
    if written < 0 or written > len(params[STOP_ARG]):
        return None
    head = list(output_ids[:limit])
    think, think_end = (int(t) for t in params[THINK_ARG])
    if think_end in head or not (int(params[OPEN_ARG]) or think in head):
        return None
    newlines = trailing_newlines(head[-3:]) if trailing_newlines is not None and head else None
    forced = forced_budget_ids(head, params, newlines)
    if written >= len(forced) or list(output_ids[limit:]) != forced[:written]:
        return None  # done, or the model was not following (a processor joined late)
    return forced[written]


def budget_variants(head: Sequence[int], params: Mapping[str, Any]) -> list[list[int]]:
    """Every sequence an engine may force after ``head`` (it may not know the head's text)."""
    return [forced_budget_ids(head, params, n) for n in (0, 1, 2)]


def follows_budget(ids: Sequence[int], limit: int, variants: Sequence[Sequence[int]]) -> bool:
    """Whether the ids after the first ``limit`` are (so far) one of the forced ``variants``."""
    after = list(ids[limit:])
    for variant in variants:
        size = min(len(after), len(variant))
        if after[:size] == list(variant[:size]):
            return True
    return False


def applies_budget_in_engine(runtime: Runtime) -> bool:
    """Whether ``runtime`` forces the early-stop text inside its engine (its
    ``capabilities.engine_budget``)."""
    return runtime.capabilities.engine_budget


def _newline_counter(decode: Callable[[list[int]], str]) -> Callable[[Sequence[int]], int]:
    def count(ids: Sequence[int]) -> int:
        text = decode(list(ids))
        return len(text) - len(text.rstrip("\n"))

    return count


# ---------------------------------------------------------------------------- vLLM


def force_logits(logits: torch.Tensor, token: int | None) -> torch.Tensor:
    """A vLLM processor's forced step: ``logits`` with all but ``token`` at ``-inf``.

    ``logits`` come back unchanged where nothing is forced (``None``) or ``token`` is past
    the vocabulary. Shared with the scripted-token processor of
    :mod:`q3agent.testing.vllm_server`, which imports it from its copy of this file.
    """
    if token is None or token >= logits.shape[-1]:
        return logits
    forced = logits.new_full(logits.shape, float("-inf"))
    forced[token] = 0.0
    return forced


def _define_vllm_processor() -> type:
    """The vLLM logits-processor class (defined only where vLLM is importable)."""
    from vllm.v1.sample.logits_processor import (  # type: ignore[import-not-found]
        AdapterLogitsProcessor,
    )

    class VLLMThinkingBudget(AdapterLogitsProcessor):  # type: ignore[misc]
        """Forces the report's early-stop text when a request's reasoning reaches its budget.

        Requests opt in with the :data:`PARAM_KEYS` in ``vllm_xargs``; others are untouched.
        """

        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
            super().__init__(vllm_config, device, is_pin_memory)
            model_config = getattr(vllm_config, "model_config", None)
            self._tokenizer_name = getattr(model_config, "tokenizer", None)
            self._counter: Callable[[Sequence[int]], int] | None = None
            self._lock = threading.Lock()

        def is_argmax_invariant(self) -> bool:
            return False

        def _newlines(self, ids: Sequence[int]) -> int | None:
            with self._lock:
                if self._counter is None and self._tokenizer_name:
                    try:
                        from transformers import AutoTokenizer

                        tok = AutoTokenizer.from_pretrained(self._tokenizer_name)
                        self._counter = _newline_counter(lambda ids: str(tok.decode(ids)))
                    except Exception:  # no tokenizer: the Qwen docs' "\n\n" break
                        self._tokenizer_name = None
            return self._counter(ids) if self._counter is not None else None

        def new_req_logits_processor(
            self, params: Any
        ) -> Callable[[list[int], torch.Tensor], torch.Tensor] | None:
            extra = params.extra_args or {}
            if LIMIT_ARG not in extra:
                return None
            frozen = {key: extra[key] for key in PARAM_KEYS}

            def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
                token = forced_budget_token(output_ids, frozen, self._newlines)
                return force_logits(logits, token)

            return force

    return VLLMThinkingBudget


def __getattr__(name: str) -> Any:
    """``VLLMThinkingBudget`` is built on first access (it needs vLLM)."""
    if name == "VLLMThinkingBudget":
        cls = _define_vllm_processor()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------- SGLang

_SGLANG_CLASS = '''
from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor


class Q3AgentThinkingBudget(CustomLogitProcessor):
    """q3agent's thinking budget: forces the report's early-stop text at the budget."""

    def __call__(self, logits, custom_param_list=None):
        if CHAIN is not None:  # the runtime's own processor first (the budget overrides it)
            logits = CustomLogitProcessor.from_str(CHAIN)(logits, custom_param_list)
        for row, params in enumerate(custom_param_list or ()):
            if not params or LIMIT_ARG not in params:
                continue
            req = params.get("__req__")
            if req is None:
                continue
            tokenizer = getattr(req, "tokenizer", None)
            counter = _newline_counter(tokenizer.decode) if tokenizer is not None else None
            token = forced_budget_token(list(req.output_ids), params, counter)
            if token is not None and token < logits.shape[-1]:
                logits[row, :] = float("-inf")
                logits[row, token] = 0.0
        return logits
'''


class _Eval:
    """Pickles as ``eval(expression)``: what the SGLang server runs to load the processor."""

    def __init__(self, expression: str) -> None:
        self.expression = expression

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, (self.expression,))


def sglang_processor_source(chain: str | None = None) -> str:
    """The Python source of the SGLang processor class and the functions it calls.

    ``chain``: another serialised ``CustomLogitProcessor`` (SGLang takes one per request) that
    runs first on every step; the budget's forced ids override what it chose.
    """
    names: dict[str, object] = {
        "CHAIN": chain,
        "LIMIT_ARG": LIMIT_ARG,
        "OPEN_ARG": OPEN_ARG,
        "THINK_ARG": THINK_ARG,
        "STOP_ARG": STOP_ARG,
        "BREAKS_ARG": BREAKS_ARG,
    }
    constants = "".join(f"{key} = {value!r}\n" for key, value in sorted(names.items()))
    functions = "\n\n".join(
        inspect.getsource(f) for f in (forced_budget_ids, forced_budget_token, _newline_counter)
    )
    return (
        "from __future__ import annotations\n\n"
        "from collections.abc import Callable, Mapping, Sequence\nfrom typing import Any\n\n"
        + constants
        + "\n"
        + functions
        + _SGLANG_CLASS
    )


@functools.lru_cache(maxsize=8)
def sglang_processor_str(chain: str | None = None) -> str:
    """The SGLang ``custom_logit_processor`` value that loads :func:`sglang_processor_source`.

    SGLang loads the value as ``dill.loads(bytes.fromhex(json["callable"]))`` and calls the
    result. A by-reference pickle would need q3agent installed on the server, and dill's
    by-value pickle of a class carries bytecode that only the same Python version can load;
    this pickle carries the source and evaluates it on the server (so it needs only SGLang).
    """
    source = sglang_processor_source(chain)
    expression = (
        "(lambda ns: (exec(compile(ns['src'], 'q3agent_engine_budget', 'exec'), ns), "
        f"ns['Q3AgentThinkingBudget'])[1])({{'src': {source!r}, '__name__': "
        "'q3agent_engine_budget'})"
    )
    return json.dumps({"callable": pickle.dumps(_Eval(expression), protocol=4).hex()})
