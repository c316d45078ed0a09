"""Test runtimes shipped in the package: scripted and function-backed Qwen3 stand-ins.

They speak the real protocol with the real Qwen3 tokenizer: prompts arrive as token ids,
completions go back as the ids a Qwen3 model would emit for that text (control tokens
included), so tests of the loop, the budget procedure and the prompt builder exercise exactly
what a GPU run would, only with the model's words chosen by the test.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import ClassVar, TypedDict, Unpack

import anyio

from q3agent.errors import UsageError
from q3agent.qwen3.prompt import PromptIds
from q3agent.qwen3.thinking import count_reasoning_tokens, reasoning_mode
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.serving.base import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    RuntimeCapabilities,
    completion_text,
    fit_to_context,
)
from q3agent.types import FinishReason, Usage

Completion = str | Generation
"""What a scripted step yields: raw completion text, or a full :class:`Generation`."""

CompletionFn = Callable[[GenerationRequest], Completion | Awaitable[Completion]]


class ScriptFileError(UsageError, ValueError):
    """A script file for a :class:`ScriptedRuntime` that cannot be read; says where and why."""


def load_completions(path: str | Path) -> list[str]:
    """Raw completions for a :class:`ScriptedRuntime` from a JSONL file (``--script``).

    Each non-blank line is a JSON string or an object with the completion under
    ``"completion"`` (or ``"text"``). Raises :class:`ScriptFileError` naming the file and line.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ScriptFileError(f"cannot read the script {path}: {exc.strerror or exc}") from None
    completions: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScriptFileError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if isinstance(item, dict):
            item = item.get("completion", item.get("text"))
        if not isinstance(item, str):
            raise ScriptFileError(
                f'{path}:{number}: expected a JSON string or {{"completion": "..."}}'
            )
        completions.append(item)
    return completions


class ScriptExhaustedError(AssertionError):
    """A :class:`ScriptedRuntime` was asked for more completions than it was given."""


class RecordedRequest:
    """One request a test runtime received; ``prompt_text`` decodes it on first use."""

    def __init__(self, request: GenerationRequest, tokenizer: Qwen3Tokenizer) -> None:
        self.request = request
        self._tokenizer = tokenizer
        self._text: str | None = None

    @property
    def prompt_ids(self) -> tuple[int, ...] | PromptIds:
        """The prompt's token ids, as the runtime received them (reads like a tuple)."""
        return self.request.prompt_ids

    @property
    def prompt_text(self) -> str:
        """The prompt decoded with control tokens kept (what the model would read)."""
        if self._text is None:
            self._text = self._tokenizer.decode(list(self.request.prompt_ids))
        return self._text

    def __repr__(self) -> str:
        return f"RecordedRequest(prompt_ids=<{len(self.prompt_ids)} ids>, {self.request.sampling})"


class StandInOptions(TypedDict, total=False):
    """The keyword options every test runtime takes (all optional)."""

    tokenizer: Qwen3Tokenizer | None
    """The Qwen3 tokenizer to speak (default: the offline build)."""
    model_name: str | None
    """The name shown in traces (default: the runtime's own, e.g. ``scripted-qwen3``)."""
    latency: float
    """Seconds each request sleeps (on the event loop) before answering."""
    simulate_prefix_cache: bool
    """Report a repeated prompt prefix as cached tokens, as a prefix-caching engine would."""
    context_length: int | None
    """The context ``max_tokens`` is clamped to, like the real runtimes (None: none)."""


