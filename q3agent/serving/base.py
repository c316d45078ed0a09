"""The runtime protocol: one small async interface every way of running Qwen3 implements.

A runtime turns a prompt (token ids, or text for servers that only take text) plus sampling
settings into a completion with usage figures. The agent loop, the thinking-budget procedure,
the BFCL harness and deep research all talk to this protocol only; the embedded SGLang engine,
remote servers, local transformers and the test doubles are interchangeable behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from q3agent.errors import UsageError
from q3agent.types import FinishReason, SamplingParams, Usage

if TYPE_CHECKING:
    from q3agent.qwen3.messages import Message
    from q3agent.qwen3.prompt import PromptIds
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer
    from q3agent.serving.engine_budget import EngineBudget


@dataclass(frozen=True, slots=True)
class ToolCallConstraint:
    """Constrain decoding so the completion is (or contains) a schema-valid ``<tool_call>``.

    ``tools`` are OpenAI-style function schemas (``{"type": "function", "function": {...}}``).
    ``required`` forces a call (``tool_choice="required"`` or a named tool); otherwise the model
    may answer in text and only what it writes inside ``<tool_call>`` is constrained.
    """

    tools: tuple[dict[str, Any], ...]
    required: bool = True


OutputConstraint = ToolCallConstraint
"""Output constraints a runtime may support (extend as a union when more kinds exist)."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What the loop asks a runtime for.

    ``prompt_ids`` is the normal form: the append-only prompt built by
    :class:`q3agent.qwen3.prompt.PromptBuilder`, as a tuple or as the builder's
    :class:`~q3agent.qwen3.prompt.PromptIds` (a read-only view that reads like a tuple, handed
    over without copying the history). ``messages``/``tools`` travel alongside for runtimes
    that can only take a chat request (an OpenAI ``/v1/chat/completions`` server).
    """

    prompt_ids: tuple[int, ...] | PromptIds
    sampling: SamplingParams = field(default_factory=SamplingParams)
    constraint: OutputConstraint | None = None
    messages: tuple[Message, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    enable_thinking: bool | None = None
    request_id: str | None = None
    engine_budget: EngineBudget | None = None
    """A thinking budget for the engine to apply (set by the budget procedure only for runtimes
    whose ``engine_budget`` is true; see :mod:`q3agent.serving.engine_budget`)."""


@dataclass(frozen=True, slots=True)
class Generation:
    """A finished completion.

    ``token_ids`` are exactly the ids the model produced, including a final EOS/stop id when
    the runtime reports one, so the next prompt can append them without re-tokenizing. ``text``
    is their decoding with control tokens kept (``<think>``, ``</think>``, ``<tool_call>`` …,
    a matched ``stop_token_ids`` id too), except a final ``<|im_end|>``/``<|endoftext|>`` and a
    matched stop string, which are left out.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage
    matched_stop: str | int | None = None
    ids_exact: bool = True
    """``True`` when ``token_ids`` are the ids the model sampled (every runtime that returns
    ids). ``False`` only for servers that return text alone: the ids are then a re-encoding of
    that text with special-token strings treated as plain text, so structure (reasoning, tool
    calls) has to be recovered from ``text`` instead of from control ids."""


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """One streamed piece of a completion; the last chunk carries ``generation``."""

    text: str
    token_ids: tuple[int, ...] = ()
    generation: Generation | None = None
    cached_tokens: int | None = None
    """Prompt tokens the engine served from its prefix cache, when a chunk reports it before
    the end (SGLang's ``meta_info`` does): a stream closed early still knows what its
    prefill cost."""


@dataclass(frozen=True, slots=True)
class RuntimeCapabilities:
    """What a runtime supports beyond the protocol's minimum.

    Callers branch on these flags, never on a runtime's class or on probing its attributes.
    """

    token_ids: bool = True
    """Prompts go in as token ids and completions come back as the ids the model sampled
    (``False``: a server that takes and returns text only; see :attr:`Generation.ids_exact`)."""
    tool_call_constraint: bool = False
    """``GenerationRequest.constraint`` is enforced by a grammar while decoding."""
    engine_budget: bool = False
    """``GenerationRequest.engine_budget`` is applied inside the engine, so a thinking-budget
    hit stays one request (:mod:`q3agent.serving.engine_budget`)."""


