"""The Qwen3 report's thinking-budget procedure, on any runtime, in as few requests as it can.

A budgeted step is **one** request whenever the model's reasoning fits the budget: the step is
streamed (also when the caller does not stream) and watched token by token. Only when the
reasoning reaches ``budget`` tokens (``budget + 1`` with the ``<think>`` the model writes
itself) without ``</think>`` is the stream closed there (the engine aborts the rest) and a
second request sent, on the prompt + those ids + the report's early-stop text ("Considering
the limited time by the user, … \\n</think>\\n\\n"). So reasoning tokens never exceed the
budget, an answer of any length follows a short reasoning in the same request, and the
continuation re-prefills only the early-stop text on a prefix-caching runtime.

A runtime that applies the budget inside its engine (``engine_budget``, see
:mod:`q3agent.serving.engine_budget`) gets the budget with the request and forces the
early-stop text itself: the step stays one request with nothing re-prefilled. The ids after
the budget are still checked as they stream: where they are not the early-stop ids (the
engine did not apply it), the stream is cut and the step continues as above.

Where the reasoning stands is read from ids (``<think>``, ``</think>``), never from an
engine's text. A runtime whose ids are an untrusted re-encoding (``ids_exact=False``) is judged
on the trusted encoding of its text instead; whatever it streamed past the cut is dropped from
the step, which is decided on the final ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from q3agent.qwen3.thinking import budget_continuation, count_reasoning_tokens
from q3agent.qwen3.tokenizer import IncrementalDecoder, Qwen3Tokenizer
from q3agent.serving.base import Generation, GenerationRequest, Runtime, closing_stream
from q3agent.serving.engine_budget import (
    EngineBudget,
    applies_budget_in_engine,
    budget_params,
    budget_variants,
    follows_budget,
)
from q3agent.types import Usage


@dataclass(frozen=True, slots=True)
class BudgetedGeneration:
    """A step's completion assembled from one or two requests.

    ``token_ids`` and ``text`` cover everything appended to the prompt: the first request's
    ids (up to the budget when it was hit), the early-stop ids, and the continuation's ids.
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
        if chunk.text or chunk.token_ids:
            yield TextDelta(chunk.text, chunk.token_ids)
        if chunk.generation is not None:
            yield chunk.generation


class _Watch:
    """Follows a streamed completion's ids and says when the reasoning reached its limit."""

    def __init__(self, tok: Qwen3Tokenizer, limit: int, *, prompt_open: bool) -> None:
        self.tok = tok
        self.limit = limit
        self.prompt_open = prompt_open
        self.ids: list[int] = []

    def over(self, ids: list[int]) -> bool:
        """Whether ``ids`` (a completion so far) hit the limit inside open reasoning."""
        if len(ids) < self.limit:
            return False
        head = ids[: self.limit]
        opened = self.prompt_open or self.tok.think_id in head
        return opened and self.tok.think_end_id not in head

    def feed(self, fresh: tuple[int, ...]) -> bool:
        self.ids.extend(fresh)
        return self.over(self.ids)


def _cut(tok: Qwen3Tokenizer, first: Generation, limit: int) -> Generation:
    """``first`` truncated to its first ``limit`` tokens (the budget's share of it)."""
    if first.ids_exact:
        head = list(first.token_ids[:limit])
        text = tok.decode(head)
    else:
        text = tok.decode(tok.encode_trusted(first.text)[:limit])
        head = tok.encode(text)
    return Generation(
        text=text,
        token_ids=tuple(head),
        finish_reason="length",
        usage=first.usage,
        matched_stop=None,
        ids_exact=first.ids_exact,
    )


@dataclass(slots=True)
class _Step:
    """One budgeted step's settings and what its first request's stream has shown so far."""

    tok: Qwen3Tokenizer
    limit: int
    model_opens_think: bool
    stream: bool
    in_engine: bool
    params: dict[str, Any]
    watch: _Watch
    decoder: IncrementalDecoder
    first: Generation | None = None
    cut_early: bool = False
    shown: int = 0  # ids whose text was yielded (ids-carrying streams)
    cached: int = 0  # the prompt's cached tokens, as far as the stream reported them

    def forced_by_engine(self, ids: list[int]) -> bool:
        """Whether the ids past the limit are the engine's early-stop ids (so far)."""
        return self.in_engine and follows_budget(
            ids, self.limit, budget_variants(ids[: self.limit], self.params)
        )

    def reasoning(self, ids: list[int]) -> int:
        """Reasoning tokens among ``ids`` (the completion's head)."""
        return count_reasoning_tokens(ids, self.tok, prompt_open=not self.model_opens_think)

    def tail(self) -> str:
        """The decoder's held-back text, where ids-carrying text deltas were yielded."""
        return self.decoder.flush() if self.stream and self.watch.ids else ""