class _TestRuntimeBase(ABC):
    """Shared machinery: tokenization, stop handling, usage, request recording."""

    default_model_name: ClassVar[str] = "scripted-qwen3"

    def __init__(
        self,
        *,
        tokenizer: Qwen3Tokenizer | None = None,
        model_name: str | None = None,
        latency: float = 0.0,
        simulate_prefix_cache: bool = True,
        context_length: int | None = None,
    ) -> None:
        self._tokenizer = tokenizer or Qwen3Tokenizer.offline()
        self.context_length = context_length
        """The context the runtime clamps ``max_tokens`` to, like the real ones (None: none)."""
        self._model_name = model_name or self.default_model_name
        self.latency = latency
        """Seconds each request sleeps (on the event loop) before answering."""
        self.simulate_prefix_cache = simulate_prefix_cache
        self.requests: list[RecordedRequest] = []
        self._cached: tuple[tuple[int, ...] | PromptIds, tuple[int, ...]] = ((), ())
        """(last prompt, its completion): what the simulated prefix cache holds."""
        self._pending: tuple[tuple[int, ...] | PromptIds, list[int]] | None = None
        """(prompt, every id the script planned) of a completion cut short, for resuming."""
        self._planned: list[int] = []

    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        """The real Qwen3 tokenizer (offline build unless one was given)."""
        return self._tokenizer

    @property
    def model_name(self) -> str:
        """The name shown in traces."""
        return self._model_name

    max_tokens: int | None = None
    """No completion cap of its own: each request's ``max_tokens`` applies."""

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """Token ids in and out; constraints and an in-engine budget are not simulated."""
        return RuntimeCapabilities()

    async def fetch_context_length(self) -> int | None:
        """The ``context_length`` given (a test runtime has nothing to ask)."""
        return self.context_length

    @abstractmethod
    async def _complete(self, request: GenerationRequest) -> Completion:
        """The next completion for ``request``."""

    async def generate(self, request: GenerationRequest) -> Generation:
        """Produce the next completion, applying max_tokens and stop rules like a real engine."""
        request = fit_to_context(request, self.context_length, model=self._model_name)
        self.requests.append(RecordedRequest(request, self._tokenizer))
        if self.latency:
            await anyio.sleep(self.latency)
        resumed = self._resume(request)
        if resumed is not None:
            return self._finish(request, resumed)
        produced = await self._complete(request)
        if isinstance(produced, Generation):
            self._planned = list(produced.token_ids)
            return produced
        return self._finish(request, self._tokenizer.encode_trusted(produced))

    def _resume(self, request: GenerationRequest) -> list[int] | None:
        """The rest of a completion cut by a stop id or ``max_tokens``, if this continues it.

        A real model continues where it stopped; so does a script. When the continuation's
        prompt closed the thinking itself (the thinking-budget early-stop text), the scripted
        rest of the thinking is skipped, as the model would never write it.
        """
        if self._pending is None:
            return None
        key, planned = self._pending
        self._pending = None
        if request.prompt_ids[: len(key)] != key:
            return None
        # the continuation's prompt holds some of the planned ids (those the caller kept),
        # then maybe text of its own (the early-stop text)
        after = request.prompt_ids[len(key) :]
        kept = _common_prefix(planned, after)
        if kept == 0 and planned and after:
            return None
        added, rest = after[kept:], planned[kept:]
        tok = self._tokenizer
        if tok.think_end_id in added and tok.think_end_id in rest:
            answer = rest[rest.index(tok.think_end_id) + 1 :]
            return tok.encode_trusted(tok.decode(answer).lstrip("\n"))
        return rest

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the completion a few tokens at a time (exercises streaming consumers).

        A consumer that stops reading early has cut the completion, as closing a stream
        aborts a real engine's request: a continuation of what it kept resumes the script.
        """
        generation = await self.generate(request)
        planned = self._planned
        decoder = self._tokenizer.decoder()
        ids = generation.token_ids
        emitted = ""
        finished = False
        try:
            for start in range(0, len(ids), 3):
                piece = decoder.push(list(ids[start : start + 3]))
                # never stream past the returned text (a matched stop string is cut from it)
                piece = piece[: max(0, len(generation.text) - len(emitted))]
                emitted += piece
                yield GenerationChunk(text=piece, token_ids=tuple(ids[start : start + 3]))
            tail = generation.text[len(emitted) :]
            finished = True
            yield GenerationChunk(text=tail, generation=generation)
        finally:
            if not finished and self._pending is None:
                self._pending = (request.prompt_ids, planned)

    async def aclose(self) -> None:  # noqa: B027 - deliberately a no-op, not abstract
        """Nothing to release."""

    def _finish(self, request: GenerationRequest, ids: list[int]) -> Generation:
        """Cut ``ids`` the way an engine would (EOS, stop ids, stop strings, max_tokens)."""
        self._planned = list(ids)
        tok = self._tokenizer
        sampling = request.sampling
        eos = (tok.im_end_id, tok.eos_id)
        stop_ids = {*eos, *sampling.stop_token_ids}
        decoder = tok.decoder()
        finish: FinishReason = "length"
        matched: str | int | None = None
        out: list[int] = []
        text = ""
        for tid in ids:
            if len(out) >= sampling.max_tokens:
                break
            out.append(tid)
            if tid in stop_ids:
                finish, matched = "stop", tid
                break
            text += decoder.push([tid])
            hit = next((s for s in sampling.stop if s in text), None)
            if hit is not None:
                finish, matched = "stop", hit
                break
        else:
            if len(out) < sampling.max_tokens:
                # a script that ends without EOS: a real model would emit <|im_end|> here
                out.append(tok.im_end_id)
                finish, matched = "stop", tok.im_end_id
        # a cut by max_tokens or by a caller's stop id leaves a rest a continuation resumes
        cut_early = finish == "length" or (isinstance(matched, int) and matched not in eos)
        self._pending = (request.prompt_ids, list(ids)) if cut_early else None
        cached = 0
        if self.simulate_prefix_cache:
            cached = _cached_prefix_of(self._cached, request.prompt_ids)
            self._cached = (request.prompt_ids, tuple(out))
        usage = Usage(
            prompt_tokens=len(request.prompt_ids),
            completion_tokens=len(out),
            cached_tokens=cached,
            reasoning_tokens=count_reasoning_tokens(
                out, tok, prompt_open=reasoning_mode(request.prompt_ids, tok, None) == "open"
            ),
            requests=1,
        )
        # like every runtime, the text is q3agent's decoding of the ids (an engine's own text
        # would drop a matched stop id's text; see completion_text)
        return Generation(
            text=completion_text(tok, out, matched),
            token_ids=tuple(out),
            finish_reason=finish,
            usage=usage,
            matched_stop=matched,
        )


def _cached_prefix_of(
    cached: tuple[tuple[int, ...] | PromptIds, tuple[int, ...]],
    prompt: tuple[int, ...] | PromptIds,
) -> int:
    """How much of ``prompt`` a prefix cache holding the last prompt and its completion
    serves. A builder's prompt that extends the last one is known to share it whole (the
    builder only appends), so only the completion is compared, as an engine's radix tree
    walks only what is new; other prompts are compared from the start."""
    last, out = cached
    if isinstance(prompt, PromptIds) and isinstance(last, PromptIds) and prompt.extends(last):
        shared = len(last)
    else:
        shared = _common_prefix(last, prompt)
    if shared < len(last):
        return shared
    return shared + _common_prefix(out, prompt[shared : shared + len(out)])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix, compared in blocks (prompts share long prefixes)."""
    n = min(len(a), len(b))
    lo, block = 0, 1024
    while lo < n and a[lo : lo + block] == b[lo : lo + block]:
        lo += block
    hi = min(lo + block, n)
    tail_a, tail_b = a[lo:hi], b[lo:hi]  # one slice each: a PromptIds indexes slowly
    same = 0
    while same < len(tail_a) and tail_a[same] == tail_b[same]:
        same += 1
    return min(lo + same, n)