@runtime_checkable
class Runtime(Protocol):
    """Anything that can run a Qwen3 model for the agent loop.

    Subclass :class:`RuntimeBase` (or :class:`RuntimeWrapper`) to get the defaults for
    everything but :meth:`generate`, :meth:`stream` and :attr:`model_name`.
    """

    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        """The tokenizer whose ids ``generate`` takes and returns."""
        ...

    @property
    def model_name(self) -> str:
        """A human-readable model name for traces and errors."""
        ...

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """What this runtime supports (token-id prompts, constraints, in-engine budget)."""
        ...

    @property
    def max_tokens(self) -> int | None:
        """The runtime's own cap on completion tokens per request (``None``: none)."""
        ...

    @property
    def context_length(self) -> int | None:
        """Tokens of context (prompt plus completion) the model allows, when known now."""
        ...

    async def fetch_context_length(self) -> int | None:
        """The context length, learning it first where that takes a request (servers ask once)."""
        ...

    async def generate(self, request: GenerationRequest) -> Generation:
        """Run one request to completion."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Run one request, yielding text as it is produced; the last chunk has the result."""
        ...

    async def aclose(self) -> None:
        """Release what the runtime holds (engine, HTTP client, GPU memory)."""
        ...


class RuntimeBase:
    """Defaults every runtime shares: a tokenizer made on first use, no declared context,
    no completion cap, default :class:`RuntimeCapabilities`, nothing to close.

    A subclass sets ``_tokenizer`` (or overrides :meth:`_load_tokenizer`) and implements
    ``model_name``, ``generate`` and ``stream``; it overrides what it knows better.
    """

    _tokenizer: Qwen3Tokenizer | None = None
    max_tokens: int | None = None
    """Most completion tokens per request (``None``: as each request asks)."""

    def _load_tokenizer(self) -> Qwen3Tokenizer:
        """The tokenizer to use when none was given (called once, on first use)."""
        from q3agent.qwen3.tokenizer import Qwen3Tokenizer

        return Qwen3Tokenizer.offline()

    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        """The Qwen3 tokenizer (the one given, else loaded on first access)."""
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """Token-id prompts; no constraints or in-engine budget unless a subclass says so."""
        return RuntimeCapabilities()

    @property
    def context_length(self) -> int | None:
        """The context length when known (``None`` here: unknown)."""
        return None

    async def fetch_context_length(self) -> int | None:
        """The context length; runtimes that must ask a server override this."""
        return self.context_length

    async def aclose(self) -> None:
        """Release what the runtime holds (nothing here)."""


