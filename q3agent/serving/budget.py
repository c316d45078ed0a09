"""The thinking-budget procedure from the Qwen3 report, on any runtime.

Phase 1 generates with the budget as the token limit and stops at ``</think>``. If the budget
ran out first, the report's early-stop text ("Considering the limited time by the user, …
\\n</think>\\n\\n") is appended and the model continues from there; otherwise it continues
after its own ``</think>``. The continuation's prompt is exactly the previous prompt + the
phase-1 ids (+ the early-stop ids), so a prefix-caching runtime re-prefills nothing but the
early-stop text, and reasoning tokens never exceed the budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from q3agent.qwen3.thinking import budget_continuation
from q3agent.serving.base import Generation, GenerationRequest, Runtime, Usage


@dataclass(frozen=True, slots=True)
class BudgetedGeneration:
    """A step's completion assembled from one or two requests.

    ``token_ids`` and ``text`` cover everything appended to the prompt: phase-1 ids, the
    early-stop ids when the budget was hit, and the continuation's ids.
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
    """Streamed text of a budgeted generation (the early-stop text included).

    ``token_ids`` are the ids the text decodes from when the runtime streams them (empty from
    text-only servers); a delta may carry ids whose text is still held back (a split character).
    """

    text: str
    token_ids: tuple[int, ...] = ()


def _merge(
    parts: list[Generation], extra_ids: tuple[int, ...], extra_text: str
) -> tuple[tuple[int, ...], str]:
    if len(parts) == 1:
        return parts[0].token_ids, parts[0].text
    first, second = parts
    return first.token_ids + extra_ids + second.token_ids, first.text + extra_text + second.text


async def _one(
    runtime: Runtime, request: GenerationRequest, stream: bool
) -> AsyncIterator[TextDelta | Generation]:
    if not stream:
        yield await runtime.generate(request)
        return
    async for chunk in runtime.stream(request):
        if chunk.text or chunk.token_ids:
            yield TextDelta(chunk.text, chunk.token_ids)
        if chunk.generation is not None:
            yield chunk.generation


async def generate_with_budget(
    runtime: Runtime,
    request: GenerationRequest,
    budget: int | None,
    *,
    model_opens_think: bool = True,
    stream: bool = False,
) -> AsyncIterator[TextDelta | BudgetedGeneration]:
    """Run one thinking step under ``budget`` reasoning tokens; yield deltas, then the result.

    ``model_opens_think``: the model writes ``<think>`` itself (hybrid Qwen3), so phase 1 may
    produce one token more than the budget; ``False`` when the prompt already opened it
    (Thinking-2507). ``budget=None`` runs a single unbudgeted request.
    """
    tok = runtime.tokenizer
    if budget is None:
        async for item in _one(runtime, request, stream):
            if isinstance(item, Generation):
                yield BudgetedGeneration(
                    item.text,
                    item.token_ids,
                    item.finish_reason,
                    item.usage,
                    False,
                    1,
                    item.ids_exact,
                )
            else:
                yield item
        return
    if budget < 0:
        raise ValueError(f"thinking budget must be >= 0, got {budget}")

    limit = budget + (1 if model_opens_think else 0)
    total = request.sampling.max_tokens
    phase1_request = replace(
        request,
        sampling=request.sampling.with_(
            max_tokens=min(limit, total),
            stop_token_ids=(*request.sampling.stop_token_ids, tok.think_end_id),
        ),
        constraint=None,
    )
    first: Generation | None = None
    async for item in _one(runtime, phase1_request, stream):
        if isinstance(item, Generation):
            first = item
        else:
            yield item
    assert first is not None  # _one always ends with a Generation
    ended_turn = bool(first.token_ids) and first.token_ids[-1] in (tok.im_end_id, tok.eos_id)
    closed = tok.think_end_id in first.token_ids
    # only reasoning can hit the budget: a model that answered without opening <think> is
    # simply continued, with no early-stop text in the middle of its answer
    opened = not model_opens_think or tok.think_id in first.token_ids
    hit_budget = opened and not closed and not ended_turn and first.finish_reason == "length"
    remaining = total - len(first.token_ids)
    if ended_turn or remaining <= 0 or first.finish_reason == "abort":
        # the model ended its turn inside phase 1 (no thinking, or it stopped): nothing to add
        yield BudgetedGeneration(
            first.text,
            first.token_ids,
            first.finish_reason,
            first.usage,
            False,
            1,
            first.ids_exact,
        )
        return

    extra_text = budget_continuation(first.text) if hit_budget else ""
    extra_ids = tuple(tok.encode_trusted(extra_text)) if hit_budget else ()
    if extra_text:
        yield TextDelta(extra_text, extra_ids)
    phase2_request = replace(
        request,
        prompt_ids=request.prompt_ids + first.token_ids + extra_ids,
        sampling=request.sampling.with_(max_tokens=max(1, remaining - len(extra_ids))),
    )
    second: Generation | None = None
    async for item in _one(runtime, phase2_request, stream):
        if isinstance(item, Generation):
            second = item
        else:
            yield item
    assert second is not None
    ids, text = _merge([first, second], extra_ids, extra_text)
    yield BudgetedGeneration(
        text=text,
        token_ids=ids,
        finish_reason=second.finish_reason,
        usage=first.usage + second.usage,
        hit_budget=hit_budget,
        requests=2,
        ids_exact=first.ids_exact and second.ids_exact,
    )
