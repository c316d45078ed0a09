"""Qwen3 through Hugging Face transformers, on CPU or GPU, with prefix KV-cache reuse.

:class:`TransformersRuntime` runs Qwen3 dense and MoE checkpoints (a local directory or the
Hugging Face cache) with its own decode loop, so it can do what agent steps need and
``model.generate`` does not: keep the KV cache of the previous request and prefill only the
tokens a new prompt adds (the append-only prompts of the agent loop make that almost every
token), stream text as it is produced, stop at stop strings, and constrain tool calls with an
xgrammar token mask.

One cache slot per runtime: agent steps are sequential, so the previous request's cache is the
one the next request extends. Concurrent requests are serialised with an anyio lock (each one
would otherwise crop the other's cache); run one runtime per concurrent conversation if needed.
"""

from __future__ import annotations

import gc
import json
import os
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from q3agent.qwen3.models import ModelSpec, UnknownModelError, get_model, spec_from_config_dir
from q3agent.qwen3.thinking import ReasoningMode, count_reasoning_tokens, reasoning_mode
from q3agent.serving.base import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    RuntimeBase,
    RuntimeCapabilities,
    RuntimeUnavailableError,
    ToolCallConstraint,
    check_max_tokens,
    fit_to_context,
    stop_ids_for,
)
from q3agent.serving.engine_budget import budget_params, forced_budget_token
from q3agent.types import FinishReason, SamplingParams, Usage

if TYPE_CHECKING:
    import torch
    import xgrammar

    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

__all__ = ["TransformersRuntime"]

_STREAM_STEP_TOKENS = 1
"""Tokens decoded per worker-thread hop while streaming (each hop is a chance to cancel)."""
_GENERATE_STEP_TOKENS = 32
"""Tokens decoded per worker-thread hop in :meth:`TransformersRuntime.generate`."""


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Loaded:
    """What loading produced: the model, its directory and the device inputs go to."""

    model: Any
    directory: Path
    device: torch.device
    vocab_size: int
    max_positions: int


@dataclass
class _Decode:
    """The state of one request's decode loop, advanced in worker threads."""

    request: GenerationRequest
    prompt: list[int]
    cached: int
    pending: list[int]
    """Ids to feed at the next forward pass (the uncached prompt suffix, then the last token)."""
    stop_ids: frozenset[int]
    eos_ids: frozenset[int]
    generator: torch.Generator | None
    matcher: xgrammar.GrammarMatcher | None
    bitmask: torch.Tensor | None
    decoder: Any
    max_new: int
    generated: list[int] = field(default_factory=list)
    text: str = ""
    """Decoded completion so far (stop ids excluded, cut at a matched stop string once done)."""
    emitted: int = 0
    """Characters of ``text`` already streamed."""
    finish: FinishReason | None = None
    matched: str | int | None = None
    seen: set[int] = field(default_factory=set)
    """Prompt and completion ids, for the repetition penalty."""
    completion_ids: set[int] = field(default_factory=set)
    """Completion ids, for the presence penalty."""
    budget_params: dict[str, Any] | None = None
    """The in-engine thinking budget's parameters, when the request has one."""

    @property
    def done(self) -> bool:
        return self.finish is not None