class ScriptedRuntime(_TestRuntimeBase):
    """A queue of raw Qwen3 completions, answered in order.

    Each completion is the text a Qwen3 model would generate, control tokens included::

        ScriptedRuntime([
            '<tool_call>\\n{"name": "add", "arguments": {"a": 1, "b": 2}}\\n</tool_call>',
            "The sum is 3.",
        ])

    ``max_tokens`` and stop strings apply as in a real engine, so a thinking-budget step sees a
    ``length`` finish when the scripted thinking is longer than the budget. Every request is
    kept in ``.requests``; :meth:`assert_complete` checks the whole script was used.
    """

    default_model_name = "scripted-qwen3"

    def __init__(
        self, completions: Iterable[Completion] = (), **options: Unpack[StandInOptions]
    ) -> None:
        super().__init__(**options)
        self._script: list[Completion] = list(completions)

    def add(self, *completions: Completion) -> None:
        """Append completions to the script."""
        self._script.extend(completions)

    @property
    def remaining(self) -> int:
        """How many scripted completions have not been used."""
        return len(self._script)

    async def _complete(self, request: GenerationRequest) -> Completion:
        if not self._script:
            raise ScriptExhaustedError(
                f"ScriptedRuntime got request #{len(self.requests)} but its script is used up; "
                "add more completions or check why the agent took an extra step. Last prompt "
                f"ends with: {self.requests[-1].prompt_text[-300:]!r}"
            )
        return self._script.pop(0)

    def assert_complete(self) -> None:
        """Fail if any scripted completion was never requested."""
        if self._script:
            raise AssertionError(
                f"{len(self._script)} scripted completion(s) were never requested; "
                f"next unused: {self._script[0]!r}"
            )


class FunctionRuntime(_TestRuntimeBase):
    """A runtime whose completions come from a Python function of the request.

    ``fn(request)`` returns the raw completion text (or a :class:`Generation`), sync or async;
    ``runtime.tokenizer.decode(request.prompt_ids)`` gives the prompt text to react to.
    """

    default_model_name = "function-qwen3"

    def __init__(self, fn: CompletionFn, **options: Unpack[StandInOptions]) -> None:
        super().__init__(**options)
        self._fn = fn

    async def _complete(self, request: GenerationRequest) -> Completion:
        produced = self._fn(request)
        if inspect.isawaitable(produced):
            return await produced
        return produced