async def _first_request(
    runtime: Runtime, request: GenerationRequest, step: _Step
) -> AsyncIterator[TextDelta]:
    """Stream the first request into ``step``; close it where the reasoning hits the limit."""
    tok, watch = step.tok, step.watch
    async with closing_stream(runtime.stream(request)) as chunks:
        async for chunk in chunks:
            if chunk.cached_tokens is not None:
                step.cached = chunk.cached_tokens
            if chunk.generation is not None:
                step.first = chunk.generation
            fresh = chunk.token_ids
            if not fresh:  # a stream without ids: pass its text on, decide on the final ids
                if step.stream and chunk.text and not watch.ids:
                    yield TextDelta(chunk.text)
                continue
            hit = watch.feed(fresh) and not step.forced_by_engine(watch.ids)
            keep = watch.ids[: step.limit if hit else len(watch.ids)]
            if step.stream:
                new = tuple(keep[step.shown :])
                piece = step.decoder.push([t for t in new if t not in (tok.im_end_id, tok.eos_id)])
                step.shown = len(keep)
                if piece or new:
                    yield TextDelta(piece, new)
            if hit and step.first is None:
                step.cut_early = True
                break  # leaving closes the stream: the engine aborts the rest


def _cut_early(request: GenerationRequest, step: _Step) -> Generation:
    """The first request's generation, from the ids streamed until it was cut at the limit."""
    head = step.watch.ids[: step.limit]
    return Generation(
        text=step.tok.decode(head),
        token_ids=tuple(head),
        finish_reason="length",
        usage=Usage(
            prompt_tokens=len(request.prompt_ids),
            completion_tokens=len(step.watch.ids),
            cached_tokens=step.cached,
            reasoning_tokens=step.reasoning(head),
            requests=1,
        ),
    )


async def _continuation(
    runtime: Runtime, request: GenerationRequest, first: Generation, step: _Step
) -> AsyncIterator[TextDelta | BudgetedGeneration]:
    """The second request: the prompt + the budget's ids + the early-stop text, answered."""
    tok = step.tok
    kept = first if step.cut_early else _cut(tok, first, step.limit)
    remaining = request.sampling.max_tokens - len(kept.token_ids)
    extra_text = budget_continuation(kept.text)
    extra_ids = tuple(tok.encode_trusted(extra_text))
    if step.stream:
        yield TextDelta(extra_text, extra_ids)
    second_request = replace(
        request,
        prompt_ids=request.prompt_ids + kept.token_ids + extra_ids,
        sampling=request.sampling.with_(max_tokens=max(1, remaining - len(extra_ids))),
        request_id=None if request.request_id is None else f"{request.request_id}-cont",
        engine_budget=None,
    )
    second: Generation | None = None
    async for item in _one(runtime, second_request, step.stream):
        if isinstance(item, Generation):
            second = item
        else:
            yield item
    assert second is not None
    yield BudgetedGeneration(
        text=kept.text + extra_text + second.text,
        token_ids=kept.token_ids + extra_ids + second.token_ids,
        finish_reason=second.finish_reason,
        usage=first.usage + second.usage,
        hit_budget=True,
        requests=2,
        ids_exact=kept.ids_exact and second.ids_exact,
    )


async def generate_with_budget(
    runtime: Runtime,
    request: GenerationRequest,
    budget: int | None,
    *,
    model_opens_think: bool = True,
    stream: bool = False,
) -> AsyncIterator[TextDelta | BudgetedGeneration]:
    """Run one thinking step under ``budget`` reasoning tokens; yield deltas, then the result.

    ``model_opens_think``: the model writes ``<think>`` itself (hybrid Qwen3), so the
    reasoning's share of the completion is one token more than the budget; ``False`` when the
    prompt already opened it (Thinking-2507). ``budget=None`` runs a single unbudgeted
    request. ``stream`` only says whether text deltas are yielded: the step is streamed from
    the runtime either way, so it can be cut at the budget.
    """
    tok = runtime.tokenizer
    if budget is None:
        async for item in _one(runtime, request, stream):
            yield _single(item) if isinstance(item, Generation) else item
        return
    if budget < 0:
        raise ValueError(f"thinking budget must be >= 0, got {budget}")

    limit = budget + (1 if model_opens_think else 0)
    in_engine = applies_budget_in_engine(runtime)
    params: dict[str, Any] = {}
    if in_engine:
        engine_budget = EngineBudget(budget, model_opens_think)
        request = replace(request, engine_budget=engine_budget)
        params = budget_params(engine_budget, tok)
    watch = _Watch(tok, limit, prompt_open=not model_opens_think)
    step = _Step(tok, limit, model_opens_think, stream, in_engine, params, watch, tok.decoder())
    async for delta in _first_request(runtime, request, step):
        yield delta
    first = _cut_early(request, step) if step.cut_early else step.first
    assert first is not None  # a runtime's stream always ends with the generation
    view = list(first.token_ids) if first.ids_exact else tok.encode_trusted(first.text)
    ended_in_limit = len(view) == limit and first.finish_reason != "length"
    if not step.cut_early and (not watch.over(view) or ended_in_limit):
        tail = step.tail()
        if tail:
            yield TextDelta(tail)
        yield _single(first)
        return
    if not step.cut_early and step.forced_by_engine(view):  # the engine ended the reasoning
        tail = step.tail()
        if tail:
            yield TextDelta(tail)
        reasoning = step.reasoning(view[:limit])
        yield replace(
            _single(first),
            usage=replace(first.usage, reasoning_tokens=reasoning),
            hit_budget=True,
        )
        return
    async for result in _continuation(runtime, request, first, step):
        yield result