class TransformersRuntime(RuntimeBase):
    """Run a Qwen3 model with transformers; reuses the KV cache of the previous request.

    ``model`` is a registry name (``Qwen3-8B``), a Hugging Face id (``Qwen/Qwen3-8B``, looked
    up in the local HF cache; ``HF_HUB_OFFLINE`` is respected and nothing is downloaded unless
    ``download=True``) or a local model directory. Nothing is loaded until first use; loading
    happens in a worker thread, off the event loop. ``device`` defaults to ``cuda`` when
    available, else ``cpu`` (``"auto"`` spreads a large model over GPUs with accelerate);
    ``dtype`` defaults to bfloat16 on GPU and float32 on CPU. ``prefix_cache=False`` disables
    KV reuse (every request prefills its whole prompt), for comparisons. ``max_tokens`` caps
    the completion tokens of every request (an :class:`~q3agent.Agent` on this runtime uses it
    as its own limit unless given ``max_tokens``).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        tokenizer: Qwen3Tokenizer | None = None,
        prefix_cache: bool = True,
        download: bool = False,
        max_tokens: int | None = None,
    ) -> None:
        self.max_tokens = check_max_tokens(max_tokens)
        """Most completion tokens per request (``None``: as each request asks)."""
        self._model_ref = model
        self._device_arg = device
        self._dtype_arg = dtype
        self._tokenizer = tokenizer
        self.prefix_cache = prefix_cache
        """Whether a request reuses the KV cache of the previous one (settable)."""
        self._download = download
        self._directory: Path | None = None
        self._loaded: _Loaded | None = None
        self._cache: Any = None
        self._cache_ids: list[int] = []
        self._lock = anyio.Lock()
        self._grammar_compiler: Any = None

    # -- protocol properties -----------------------------------------------------------------

    def _load_tokenizer(self) -> Qwen3Tokenizer:
        """The model directory's tokenizer (when none was passed in)."""
        from q3agent.qwen3.tokenizer import Qwen3Tokenizer

        return Qwen3Tokenizer.from_pretrained(self.model_dir)

    @property
    def model_name(self) -> str:
        """The registry name, or the directory name for a local model."""
        ref = str(self._model_ref)
        if Path(ref).expanduser().is_dir():
            return Path(ref).expanduser().resolve().name
        try:
            return get_model(ref).name
        except UnknownModelError:
            return ref

    @property
    def model_dir(self) -> Path:
        """The local directory holding the weights (resolved once, without loading them)."""
        if self._directory is None:
            self._directory = _resolve_model_dir(self._model_ref, download=self._download)
        return self._directory

    @property
    def spec(self) -> ModelSpec:
        """The model's registry entry, or one read from the directory's config."""
        ref = str(self._model_ref)
        if not Path(ref).expanduser().is_dir():
            try:
                return get_model(ref)
            except UnknownModelError:
                pass
        return spec_from_config_dir(self.model_dir)

    @property
    def context_length(self) -> int | None:
        """The model's ``max_position_embeddings`` (prompt plus completion), once loaded."""
        return self._loaded.max_positions if self._loaded is not None else None

    @property
    def cached_token_ids(self) -> tuple[int, ...]:
        """The ids whose keys and values the cache holds now (the next request's reusable part)."""
        return tuple(self._cache_ids)

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """Token ids, grammar-constrained tool calls (xgrammar), and the thinking budget
        applied in the decode loop itself (one request)."""
        return RuntimeCapabilities(tool_call_constraint=True, engine_budget=True)

    # -- protocol methods ----------------------------------------------------------------------

    async def load(self) -> None:
        """Load the tokenizer and weights now instead of at the first request."""
        async with self._lock:
            await anyio.to_thread.run_sync(self._ensure_loaded)

    async def generate(self, request: GenerationRequest) -> Generation:
        """Run one request to completion (prefilling only what the cache does not hold)."""
        async with self._lock:
            state = await anyio.to_thread.run_sync(self._begin, request)
            while not state.done:
                await anyio.to_thread.run_sync(self._advance, state, _GENERATE_STEP_TOKENS)
            return self._result(state)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Run one request, yielding text deltas; the last chunk carries the :class:`Generation`.

        The chunks' texts concatenate to ``generation.text`` and their ids to
        ``generation.token_ids``: text that could be the start of a stop string is held back
        until it is clear it is not.
        """
        async with self._lock:
            state = await anyio.to_thread.run_sync(self._begin, request)
            sent_ids = 0
            while not state.done:
                await anyio.to_thread.run_sync(self._advance, state, _STREAM_STEP_TOKENS)
                delta = _releasable(state)
                if delta:
                    state.emitted += len(delta)
                    ids = tuple(state.generated[sent_ids:])
                    sent_ids = len(state.generated)
                    yield GenerationChunk(text=delta, token_ids=ids)
            tail = state.text[state.emitted :]
            state.emitted = len(state.text)
            yield GenerationChunk(
                text=tail,
                token_ids=tuple(state.generated[sent_ids:]),
                generation=self._result(state),
            )

    async def clear_cache(self) -> None:
        """Drop the kept KV cache (the next request prefills its whole prompt)."""
        async with self._lock:
            self._reset_cache()

    async def aclose(self) -> None:
        """Free the model and the KV cache (GPU memory included)."""
        async with self._lock:
            self._loaded = None
            self._reset_cache()
            self._grammar_compiler = None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover - torch is a core dependency
                pass

    # -- loading -------------------------------------------------------------------------------

    def _ensure_loaded(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        try:
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM
        except ImportError as exc:
            raise RuntimeUnavailableError(
                f"TransformersRuntime needs torch and transformers ({exc}); install them with "
                "`pip install torch transformers`, or use a server runtime."
            ) from exc
        directory = self.model_dir
        _ = self.tokenizer
        config = AutoConfig.from_pretrained(directory)
        if config.model_type not in ("qwen3", "qwen3_moe"):
            raise RuntimeUnavailableError(
                f"{directory} holds a {config.model_type!r} model; TransformersRuntime runs "
                "Qwen3 dense ('qwen3') and MoE ('qwen3_moe') checkpoints."
            )
        device_arg = self._device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = _resolve_dtype(self._dtype_arg, device_arg)
        import transformers

        new_api = int(transformers.__version__.split(".")[0]) >= 5
        kwargs: dict[str, Any] = {"dtype" if new_api else "torch_dtype": dtype}
        if device_arg == "auto":
            kwargs["device_map"] = "auto"
        model: Any = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
        if device_arg != "auto":
            model = model.to(device_arg)
        model.eval()
        device = next(model.parameters()).device
        self._loaded = _Loaded(
            model=model,
            directory=directory,
            device=device,
            vocab_size=int(config.vocab_size),
            max_positions=int(getattr(config, "max_position_embeddings", 1 << 30)),
        )
        return self._loaded

    # -- the decode loop (worker threads) ------------------------------------------------------

    def _reset_cache(self) -> None:
        self._cache = None
        self._cache_ids = []

    def _prepare_cache(self, prompt: list[int]) -> int:
        """Crop the kept cache to its common prefix with ``prompt``; return the reused length."""
        from transformers import DynamicCache

        loaded = self._ensure_loaded()
        reuse = 0
        if self.prefix_cache and self._cache is not None:
            # at least one prompt token must be prefilled: it yields the next token's logits
            reuse = min(_common_prefix_length(self._cache_ids, prompt), len(prompt) - 1)
        if reuse <= 0:
            try:
                self._cache = DynamicCache(config=loaded.model.config)
            except TypeError:  # transformers < 4.56 builds its layers lazily
                self._cache = DynamicCache()
            self._cache_ids = []
            return 0
        remove = self._cache.get_seq_length() - reuse
        if remove > 0:
            self._cache.crop(-remove)  # a negative count removes that many tokens
        self._cache_ids = self._cache_ids[:reuse]
        return reuse

    def _begin(self, request: GenerationRequest) -> _Decode:
        import torch

        loaded = self._ensure_loaded()
        tok = self.tokenizer
        if not request.prompt_ids:
            raise ValueError("the prompt is empty; build it with PromptBuilder before generating")
        request = fit_to_context(
            request, loaded.max_positions, model=self.model_name, max_tokens=self.max_tokens
        )
        prompt = list(request.prompt_ids)
        bad = [i for i in prompt if not 0 <= i < loaded.vocab_size]
        if bad:
            raise ValueError(
                f"prompt ids {bad[:5]} are outside the model's vocabulary "
                f"(0..{loaded.vocab_size - 1}); was the prompt built with another tokenizer?"
            )
        sampling = request.sampling
        try:
            cached = self._prepare_cache(prompt)
        except Exception:
            self._reset_cache()
            raise
        generator: torch.Generator | None = None
        if sampling.temperature > 0:
            generator = torch.Generator(device=loaded.device)
            generator.manual_seed(
                sampling.seed if sampling.seed is not None else random.getrandbits(63)
            )
        matcher, bitmask = None, None
        if request.constraint is not None:
            matcher, bitmask = self._grammar_matcher(request)
        room = max(0, loaded.max_positions - len(prompt))
        return _Decode(
            request=request,
            prompt=prompt,
            cached=cached,
            pending=prompt[cached:],
            stop_ids=frozenset(stop_ids_for(tok, sampling.stop_token_ids)),
            eos_ids=frozenset(stop_ids_for(tok)),
            generator=generator,
            matcher=matcher,
            bitmask=bitmask,
            decoder=tok.decoder(),
            max_new=min(sampling.max_tokens, room),
            seen=set(prompt) if sampling.repetition_penalty != 1.0 else set(),
            finish="length" if min(sampling.max_tokens, room) <= 0 else None,
        )

    def _advance(self, state: _Decode, steps: int) -> None:
        """Decode up to ``steps`` tokens (the first call also prefills the uncached prompt)."""
        import torch

        loaded = self._ensure_loaded()
        try:
            with torch.inference_mode():
                for _ in range(steps):
                    if state.done:
                        return
                    inputs = torch.tensor([state.pending], dtype=torch.long, device=loaded.device)
                    out = loaded.model(
                        input_ids=inputs,
                        past_key_values=self._cache,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    self._cache = out.past_key_values
                    self._cache_ids.extend(state.pending)
                    logits = out.logits[0, -1, :].float()
                    token = self._sample(state, logits)
                    self._accept(state, token)
        except Exception:
            self._reset_cache()  # a half-updated cache must not be reused
            raise

    def _sample(self, state: _Decode, logits: torch.Tensor) -> int:
        import torch

        budget = state.request.engine_budget
        if budget is not None:  # the thinking budget's early-stop ids, forced in the loop
            if state.budget_params is None:
                state.budget_params = budget_params(budget, self.tokenizer)
            tok = self.tokenizer
            forced = forced_budget_token(
                state.generated,
                state.budget_params,
                lambda ids: len(text := tok.decode(ids)) - len(text.rstrip("\n")),
            )
            if forced is not None:
                return forced
        sampling = state.request.sampling
        if state.matcher is not None and state.bitmask is not None:
            import xgrammar as xgr

            state.matcher.fill_next_token_bitmask(state.bitmask)
            row = logits.unsqueeze(0)
            xgr.apply_token_bitmask_inplace(
                row, state.bitmask.to(logits.device), vocab_size=logits.shape[-1]
            )
            logits = row[0]
        return _sample_token(
            logits, sampling, state.seen, state.completion_ids, state.generator, torch
        )

    def _accept(self, state: _Decode, token: int) -> None:
        state.generated.append(token)
        state.pending = [token]
        sampling = state.request.sampling
        if sampling.repetition_penalty != 1.0:
            state.seen.add(token)
        if sampling.presence_penalty:
            state.completion_ids.add(token)
        matcher = state.matcher
        if matcher is not None and not matcher.is_terminated() and not matcher.accept_token(token):
            state.matcher = None  # only a degenerate (all-masked) step gets here: go free
        if token in state.stop_ids:
            if token not in state.eos_ids:
                state.text += state.decoder.push([token]) + state.decoder.flush()
            else:
                state.text += state.decoder.flush()
            state.finish, state.matched = "stop", token
            return
        previous = len(state.text)
        state.text += state.decoder.push([token])
        if sampling.stop:
            longest = max(len(s) for s in sampling.stop)
            start = max(0, previous - longest + 1)
            hits = [(i, s) for s in sampling.stop if (i := state.text.find(s, start)) >= 0]
            if hits:
                cut, matched = min(hits)
                state.text = state.text[:cut]
                state.finish, state.matched = "stop", matched
                return
        if state.matcher is not None and state.matcher.is_terminated():
            state.finish = "stop"  # the grammar admits nothing more (it ends with EOS anyway)
            return
        if len(state.generated) >= state.max_new:
            state.text += state.decoder.flush()
            state.finish = "length"

    def _result(self, state: _Decode) -> Generation:
        tok = self.tokenizer
        usage = Usage(
            prompt_tokens=len(state.prompt),
            completion_tokens=len(state.generated),
            cached_tokens=state.cached,
            reasoning_tokens=count_reasoning_tokens(
                state.generated, tok, prompt_open=reasoning_mode(state.prompt, tok, None) == "open"
            ),
            requests=1,
        )
        return Generation(
            text=state.text,
            token_ids=tuple(state.generated),
            finish_reason=state.finish or "length",
            usage=usage,
            matched_stop=state.matched,
        )

    # -- constrained tool calls ----------------------------------------------------------------

    def _grammar_matcher(
        self, request: GenerationRequest
    ) -> tuple[xgrammar.GrammarMatcher, torch.Tensor]:
        try:
            import xgrammar as xgr
        except ImportError as exc:
            raise RuntimeUnavailableError(
                "Constrained tool calls need xgrammar: `pip install 'q3agent[grammar]'` (or "
                "`pip install xgrammar`), or send the request without a constraint."
            ) from exc
        constraint = request.constraint
        assert isinstance(constraint, ToolCallConstraint)
        loaded = self._ensure_loaded()
        tok = self.tokenizer
        if self._grammar_compiler is None:
            self._grammar_compiler = xgr.GrammarCompiler(
                _xgrammar_tokenizer_info(tok, loaded.vocab_size), max_threads=2
            )
        thinking = reasoning_mode(request.prompt_ids, tok, request.enable_thinking)
        tag = tool_call_xgrammar_tag(constraint, tok, thinking=thinking)
        compiled = self._grammar_compiler.compile_structural_tag(tag)
        matcher = xgr.GrammarMatcher(compiled, override_stop_tokens=[tok.im_end_id, tok.eos_id])
        return matcher, xgr.allocate_token_bitmask(1, loaded.vocab_size)


def _releasable(state: _Decode) -> str:
    """Text safe to stream now: all but a possible stop-string start; none once done."""
    if state.done:
        return ""
    stops = state.request.sampling.stop
    hold = max((len(s) for s in stops), default=1) - 1
    end = max(state.emitted, len(state.text) - hold)
    return state.text[state.emitted : end]


def _sample_token(
    logits: torch.Tensor,
    sampling: SamplingParams,
    seen: set[int],
    completion_ids: set[int],
    generator: torch.Generator | None,
    torch: Any,
) -> int:
    """Pick the next id: penalties, then temperature (0 = greedy), top-k, top-p, min-p.

    The repetition penalty (HF/vLLM semantics) covers prompt and completion ids; the presence
    penalty (OpenAI/SGLang semantics) covers completion ids only.
    """
    if sampling.repetition_penalty != 1.0 and seen:
        repeated = torch.tensor(sorted(seen), device=logits.device)
        picked = logits[repeated]
        penalty = sampling.repetition_penalty
        logits[repeated] = torch.where(picked > 0, picked / penalty, picked * penalty)
    if sampling.presence_penalty and completion_ids:
        present = torch.tensor(sorted(completion_ids), device=logits.device)
        logits[present] -= sampling.presence_penalty
    if sampling.temperature <= 0:
        return int(torch.argmax(logits).item())
    # work on the candidates only: a sorted top-k (or the whole vocabulary when top-k is off
    # and top-p/min-p need an order), so the per-token cost does not scale with 151,936 ids;
    # temperature scaling keeps the order, so it can come after the selection
    index: Any = None
    if 0 < sampling.top_k < logits.shape[-1]:
        logits, index = torch.topk(logits, sampling.top_k)
    elif sampling.top_p < 1.0 or sampling.min_p > 0:
        logits, index = torch.sort(logits, descending=True)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if index is not None and sampling.top_p < 1.0:
        before = torch.cumsum(probs, dim=-1) - probs
        probs = probs.masked_fill(before > sampling.top_p, 0.0)
    if index is not None and sampling.min_p > 0:
        probs = probs.masked_fill(probs < sampling.min_p * probs[0], 0.0)
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
        choice = int(torch.argmax(logits).item())
    else:
        choice = int(torch.multinomial(probs, 1, generator=generator).item())
    return choice if index is None else int(index[choice].item())


def tool_call_xgrammar_tag(
    constraint: ToolCallConstraint,
    tok: Qwen3Tokenizer,
    *,
    thinking: ReasoningMode = "disabled",
) -> Any:
    """The xgrammar structural tag for Qwen3 tool calls under ``constraint``.

    A call is the control token ``<tool_call>``, then ``\\n{"name": "NAME", "arguments": ``,
    arguments matching the tool's JSON schema (compact, ``", "``/``": "`` separators as the
    chat template writes them), ``}\\n`` and the control token ``</tool_call>``. Matching the
    tags as token ids keeps the completion's ids identical to what the template renders.
    ``required``: one or more calls separated by ``\\n``, nothing else, then EOS. Otherwise
    free text in which each ``<tool_call>`` token starts a constrained call. ``thinking``
    (see :func:`q3agent.qwen3.thinking.reasoning_mode`) puts a ``<think>…</think>\\n\\n``
    block in front.
    """
    import xgrammar as xgr
    from xgrammar import structural_tag as st

    tags = []
    for tool in constraint.tools:
        function = tool.get("function", tool)
        name = str(function["name"])
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        grammar = xgr.Grammar.from_json_schema(
            json.dumps(parameters), any_whitespace=False, separators=(", ", ": ")
        )
        head = '\n{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": '
        tags.append(
            st.TagFormat(
                begin=st.TokenFormat(token=tok.tool_call_id),
                content=st.SequenceFormat(
                    elements=[
                        st.ConstStringFormat(value=head),
                        st.GrammarFormat(grammar=str(grammar)),
                        st.ConstStringFormat(value="}\n"),
                    ]
                ),
                end=st.TokenFormat(token=tok.tool_call_end_id),
            )
        )
    if not tags:
        raise ValueError("a ToolCallConstraint needs at least one tool")
    control = [tok.think_id, tok.think_end_id, tok.tool_call_end_id]
    body: Any
    if constraint.required:
        body = st.TagsWithSeparatorFormat(tags=tags, separator="\n", at_least_one=True)
    else:
        body = st.TokenTriggeredTagsFormat(
            trigger_tokens=[tok.tool_call_id], tags=tags, exclude_tokens=control
        )
    reasoning_text = st.AnyTokensFormat(exclude_tokens=[*control, tok.tool_call_id])
    end_think = st.SequenceFormat(
        elements=[st.TokenFormat(token=tok.think_end_id), st.ConstStringFormat(value="\n\n")]
    )
    block = st.SequenceFormat(
        elements=[st.TokenFormat(token=tok.think_id), reasoning_text, end_think]
    )
    prefix: Any = None
    if thinking == "open":
        prefix = st.SequenceFormat(elements=[reasoning_text, end_think])
    elif thinking == "required":
        prefix = block
    elif thinking == "optional":
        prefix = st.OptionalFormat(content=block)
    fmt = body if prefix is None else st.SequenceFormat(elements=[prefix, body])
    return st.StructuralTag(format=fmt)


def _xgrammar_tokenizer_info(tok: Qwen3Tokenizer, vocab_size: int) -> Any:
    """xgrammar's view of the vocabulary: byte-level BPE strings plus four structural tags.

    The other control tokens are left empty, which xgrammar treats as special: the grammar
    never admits them (``<|im_end|>``/``<|endoftext|>`` only as the final stop tokens).
    """
    import xgrammar as xgr

    encoded = [""] * vocab_size
    for piece, index in tok.backend.get_vocab(with_added_tokens=False).items():
        if index < vocab_size:
            encoded[index] = piece
    for control in ("<tool_call>", "</tool_call>", "<think>", "</think>"):
        encoded[tok.special_tokens[control]] = control
    return xgr.TokenizerInfo(
        encoded,
        xgr.VocabType.BYTE_LEVEL,
        vocab_size=vocab_size,
        stop_token_ids=[tok.im_end_id, tok.eos_id],
    )


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> Any:
    import torch

    if dtype is None:
        return torch.float32 if device == "cpu" else torch.bfloat16
    if isinstance(dtype, str):
        if dtype == "auto":
            return "auto"
        try:
            value = getattr(torch, dtype)
        except AttributeError:
            value = None
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float16', 'float32'")
        return value
    return dtype


def _resolve_model_dir(model: str | Path, *, download: bool) -> Path:
    """A directory with ``config.json`` and weights for ``model``, from disk or the HF cache."""
    ref = str(model)
    local = Path(ref).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise RuntimeUnavailableError(
                f"{local} has no config.json; pass a directory saved with save_pretrained "
                "(config.json, weights and tokenizer.json)."
            )
        return local.resolve()
    try:
        repo_id = get_model(ref).hf_id
    except UnknownModelError:
        if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
            raise RuntimeUnavailableError(f"the model directory {local} does not exist.") from None
        if ref.count("/") != 1:
            raise
        repo_id = ref  # an HF id outside the registry (a fine-tune): the config decides
    return _from_hf_cache(repo_id, download=download)


def _from_hf_cache(repo_id: str, *, download: bool) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    how = (
        f"Download the weights with `huggingface-cli download {repo_id}` (or "
        f"`hf download {repo_id}`), pass a local model directory, construct the runtime "
        "with download=True, or serve the model with SGLang/vLLM and use a server runtime."
    )
    try:
        path = Path(snapshot_download(repo_id, local_files_only=offline or not download))
    except Exception as exc:
        state = "offline (HF_HUB_OFFLINE is set)" if offline else "not downloaded"
        raise RuntimeUnavailableError(
            f"{repo_id} is not in the Hugging Face cache ({state}: {type(exc).__name__}). {how}"
        ) from exc
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    if not (path / "config.json").is_file() or not has_weights:
        raise RuntimeUnavailableError(
            f"The cached snapshot of {repo_id} at {path} lacks config.json or weights "
            f"(an interrupted download?). {how}"
        )
    return path
