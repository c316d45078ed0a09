"""The Qwen3 report's thinking-budget procedure, on any runtime, in as few requests as it can.

A budgeted step asks for ``budget`` tokens (``budget + 1`` when the model writes ``<think>``
itself) and does **not** stop at ``</think>``: a model that closes its reasoning and ends its
turn within that limit needs one request. Only when the limit cuts the completion does a second
request follow, on the prompt + the first request's ids:

* cut inside the reasoning (``<think>`` open, no ``</think>``): the report's early-stop text
  ("Considering the limited time by the user, … \\n</think>\\n\\n") is appended first, so
  reasoning tokens never exceed the budget;
* cut inside the answer (reasoning closed, or none): a plain continuation.

Where the first request stopped is read from its ids (``</think>``, a final ``<|im_end|>``),
never from the engine's text or ``finish_reason`` alone. A prefix-caching runtime re-prefills
only the early-stop text in the continuation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from q3agent.qwen3.thinking import budget_continuation
from q3agent.serving.base import Generation, GenerationRequest, Runtime, Usage


@dataclass(frozen=True, slots=True)
class BudgetedGeneration:
    """A step's completion assembled from one or two requests.

    ``token_ids`` and ``text`` cover everything appended to the prompt: the first request's
    ids, the early-stop ids when the budget was hit, and the continuation's ids.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str
    usage: Usage
    hit_budget: bool
    requests: int
    ids_exact: bool = True
    """See :attr:`q3agent.serving.base.Generation.ids_exact`."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Streamed text of a budgeted generation (the early-stop text included)."""

    text: str


def _single(generation: Generation) -> BudgetedGeneration:
    return BudgetedGeneration(
        generation.text,
        generation.token_ids,
        generation.finish_reason,
        generation.usage,
        False,
        1,
        generation.ids_exact,
    )


async def _one(
    runtime: Runtime, request: GenerationRequest, stream: bool
) -> AsyncIterator[TextDelta | Generation]:
    if not stream:
        yield await runtime.generate(request)
        return
    async for chunk in runtime.stream(request):
        if chunk.text:
            yield TextDelta(chunk.text)
        if chunk.generation is not None:
            yield chunk.generation


def _continuation_id(request_id: str | None) -> str | None:
    """The continuation's own request id (engines abort or merge requests that share one)."""
    return None if request_id is None else f"{request_id}-cont"


async def generate_with_budget(
    runtime: Runtime,
    request: GenerationRequest,
    budget: int | None,
    *,
    model_opens_think: bool = True,
    stream: bool = False,
) -> AsyncIterator[TextDelta | BudgetedGeneration]:
    """Run one thinking step under ``budget`` reasoning tokens; yield deltas, then the result.

    ``model_opens_think``: the model writes ``<think>`` itself (hybrid Qwen3), so the first
    request may produce one token more than the budget; ``False`` when the prompt already
    opened it (Thinking-2507). ``budget=None`` runs a single unbudgeted request.
    """
    tok = runtime.tokenizer
    if budget is None:
        async for item in _one(runtime, request, stream):
            yield _single(item) if isinstance(item, Generation) else item
        return
    if budget < 0:
        raise ValueError(f"thinking budget must be >= 0, got {budget}")

    limit = budget + (1 if model_opens_think else 0)
    total = request.sampling.max_tokens
    first_request = replace(request, sampling=request.sampling.with_(max_tokens=min(limit, total)))
    first: Generation | None = None
    async for item in _one(runtime, first_request, stream):
        if isinstance(item, Generation):
            first = item
        else:
            yield item
    assert first is not None  # _one always ends with a Generation
    ids = first.token_ids
    remaining = total - len(ids)
    if first.finish_reason != "length" or remaining <= 0:
        # the turn ended (EOS), a caller's stop matched, or the request was aborted: one request
        yield _single(first)
        return

    # the limit cut the completion: where, the ids say
    opened = not model_opens_think or tok.think_id in ids
    hit_budget = opened and tok.think_end_id not in ids
    extra_text = budget_continuation(first.text) if hit_budget else ""
    extra_ids = tuple(tok.encode_trusted(extra_text)) if hit_budget else ()
    if extra_text:
        yield TextDelta(extra_text)
    second_request = replace(
        request,
        prompt_ids=request.prompt_ids + ids + extra_ids,
        sampling=request.sampling.with_(max_tokens=max(1, remaining - len(extra_ids))),
        request_id=_continuation_id(request.request_id),
    )
    second: Generation | None = None
    async for item in _one(runtime, second_request, stream):
        if isinstance(item, Generation):
            second = item
        else:
            yield item
    assert second is not None
    yield BudgetedGeneration(
        text=first.text + extra_text + second.text,
        token_ids=ids + extra_ids + second.token_ids,
        finish_reason=second.finish_reason,
        usage=first.usage + second.usage,
        hit_budget=hit_budget,
        requests=2,
        ids_exact=first.ids_exact and second.ids_exact,
    )