class RuntimeWrapper:
    """A runtime that passes everything to another one; subclass it to observe or limit calls.

    Override :meth:`generate` and/or :meth:`stream` (calling ``self.inner``) to count usage,
    time requests, enforce budgets or log prompts; the rest is delegated.
    """

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner

    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        """The wrapped runtime's tokenizer."""
        return self.inner.tokenizer

    @property
    def model_name(self) -> str:
        """The wrapped runtime's model name."""
        return self.inner.model_name

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """The wrapped runtime's capabilities."""
        return self.inner.capabilities

    @property
    def max_tokens(self) -> int | None:
        """The wrapped runtime's completion cap."""
        return self.inner.max_tokens

    async def generate(self, request: GenerationRequest) -> Generation:
        """The wrapped runtime's completion."""
        return await self.inner.generate(request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The wrapped runtime's stream."""
        return self.inner.stream(request)

    @property
    def context_length(self) -> int | None:
        """The wrapped runtime's context length, if it knows one."""
        return self.inner.context_length

    async def fetch_context_length(self) -> int | None:
        """Let the wrapped runtime learn its context length (servers ask once)."""
        return await self.inner.fetch_context_length()

    async def aclose(self) -> None:
        """Close the wrapped runtime."""
        await self.inner.aclose()


class RuntimeError_(Exception):  # the trailing underscore avoids shadowing the builtin
    """Base class of errors a runtime raises; the message says what to do next."""


class RuntimeUnavailableError(RuntimeError_, UsageError):
    """The runtime cannot run here (no GPU, package missing, no weights, server down)."""


class ContextLengthError(RuntimeError_):
    """The prompt alone fills the model's context: no room is left for a single new token.

    Raised by every runtime before the request is sent (engines answer such a request with a
    raw ``ValueError`` or HTTP 400). ``prompt_tokens`` and ``context_length`` say by how much.
    """

    def __init__(self, prompt_tokens: int, context_length: int, *, model: str = "") -> None:
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        name = f" of {model}" if model else ""
        super().__init__(
            f"The prompt has {prompt_tokens:,} tokens and the context{name} holds "
            f"{context_length:,}, so no room is left to generate. Shorten the task or its "
            "tool results, let the agent compact the conversation (Agent(context_window=...)), "
            "or serve the model with a longer context (context_length=..., YaRN)."
        )


CONTEXT_MARGIN = 1
"""Tokens kept free below the context length: SGLang rejects ``prompt + max_new_tokens >=
context`` (most releases), vLLM only ``>``; one spare token satisfies both."""


def fit_to_context(
    request: GenerationRequest,
    context_length: int | None,
    *,
    model: str = "",
    max_tokens: int | None = None,
) -> GenerationRequest:
    """``request`` with ``max_tokens`` clamped to what the context has left after the prompt.

    ``max_tokens`` is the runtime's own completion cap (its constructor's ``max_tokens``),
    applied first; ``None`` leaves the request's own limit.

    The one place every runtime applies the engines' length rule: ``prompt + max_tokens`` stays
    below ``context_length`` (minus :data:`CONTEXT_MARGIN`). A prompt that leaves no room at all
    is a :class:`ContextLengthError`. ``context_length=None`` (unknown) returns ``request``.
    """
    if max_tokens is not None and request.sampling.max_tokens > max_tokens:
        request = replace(request, sampling=request.sampling.with_(max_tokens=max_tokens))
    if context_length is None or context_length <= 0:
        return request
    prompt = len(request.prompt_ids)
    room = context_length - prompt - CONTEXT_MARGIN
    if room < 1:
        raise ContextLengthError(prompt, context_length, model=model)
    if request.sampling.max_tokens <= room:
        return request
    return replace(request, sampling=request.sampling.with_(max_tokens=room))


def completion_text(
    tokenizer: Qwen3Tokenizer, ids: Sequence[int], matched_stop: str | int | None = None
) -> str:
    """A completion's text as q3agent defines it: its own decoding of the output ids.

    Control tokens are kept (``<think>``, ``</think>``, ``<tool_call>``, a matched
    ``stop_token_ids`` id), a final ``<|im_end|>``/``<|endoftext|>`` is left out, and the text
    ends before a matched stop *string*. Engines trim differently (SGLang and vLLM drop a
    matched stop id's text), so no runtime uses the engine's text.
    """
    body = list(ids)
    if body and body[-1] in (tokenizer.im_end_id, tokenizer.eos_id):
        body.pop()
    text = tokenizer.decode(body)
    if isinstance(matched_stop, str) and matched_stop:
        cut = text.find(matched_stop)
        if cut != -1:
            text = text[:cut]
    return text


@asynccontextmanager
async def closing_stream(
    chunks: AsyncIterator[GenerationChunk],
) -> AsyncIterator[AsyncIterator[GenerationChunk]]:
    """Iterate a runtime's stream and close it on leaving, also when the loop broke early.

    Leaving an ``async for`` does not close an async generator; closing it is what tells the
    runtime to stop (an HTTP stream is dropped and the engine aborts; a local runtime
    releases its lock). Wrappers that re-yield a stream should iterate it through this.
    """
    try:
        yield chunks
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def stop_ids_for(tokenizer: Qwen3Tokenizer, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """The ids generation stops at: ``<|im_end|>``, ``<|endoftext|>`` and ``extra``."""
    return (tokenizer.im_end_id, tokenizer.eos_id, *extra)


def check_max_tokens(max_tokens: int | None) -> int | None:
    """A runtime constructor's ``max_tokens``, refused when it is not a positive count."""
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    return max_tokens
