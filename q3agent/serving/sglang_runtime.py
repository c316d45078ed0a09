"""SGLang runtimes: the embedded ``sglang.Engine`` and a remote SGLang server's ``/generate``.

Both send the append-only prompt as ``input_ids`` so RadixAttention serves every repeated
prefix from its cache, and both read back ``output_ids`` so the next prompt appends exactly
the tokens the model produced. They share how a :class:`GenerationRequest` becomes SGLang's
``sampling_params`` (names as SGLang spells them), how a tool-call constraint becomes a
``structural_tag``, how the optional thinking-budget logit processor is attached, and how
``meta_info`` maps onto :class:`Generation` and :class:`Usage`.

Design decisions (see ``docs/serving.md`` for the user-facing version):

* ``skip_tokenizer_init`` stays off. SGLang needs its tokenizer for stop *strings*
  (``SamplingParams.stop``) and returns the decoded ``text``; we still keep our own
  :class:`Qwen3Tokenizer` for counting reasoning tokens and decoding streamed ids.
* ``skip_special_tokens=False`` and ``spaces_between_special_tokens=False`` so ``<think>`` and
  ``<tool_call>`` survive in the text exactly as the model wrote them.
* The completion's text is our own decoding of ``output_ids``
  (:func:`~q3agent.serving.base.completion_text`), never SGLang's ``text``: SGLang's
  detokenizer drops a matched stop id's text (``</think>`` included) while keeping the id.
  ``output_ids`` include the final stop id; where a server omits it, the matched id from
  ``finish_reason`` is appended, so ``token_ids`` always end with the id that ended the turn.
* Every request gets its own ``rid`` (the request's id plus a unique suffix): SGLang aborts a
  streaming request whose rid is reused, and a budget continuation is a new request.
* ``max_new_tokens`` is clamped to what the context leaves after the prompt, by SGLang's own
  rules (:func:`fit_to_sglang`): a prompt of ``context_length - 6`` tokens or more is a
  :class:`~q3agent.serving.base.ContextLengthError` before it is sent (SGLang would answer
  HTTP 400), and the completion gets at most ``context_length - prompt - 2`` tokens. The
  context comes from the engine (``context_len``) or the server (``/get_model_info``,
  ``/v1/models``).
* Streaming: SGLang sends cumulative chunks by default and deltas under
  ``--incremental-streaming-output`` (older releases sent cumulative text with delta ids
  under ``--stream-output``). A chunk's ids are a delta when the ids received so far plus the
  chunk add up to ``meta_info["completion_tokens"]``, cumulative when the chunk alone does;
  without that count, a chunk that starts with everything received so far is cumulative.
  Streamed text is decoded from the new ids with our tokenizer, so the server's text mode
  does not matter; the final chunk's ``generation`` is authoritative (a stop string the
  deltas showed is trimmed there).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import json
import logging
import math
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from q3agent.qwen3.thinking import ReasoningMode, count_reasoning_tokens, reasoning_mode
from q3agent.serving._http import (
    HTTPOptions,
    HTTPRuntimeBase,
)
from q3agent.serving.base import (
    ContextLengthError,
    Generation,
    GenerationChunk,
    GenerationRequest,
    RuntimeBase,
    RuntimeCapabilities,
    RuntimeUnavailableError,
    ToolCallConstraint,
    check_max_tokens,
    completion_text,
    fit_to_context,
    stop_ids_for,
)
from q3agent.serving.engine_budget import budget_params, sglang_processor_str
from q3agent.types import FinishReason, SamplingParams, Usage

if TYPE_CHECKING:
    from q3agent.qwen3.models import ModelSpec
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

logger = logging.getLogger("q3agent.serving.sglang")

TOOL_CALL_BEGIN = '<tool_call>\n{"name": "'
TOOL_CALL_ARGUMENTS = '", "arguments": '
TOOL_CALL_END = "}\n</tool_call>"
TOOL_CALL_TRIGGER = "<tool_call>"
MAX_WHITESPACE = 1
"""Longest whitespace run the tool-call grammar allows between JSON tokens (xgrammar's
``max_whitespace_cnt``). Unbounded, a JSON grammar lets a model that is unsure (a small or
random one) pad with whitespace after ``"arguments": {`` until its token limit and never close
the call: seen on SGLang and on vLLM under ``tool_choice="required"``."""

_THINKING_PROCESSOR_MODULE = "sglang.srt.sampling.custom_logit_processor"
_THINKING_PROCESSOR_CLASS = "Qwen3ThinkingBudgetLogitProcessor"


_INSTALL_HINT = (
    'Install it with `pip install "q3agent[sglang]"` on a Linux machine with a CUDA GPU, or '
    "run the model elsewhere and connect with RemoteSGLangRuntime(url) (an SGLang server) or "
    "OpenAICompatibleRuntime(url) (vLLM, SGLang, any OpenAI-compatible server); on a CPU box "
    "TransformersRuntime(path) runs a local Qwen3 checkpoint."
)


# --------------------------------------------------------------------------------------------
# Request building (shared by the embedded engine and the remote server)


def _tool_parameters(tool: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    function = tool.get("function", tool)
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ValueError(
            f"tool {tool!r} has no function name; tools are OpenAI-style "
            '{"type": "function", "function": {"name": ..., "parameters": {...}}} dicts'
        )
    params = function.get("parameters") or {"type": "object", "properties": {}}
    return function["name"], dict(params)


def tool_call_tag_json(
    constraint: ToolCallConstraint,
    reasoning: ReasoningMode = "disabled",
    *,
    legacy: bool = False,
) -> str:
    """The ``structural_tag`` JSON that makes SGLang emit schema-valid Qwen3 ``<tool_call>``s.

    Each tool gets a tag that begins ``<tool_call>\\n{"name": "NAME", "arguments": `` and ends
    ``}\\n</tool_call>``, with the arguments constrained to the tool's JSON schema; the tag is
    entered when the model writes ``<tool_call>``.

    The default (``legacy=False``) is the ``format`` form SGLang (and vLLM's
    ``structured_outputs``) hand to xgrammar. Thinking is left unconstrained by a leading
    ``<think>…</think>\\n\\n`` block chosen from ``reasoning``. Not ``required``
    (``triggered_tags``): text is free and each ``<tool_call>`` starts a constrained call.
    ``required`` (``tags_with_separator``): the answer after thinking *is* one or more calls
    separated by ``\\n``, nothing before, between or after them. Whitespace runs inside the
    arguments are capped at :data:`MAX_WHITESPACE`, so even a random model closes a small
    tool's call within a few dozen tokens. ``legacy=True`` gives
    the older ``structures``/``triggers`` form every SGLang release and grammar backend
    accepts; it cannot force a call (``required`` is then only as strong as the prompt) and a
    ``<tool_call>`` written while thinking also triggers it.
    """
    tools = [_tool_parameters(tool) for tool in constraint.tools]
    if not tools:
        raise ValueError("a ToolCallConstraint needs at least one tool")
    if legacy:
        return json.dumps(
            {
                "type": "structural_tag",
                "structures": [
                    {
                        "begin": TOOL_CALL_BEGIN + name + TOOL_CALL_ARGUMENTS,
                        "schema": params,
                        "end": TOOL_CALL_END,
                    }
                    for name, params in tools
                ],
                "triggers": [TOOL_CALL_TRIGGER],
            },
            ensure_ascii=False,
        )
    tags = [
        {
            "type": "tag",
            "begin": TOOL_CALL_BEGIN + name + TOOL_CALL_ARGUMENTS,
            "content": {
                "type": "json_schema",
                "json_schema": params,
                "max_whitespace_cnt": MAX_WHITESPACE,
            },
            "end": TOOL_CALL_END,
        }
        for name, params in tools
    ]
    calls: dict[str, Any]
    if constraint.required:
        # the answer is one or more calls separated by newlines and nothing else: no text
        # before the first call (a triggered tag leaves that free, and an unsure model rambles
        # there), and the grammar ends after the last call, so the engine stops the turn
        calls = {
            "type": "tags_with_separator",
            "tags": tags,
            "separator": "\n",
            "at_least_one": True,
            "stop_after_first": False,
        }
    else:
        calls = {
            "type": "triggered_tags",
            "triggers": [TOOL_CALL_TRIGGER],
            "tags": tags,
            "at_least_one": False,
            "stop_after_first": False,
        }
    fmt: dict[str, Any] = calls
    if reasoning != "disabled":
        think: dict[str, Any] = {
            "type": "sequence",
            "elements": [
                {
                    "type": "tag",
                    "begin": "" if reasoning == "open" else "<think>",
                    "content": {"type": "any_text"},
                    "end": "</think>",
                },
                {"type": "const_string", "value": "\n\n"},
            ],
        }
        if reasoning == "optional":
            think = {"type": "optional", "content": think}
        fmt = {"type": "sequence", "elements": [think, calls]}
    return json.dumps({"type": "structural_tag", "format": fmt}, ensure_ascii=False)


def sglang_sampling_params(sampling: SamplingParams, tokenizer: Qwen3Tokenizer) -> dict[str, Any]:
    """``SamplingParams`` in SGLang's ``sampling_params`` names (``max_new_tokens``, …).

    ``stop_token_ids`` always lists ``<|im_end|>`` and ``<|endoftext|>`` (plus extras), so a
    server whose generation config says otherwise still ends the turn where Qwen3 does.
    ``sampling_seed`` is sent only when a seed is set (older SGLang releases lack the key).
    """
    params: dict[str, Any] = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "presence_penalty": sampling.presence_penalty,
        "repetition_penalty": sampling.repetition_penalty,
        "max_new_tokens": sampling.max_tokens,
        "stop_token_ids": list(dict.fromkeys(stop_ids_for(tokenizer, sampling.stop_token_ids))),
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
    }
    if sampling.stop:
        params["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        params["sampling_seed"] = sampling.seed
    return params


def thinking_budget_processor_str() -> str:
    """SGLang's ``Qwen3ThinkingBudgetLogitProcessor`` serialised for ``custom_logit_processor``.

    With sglang installed this is the class's own ``to_str()``. Without it (a client of a
    remote server) it is the same thing built by hand: ``{"callable": hex(pickle)}`` where the
    pickle is a by-reference global of that class, which the server resolves on load.
    """
    try:
        module = __import__(_THINKING_PROCESSOR_MODULE, fromlist=[_THINKING_PROCESSOR_CLASS])
    except ImportError:
        ref = f"c{_THINKING_PROCESSOR_MODULE}\n{_THINKING_PROCESSOR_CLASS}\n.".encode()
        return json.dumps({"callable": ref.hex()})
    processor_cls = getattr(module, _THINKING_PROCESSOR_CLASS)
    return str(processor_cls.to_str())


class _SGLangCodec:
    """Builds SGLang request payloads and reads SGLang replies (engine and HTTP alike)."""

    def __init__(
        self,
        tokenizer: Qwen3Tokenizer,
        *,
        thinking_budget_processor: bool,
        default_thinking_budget: int | None,
        legacy_structural_tag: bool,
        custom_logit_processor: str | None = None,
        custom_params: Mapping[str, Any] | None = None,
        engine_budget: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.engine_budget = engine_budget
        self.custom_logit_processor = custom_logit_processor
        self.custom_params = dict(custom_params or {})
        self.thinking_budget_processor = thinking_budget_processor
        self.default_thinking_budget = default_thinking_budget
        self.legacy_structural_tag = legacy_structural_tag
        self._processor_str: str | None = None
        self._warned_legacy_required = False

    def payload(
        self, request: GenerationRequest, *, stream: bool, thinking_budget: int | None
    ) -> dict[str, Any]:
        tok = self.tokenizer
        params = sglang_sampling_params(request.sampling, tok)
        mode = reasoning_mode(request.prompt_ids, tok, request.enable_thinking)
        if isinstance(request.constraint, ToolCallConstraint):
            legacy_required = self.legacy_structural_tag and request.constraint.required
            if legacy_required and not self._warned_legacy_required:
                self._warned_legacy_required = True
                logger.warning(
                    "legacy structural tags cannot force a tool call; required=True is "
                    "only a hint to the model (use legacy_structural_tag=False on "
                    "SGLang releases whose xgrammar backend takes the 'format' form)"
                )
            params["structural_tag"] = tool_call_tag_json(
                request.constraint, mode, legacy=self.legacy_structural_tag
            )
        payload: dict[str, Any] = {
            "input_ids": list(request.prompt_ids),
            "sampling_params": params,
            "stream": stream,
        }
        budget = self.default_thinking_budget if thinking_budget is None else thinking_budget
        if (
            self.thinking_budget_processor
            and budget is not None
            and budget >= 0
            # the processor counts from the <think> that opens the current block (SGLang
            # 0.5.x: the last <think>/</think> of prompt + output decides), so it can act
            # whenever this turn's thinking is not over. Releases that stand down at any
            # earlier </think> simply leave it to the agent loop's budget procedure.
            and mode != "disabled"
        ):
            if self._processor_str is None:
                self._processor_str = thinking_budget_processor_str()
            payload["custom_logit_processor"] = self._processor_str
            params["custom_params"] = {"thinking_budget": budget}
        if self.custom_logit_processor is not None:
            payload["custom_logit_processor"] = self.custom_logit_processor
            params["custom_params"] = {**params.get("custom_params", {}), **self.custom_params}
        if self.engine_budget and request.engine_budget is not None:
            # q3agent's in-engine budget (chaining the runtime's own processor, if any)
            payload["custom_logit_processor"] = sglang_processor_str(self.custom_logit_processor)
            params["custom_params"] = {
                **params.get("custom_params", {}),
                **budget_params(request.engine_budget, tok),
            }
        payload["rid"] = unique_rid(request.request_id)
        return payload

    def generation(self, out: Mapping[str, Any], request: GenerationRequest) -> Generation:
        meta = out.get("meta_info") or {}
        ids = [int(t) for t in out.get("output_ids") or ()]
        finish, matched = _finish(meta.get("finish_reason"))
        if isinstance(matched, int) and (not ids or ids[-1] != matched):
            ids.append(matched)
        return Generation(
            text=completion_text(self.tokenizer, ids, matched),
            token_ids=tuple(ids),
            finish_reason=finish,
            usage=self.usage(meta, request, ids),
            matched_stop=matched,
        )

    def usage(
        self, meta: Mapping[str, Any], request: GenerationRequest, ids: Sequence[int]
    ) -> Usage:
        return Usage(
            prompt_tokens=int(meta.get("prompt_tokens", len(request.prompt_ids))),
            completion_tokens=int(meta.get("completion_tokens", len(ids))),
            cached_tokens=int(meta.get("cached_tokens") or 0),
            reasoning_tokens=count_reasoning_tokens(
                ids,
                self.tokenizer,
                prompt_open=reasoning_mode(request.prompt_ids, self.tokenizer, None) == "open",
            ),
            requests=1,
        )


SGLANG_INPUT_RESERVE = 6
"""Positions below the context length a prompt may not reach on SGLang: its scheduler refuses
a prompt of ``context_length - 6`` tokens or more (its ``max_req_input_len`` is the context
minus 1 minus 5; "Input length (N tokens) exceeds the maximum allowed length", HTTP 400 from a
server). Seen on SGLang 0.5.23 with ``--context-length 4096``: 4,089 tokens ran, 4,090 did not."""


def fit_to_sglang(
    request: GenerationRequest,
    context_length: int | None,
    *,
    model: str = "",
    max_tokens: int | None = None,
) -> GenerationRequest:
    """:func:`~q3agent.serving.base.fit_to_context` with SGLang's own limits.

    A prompt SGLang would refuse (:data:`SGLANG_INPUT_RESERVE`) is a
    :class:`~q3agent.serving.base.ContextLengthError` here, before anything is sent, and
    ``max_tokens`` is clamped to ``context_length - prompt - 2``, the most SGLang's scheduler
    lets a request write (it cuts longer ones there itself, with finish reason ``length``).
    """
    request = fit_to_context(request, context_length, model=model, max_tokens=max_tokens)
    if context_length is None or context_length <= SGLANG_INPUT_RESERVE:
        return request
    prompt = len(request.prompt_ids)
    if prompt >= context_length - SGLANG_INPUT_RESERVE:
        raise ContextLengthError(prompt, context_length, model=model)
    room = context_length - prompt - 2
    if request.sampling.max_tokens <= room:
        return request
    return replace(request, sampling=request.sampling.with_(max_tokens=room))


def unique_rid(request_id: str | None) -> str:
    """A request id SGLang has not seen: ``request_id`` (for tracing) plus a unique suffix.

    SGLang keys its request state by ``rid``; a streaming ``/generate`` whose rid is reused is
    aborted about 2 s after the first one ends, so no two requests may share one.
    """
    suffix = uuid.uuid4().hex[:12]
    return f"{request_id}-{suffix}" if request_id else suffix


def _finish(raw: Any) -> tuple[FinishReason, str | int | None]:
    """SGLang's ``finish_reason`` (``{"type": ..., "matched": ...}``) as ours."""
    if raw is None:
        return "abort", None
    if isinstance(raw, str):
        kind, matched = raw, None
    else:
        kind, matched = str(raw.get("type", "stop")), raw.get("matched")
        if kind == "abort" and raw.get("message"):
            logger.warning("SGLang aborted the request: %s", raw["message"])
    finish: FinishReason = "stop"
    if kind == "length":
        finish = "length"
    elif kind == "abort":
        finish = "abort"
    if isinstance(matched, bool) or not isinstance(matched, int | str):
        matched = None
    return finish, matched


class _StreamAssembler:
    """Turns SGLang stream chunks (cumulative or incremental) into :class:`GenerationChunk`s."""

    def __init__(self, codec: _SGLangCodec, request: GenerationRequest) -> None:
        self.codec = codec
        self.request = request
        self.ids: list[int] = []
        self.decoder = codec.tokenizer.decoder()
        self.emitted = ""

    def new_ids(self, chunk_ids: list[int], completion_tokens: Any) -> list[int]:
        have = self.ids
        starts_with_have = chunk_ids[: len(have)] == have and len(chunk_ids) >= len(have)
        if isinstance(completion_tokens, int):
            if len(chunk_ids) == completion_tokens and starts_with_have:
                return chunk_ids[len(have) :]
            if len(have) + len(chunk_ids) == completion_tokens:
                return chunk_ids
        return chunk_ids[len(have) :] if starts_with_have and have else chunk_ids

    def feed(self, out: Mapping[str, Any]) -> GenerationChunk | None:
        meta = out.get("meta_info") or {}
        chunk_ids = [int(t) for t in out.get("output_ids") or ()]
        fresh = self.new_ids(chunk_ids, meta.get("completion_tokens"))
        self.ids.extend(fresh)
        raw_finish = meta.get("finish_reason")
        if raw_finish is None:
            text = self.decoder.push(fresh)
            self.emitted += text
            cached = meta.get("cached_tokens")
            return (
                GenerationChunk(
                    text=text,
                    token_ids=tuple(fresh),
                    cached_tokens=cached if isinstance(cached, int) else None,
                )
                if fresh
                else None
            )
        finish, matched = _finish(raw_finish)
        if isinstance(matched, int) and (not self.ids or self.ids[-1] != matched):
            self.ids.append(matched)
            fresh.append(matched)
        final_text = completion_text(self.codec.tokenizer, self.ids, matched)
        tail = final_text[len(self.emitted) :] if final_text.startswith(self.emitted) else ""
        generation = Generation(
            text=final_text,
            token_ids=tuple(self.ids),
            finish_reason=finish,
            usage=self.codec.usage(meta, self.request, self.ids),
            matched_stop=matched,
        )
        return GenerationChunk(text=tail, token_ids=tuple(fresh), generation=generation)


def _default_tokenizer(model_path: str) -> Qwen3Tokenizer:
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

    if Path(model_path).expanduser().is_dir():
        return Qwen3Tokenizer.from_pretrained(model_path)
    # every Qwen3 model shares one tokenizer; the offline build needs no download
    return Qwen3Tokenizer.offline()


# --------------------------------------------------------------------------------------------
# Child processes: Engine.shutdown() kills *every* child of the host process


def _child_pids(parent: int) -> set[int]:
    """Direct children of ``parent`` (psutil when installed, else a scan of ``/proc``)."""
    try:
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        pass
    else:
        try:
            return {int(p.pid) for p in psutil.Process(parent).children(recursive=False)}
        except psutil.Error:
            return set()
    children: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name sits in parentheses and may contain spaces: split after it
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(parent):
            children.add(int(entry))
    return children


_shutdown_lock = threading.Lock()


def shutdown_engine_only(engine: Any, engine_pids: Sequence[int]) -> None:
    """Shut ``engine`` down, killing only its own processes, not the host's other children.

    ``sglang.Engine.shutdown()`` ends with ``kill_process_tree(os.getpid(),
    include_parent=False)``: it kills every child of this process, MCP stdio servers and other
    subprocesses included. SGLang offers no switch for that, but it does record its own
    children (``Engine.get_all_child_pids()``: schedulers, detokenizer). During the shutdown
    call, the engine module's ``kill_process_tree`` is swapped for one that turns the
    "all children of this process" call into one call per engine child (each with its
    descendants); every other use passes through. Afterwards the engine's ``atexit`` hook is
    unregistered so interpreter exit does not repeat the blanket kill.
    """
    module = sys.modules.get(type(engine).__module__)
    original = getattr(module, "kill_process_tree", None) if module is not None else None
    me = os.getpid()
    own = [pid for pid in engine_pids if pid != me]

    def scoped_kill(parent_pid: int | None, *args: Any, **kwargs: Any) -> Any:
        include_parent = kwargs.get("include_parent", args[0] if args else True)
        if (parent_pid is None or parent_pid == me) and not include_parent and callable(original):
            rest = {k: v for k, v in kwargs.items() if k != "include_parent"}
            for pid in own:
                original(pid, *args[1:], include_parent=True, **rest)
            return None
        if callable(original):
            return original(parent_pid, *args, **kwargs)
        return None

    with _shutdown_lock:
        if module is not None and callable(original):
            module.kill_process_tree = scoped_kill  # type: ignore[attr-defined]
        else:
            logger.warning(
                "cannot scope sglang's shutdown to the engine's processes (no "
                "kill_process_tree in %s); it may end other child processes of this program",
                type(engine).__module__,
            )
        try:
            engine.shutdown()
        finally:
            if module is not None and callable(original):
                module.kill_process_tree = original  # type: ignore[attr-defined]
    atexit.unregister(engine.shutdown)


# --------------------------------------------------------------------------------------------
# The embedded engine


@dataclass(frozen=True, slots=True)
class GPUs:
    """The GPUs to size an embedded engine for, in place of the ones this machine has.

    :class:`SGLangRuntime` finds the GPUs with PyTorch; pass ``gpus=GPUs(count=8,
    memory_gb=80)`` to plan ``tp_size`` for another machine (or in a test without a GPU).
    """

    count: int
    """How many GPUs the engine may use."""
    memory_gb: float = 80.0
    """Memory of each GPU in GB (the sizing leaves 10% of it free)."""

    def __post_init__(self) -> None:
        if self.count < 1 or self.memory_gb <= 0:
            raise ValueError(
                f"GPUs needs count >= 1 and memory_gb > 0, got count={self.count}, "
                f"memory_gb={self.memory_gb}"
            )


@dataclass(frozen=True, slots=True)
class SGLangRequestOptions:
    """What both SGLang runtimes add to every request beyond its sampling settings.

    ``enable_thinking_budget_processor`` attaches SGLang's ``Qwen3ThinkingBudgetLogitProcessor``
    with ``thinking_budget`` (the default when :meth:`SGLangRuntime.generate` gets none);
    ``legacy_structural_tag`` sends the older ``structures``/``triggers`` form of the tool-call
    tag (:func:`tool_call_tag_json`); ``custom_logit_processor`` (a
    ``CustomLogitProcessor.to_str()`` string) is attached instead of the budget processor, with
    ``custom_params`` merged into each request's ``custom_params``. The processors need an
    engine or server started with ``enable_custom_logit_processor``.
    """

    enable_thinking_budget_processor: bool = False
    thinking_budget: int | None = None
    legacy_structural_tag: bool = False
    custom_logit_processor: str | None = None
    custom_params: Mapping[str, Any] | None = None


class _CodecOwner(RuntimeBase):
    """What both SGLang runtimes share: request options and the codec built from them."""

    _codec: _SGLangCodec | None = None
    _options: SGLangRequestOptions = SGLangRequestOptions()
    _engine_budget: bool = False

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """Token ids, tool-call constraints (SGLang's structural tag) and, with
        ``engine_budget=True``, the thinking budget forced inside the engine
        (:mod:`q3agent.serving.engine_budget`)."""
        return RuntimeCapabilities(tool_call_constraint=True, engine_budget=self._engine_budget)

    def _codec_(self) -> _SGLangCodec:
        """The request builder and reply reader, made on first use (it needs the tokenizer)."""
        if self._codec is None:
            options = self._options
            self._codec = _SGLangCodec(
                self.tokenizer,
                thinking_budget_processor=options.enable_thinking_budget_processor,
                default_thinking_budget=options.thinking_budget,
                legacy_structural_tag=options.legacy_structural_tag,
                custom_logit_processor=options.custom_logit_processor,
                custom_params=options.custom_params,
                engine_budget=self._engine_budget,
            )
        return self._codec


class SGLangRuntime(_CodecOwner):
    """Qwen3 on an ``sglang.Engine`` inside this process (needs sglang and CUDA GPUs).

    The engine starts on the first request (or :meth:`start`), built from the model registry:

    * ``tp_size``: GPUs needed for bf16 weights plus one native-context KV reserve
      (:meth:`ModelSpec.gpus_needed` on this machine's GPU memory); an error when the
      machine has fewer. Pass it to override (quantized checkpoints, more headroom).
    * ``ep_size``: for MoE models on more than one GPU, equal to ``tp_size`` (each GPU holds
      1/tp of the experts instead of 1/tp of every expert; the attention stays tensor
      parallel). Pass ``ep_size=1`` to keep pure tensor parallelism.
    * ``context_length``: passed through; above the model's native 32K window it also sets
      YaRN rope scaling (``json_model_override_args``) with the smallest factor of 2 or 4
      that covers it, as the Qwen3 cards advise (static YaRN slightly hurts short texts, so
      it is never on by default), and ``max_position_embeddings`` to ``context_length`` (from
      which SGLang derives the context it allows).
    * ``schedule_policy="lpm"`` (longest prefix match first) with the radix cache on, which
      suits agent loops whose prompts share long prefixes.
    * ``enable_custom_logit_processor=True`` when ``enable_thinking_budget_processor``;
      with ``engine_budget=True`` also ``disable_overlap_schedule=True``: q3agent's processor
      forces the report's early-stop text at the budget inside the engine
      (:mod:`q3agent.serving.engine_budget`), so a budget hit stays one request.

    Thinking budget: the agent loop's budget procedure (:mod:`q3agent.serving.budget`) works
    with any runtime. With ``enable_thinking_budget_processor=True`` the runtime also attaches
    SGLang's ``Qwen3ThinkingBudgetLogitProcessor`` with ``custom_params={"thinking_budget":
    N}``, where N is the ``thinking_budget`` keyword of :meth:`generate`/:meth:`stream`, else
    the constructor's ``thinking_budget``, whenever the turn's thinking is not over.

    Shutdown: :meth:`aclose` shuts the engine down killing only the engine's processes (see
    :func:`shutdown_engine_only`). Close MCP servers before the runtime anyway (the Agent
    does), because an engine that dies any other way (``atexit``, a crash) takes every child
    of this process with it.

    ``custom_logit_processor`` (a ``CustomLogitProcessor.to_str()`` string) is attached to
    every request instead of the budget processor, with ``custom_params`` merged into each
    request's ``custom_params`` (the engine needs ``enable_custom_logit_processor=True``).

    ``max_tokens`` caps the completion tokens of every request (an :class:`~q3agent.Agent`
    on this runtime uses it as its own limit unless given ``max_tokens``).

    Event loops: a real ``sglang.Engine`` serves requests on the loop of its first one, so
    the runtime runs the engine's coroutines on a loop of its own (a daemon thread) and any
    caller's loop (``Agent.run``'s portal, a later ``asyncio.run``) can use it.

    ``engine_factory`` replaces ``sglang.Engine`` (tests pass a fake engine); ``gpus``
    (:class:`GPUs`) replaces GPU detection (to plan for another machine).
    """

    def __init__(
        self,
        model: str,
        *,
        tp_size: int | None = None,
        ep_size: int | None = None,
        context_length: int | None = None,
        mem_fraction_static: float | None = None,
        request_options: SGLangRequestOptions | None = None,
        engine_budget: bool = False,
        max_tokens: int | None = None,
        tokenizer: Qwen3Tokenizer | None = None,
        engine_factory: Callable[..., Any] | None = None,
        gpus: GPUs | None = None,
        **engine_kwargs: Any,
    ) -> None:
        from q3agent.qwen3.models import get_model

        self.max_tokens = check_max_tokens(max_tokens)
        """Most completion tokens per request (``None``: as each request asks)."""
        self._spec: ModelSpec = get_model(model)
        self._model_path = self._spec.local_path or self._spec.hf_id or model
        self._tp_size = tp_size
        self._ep_size = ep_size
        self._context_length = context_length
        self._mem_fraction_static = mem_fraction_static
        self._options = request_options or SGLangRequestOptions()
        self._engine_factory = engine_factory
        self._gpus = gpus
        self._engine_kwargs = engine_kwargs
        self._tokenizer = tokenizer
        self._engine_budget = engine_budget
        self._engine: Any = None
        self._engine_pids: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        if context_length is not None and context_length > self._spec.max_context:
            raise ValueError(
                f"{self._spec.name} supports at most {self._spec.max_context:,} tokens of "
                f"context, asked for {context_length:,}. Lower context_length or pick a model "
                "with a longer window (the 2507 releases have 262,144 natively)."
            )

    def _load_tokenizer(self) -> Qwen3Tokenizer:
        """The model directory's tokenizer, else the shared offline build."""
        return _default_tokenizer(self._model_path)

    @property
    def model_name(self) -> str:
        """The registry name of the model, e.g. ``Qwen3-30B-A3B``."""
        return self._spec.name

    @property
    def spec(self) -> ModelSpec:
        """The registry entry the engine is configured from."""
        return self._spec

    @property
    def engine(self) -> Any:
        """The running ``sglang.Engine`` (``None`` before :meth:`start`)."""
        return self._engine

    def _detect_gpus(self) -> GPUs:
        if self._gpus is not None:
            return self._gpus
        try:
            import torch
        except ImportError as exc:
            raise RuntimeUnavailableError(
                f"SGLangRuntime needs PyTorch with CUDA to find the GPUs. {_INSTALL_HINT}"
            ) from exc
        found = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
        if not found:
            raise RuntimeUnavailableError(
                f"SGLangRuntime found no CUDA GPU on this machine. {_INSTALL_HINT}"
            )
        memory = torch.cuda.get_device_properties(0).total_memory / 1e9
        return GPUs(count=found, memory_gb=memory or 80.0)

    def engine_args(self) -> dict[str, Any]:
        """The keyword arguments the ``sglang.Engine`` is (or would be) created with."""
        spec = self._spec
        tp = self._tp_size
        if tp is None:
            gpus = self._detect_gpus()
            count, memory = gpus.count, gpus.memory_gb
            tp = spec.gpus_needed(memory, self._context_length)
            if tp > count:
                weights_gb = spec.weight_bytes_bf16 / 1e9
                raise RuntimeUnavailableError(
                    f"{spec.name} needs {tp} GPUs of {memory:g} GB in bf16 ({weights_gb:.0f} GB "
                    f"of weights plus KV cache), this machine has {count}. Use a smaller model, "
                    "pass tp_size with a quantized checkpoint (quantization=...), or serve it "
                    "on several nodes (docs/serving.md) and use RemoteSGLangRuntime."
                )
        args: dict[str, Any] = {"model_path": self._model_path, "tp_size": tp}
        ep = self._ep_size
        if ep is None and spec.is_moe and tp > 1:
            ep = tp
        if ep is not None and ep > 1:
            args["ep_size"] = ep
        if self._context_length is not None:
            args["context_length"] = self._context_length
            if self._context_length > spec.native_context:
                factor = 2.0 if self._context_length <= 2 * spec.native_context else 4.0
                factor = max(factor, float(math.ceil(self._context_length / spec.native_context)))
                # SGLang derives the context from max_position_embeddings and ignores the
                # YaRN factor once original_max_position_embeddings is set
                # (hf_transformers_utils.get_context_length); without raising it too, a
                # context_length above 40,960 is refused at start.
                args["json_model_override_args"] = json.dumps(
                    {
                        "rope_scaling": {
                            "rope_type": "yarn",
                            "factor": factor,
                            "original_max_position_embeddings": spec.native_context,
                        },
                        "max_position_embeddings": self._context_length,
                    }
                )
        if self._mem_fraction_static is not None:
            args["mem_fraction_static"] = self._mem_fraction_static
        args["schedule_policy"] = "lpm"
        if self._options.enable_thinking_budget_processor or self._options.custom_logit_processor:
            args["enable_custom_logit_processor"] = True
        if self._engine_budget:
            args["enable_custom_logit_processor"] = True
            # the overlap scheduler shows processors the output one token late
            args["disable_overlap_schedule"] = True
        args.update(self._engine_kwargs)
        return args

    def start(self) -> None:
        """Create the engine now (loads the weights; blocks for minutes on large models).

        Call it from the main thread: SGLang installs signal handlers while starting.
        """
        if self._engine is not None:
            return
        if self._closed:
            raise RuntimeUnavailableError("this SGLangRuntime was closed; create a new one")
        factory = self._engine_factory
        if factory is None:
            try:
                import sglang
            except ImportError as exc:
                raise RuntimeUnavailableError(
                    f"SGLangRuntime needs the sglang package, which is not installed. "
                    f"{_INSTALL_HINT}"
                ) from exc
            factory = sglang.Engine
            # sglang.Engine serves requests on the event loop of the first one (its tokenizer
            # manager's handle loop stays there): give it a loop of its own on a daemon thread,
            # so requests from any loop (Agent.run's portal, a new asyncio.run) reach it.
            self._loop = asyncio.new_event_loop()
            threading.Thread(
                target=self._loop.run_forever, name="q3agent-sglang-engine", daemon=True
            ).start()
        args = self.engine_args()
        before = _child_pids(os.getpid())
        engine = factory(**args)
        pids_fn = getattr(engine, "get_all_child_pids", None)
        if callable(pids_fn):
            pids = [int(p) for p in pids_fn()]
        else:
            # older releases do not list their children: take what appeared meanwhile
            pids = sorted(_child_pids(os.getpid()) - before)
        self._engine, self._engine_pids = engine, pids

    @property
    def context_length(self) -> int | None:
        """Tokens of context the engine allows (prompt plus completion), once it is known.

        The ``context_length`` given at construction, else what the running engine derived
        from the model's config (``tokenizer_manager.context_len``).
        """
        if self._context_length is not None:
            return self._context_length
        manager = getattr(self._engine, "tokenizer_manager", None)
        found = getattr(manager, "context_len", None)
        return found if isinstance(found, int) and found > 0 else None

    async def generate(
        self, request: GenerationRequest, *, thinking_budget: int | None = None
    ) -> Generation:
        """Run one request on the engine and map its reply."""
        codec, request, payload = self._prepare(request, False, thinking_budget)
        out = await self._on_engine_loop(self._engine.async_generate(**payload))
        return codec.generation(out, request)

    def _prepare(
        self, request: GenerationRequest, stream: bool, thinking_budget: int | None
    ) -> tuple[_SGLangCodec, GenerationRequest, dict[str, Any]]:
        """Start the engine, fit ``request`` to its context and build the engine's payload."""
        self.start()
        codec = self._codec_()
        request = fit_to_sglang(
            request, self.context_length, model=self.model_name, max_tokens=self.max_tokens
        )
        return (
            codec,
            request,
            codec.payload(request, stream=stream, thinking_budget=thinking_budget),
        )

    async def _on_engine_loop(self, step: Any) -> Any:
        """Await ``step`` (a coroutine of the engine) on the engine's own loop, if it has one."""
        loop = self._loop
        if loop is None:
            return await step
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(step, loop))

    async def stream(
        self, request: GenerationRequest, *, thinking_budget: int | None = None
    ) -> AsyncIterator[GenerationChunk]:
        """Run one request, yielding text as the engine produces it."""
        codec, request, payload = self._prepare(request, True, thinking_budget)
        chunks = await self._on_engine_loop(self._engine.async_generate(**payload))
        assembler = _StreamAssembler(codec, request)
        finished = False
        try:
            while True:
                try:
                    out = await self._on_engine_loop(chunks.__anext__())
                except StopAsyncIteration:
                    break
                piece = assembler.feed(out)
                if piece is not None:
                    if piece.generation is not None:
                        finished = True
                    yield piece
                    if finished:
                        return
        finally:
            if not finished:  # the consumer stopped reading (a budget cut): stop the engine
                self._abort(payload["rid"])
        raise RuntimeUnavailableError(
            "the SGLang engine ended the stream before the request finished; see its log"
        )

    def _abort(self, rid: str) -> None:
        """Ask the engine to drop a request whose stream was closed early (best effort)."""
        manager = getattr(self._engine, "tokenizer_manager", None)
        abort = getattr(manager, "abort_request", None)
        if callable(abort):
            try:
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(abort, rid)
                else:
                    abort(rid)
            except Exception:  # an engine too old or already done with it: nothing to stop
                logger.debug("could not abort SGLang request %s", rid, exc_info=True)

    async def aclose(self) -> None:
        """Shut the engine down (its processes only) and free the GPUs."""
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is None:
            return
        pids = self._engine_pids
        await anyio.to_thread.run_sync(shutdown_engine_only, engine, pids)
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


# --------------------------------------------------------------------------------------------
# A running SGLang server


class RemoteSGLangRuntime(_CodecOwner, HTTPRuntimeBase):
    """Qwen3 on a running SGLang server (or its cache-aware router), via native ``/generate``.

    Sends ``{"input_ids", "sampling_params", "stream", "custom_logit_processor"?, "rid"?}``
    exactly like the embedded runtime, so prefix caching works the same; behind
    ``sglang_router`` the router's cache-aware policy keeps a conversation on the worker that
    holds its prefix. Requests are retried with backoff on 429/5xx and connection failures
    (:class:`~q3agent.serving._http.RetryPolicy`); the thinking-budget processor, and a
    ``custom_logit_processor`` with its ``custom_params`` (as for :class:`SGLangRuntime`), need
    a server started with ``--enable-custom-logit-processor``.

    ``tokenizer``: a :class:`Qwen3Tokenizer`, or a local model directory to load it from;
    default the offline build (all Qwen3 models share it). ``context_length`` overrides what
    the server reports (``/get_model_info``, else ``/v1/models``).

    ``max_tokens`` caps the completion tokens of every request, as for :class:`SGLangRuntime`.

    ``router=True`` says ``base_url`` is an ``sglang-router``: the router rebuilds
    ``/generate`` from a typed struct that has no ``structural_tag`` and no
    ``custom_params``, so tool-call constraints and the budget processor's parameters would be
    dropped silently. With ``constrained_url`` (one worker behind the router) requests that
    carry either go straight to that worker; without it the runtime warns once and sends them
    through the router anyway (the loop's own budget procedure still bounds the thinking).
    """

    _server_label = "SGLang server"

    def __init__(
        self,
        base_url: str,
        *,
        model_name: str = "qwen3 (remote SGLang)",
        tokenizer: Qwen3Tokenizer | str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        http: HTTPOptions | None = None,
        request_options: SGLangRequestOptions | None = None,
        engine_budget: bool = False,
        max_tokens: int | None = None,
        context_length: int | None = None,
        router: bool = False,
        constrained_url: str | None = None,
    ) -> None:
        self.max_tokens = check_max_tokens(max_tokens)
        """Most completion tokens per request (``None``: as each request asks)."""
        self.base_url = base_url.rstrip("/")
        self.router = router or constrained_url is not None
        self.constrained_url = constrained_url.rstrip("/") if constrained_url else None
        self._warned_router = False
        self._model_name = model_name
        super().__init__(
            api_key=api_key, http=http, tokenizer=tokenizer, context_length=context_length
        )
        self._context_sources = (
            ("/get_model_info", ("context_length", "max_context_length", "max_model_len")),
            ("/v1/models", ("max_model_len",)),
        )
        self._options = request_options or SGLangRequestOptions()
        self._engine_budget = engine_budget

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """As :class:`SGLangRuntime`; the in-engine budget needs ``engine_budget=True`` on a
        server started with ``--enable-custom-logit-processor --disable-overlap-schedule``, and
        behind a router without ``constrained_url`` it is off: the router drops
        ``custom_params``, so the budget procedure cuts and continues instead."""
        direct = not self.router or self.constrained_url is not None
        return RuntimeCapabilities(
            tool_call_constraint=True, engine_budget=self._engine_budget and direct
        )

    @property
    def model_name(self) -> str:
        """The name given at construction (the server decides which model runs)."""
        return self._model_name

    async def _fit(self, request: GenerationRequest) -> GenerationRequest:
        return fit_to_sglang(
            request,
            await self.fetch_context_length(),
            model=self.model_name,
            max_tokens=self.max_tokens,
        )

    def _generate_url(self, payload: Mapping[str, Any]) -> str:
        """Where ``payload`` goes: the router, or past it when the router would drop fields."""
        params = payload.get("sampling_params") or {}
        needs_worker = "structural_tag" in params or "custom_params" in params
        if not (self.router and needs_worker):
            return f"{self.base_url}/generate"
        if self.constrained_url is not None:
            return f"{self.constrained_url}/generate"
        if not self._warned_router:
            self._warned_router = True
            logger.warning(
                "sglang-router drops structural_tag and custom_params from /generate: this "
                "request's tool-call constraint / thinking-budget processor will not apply. "
                "Pass constrained_url=<a worker's URL> to send such requests past the router."
            )
        return f"{self.base_url}/generate"

    async def generate(
        self, request: GenerationRequest, *, thinking_budget: int | None = None
    ) -> Generation:
        """POST one request to ``/generate`` and map the reply."""
        codec = self._codec_()
        request = await self._fit(request)
        payload = codec.payload(request, stream=False, thinking_budget=thinking_budget)
        out = await self._caller.post_json(self._generate_url(payload), payload)
        if isinstance(out, list):  # a batch answer to a single prompt
            out = out[0]
        return codec.generation(out, request)

    async def stream(
        self, request: GenerationRequest, *, thinking_budget: int | None = None
    ) -> AsyncIterator[GenerationChunk]:
        """Stream one request from ``/generate`` (server-sent events)."""
        codec = self._codec_()
        request = await self._fit(request)
        payload = codec.payload(request, stream=True, thinking_budget=thinking_budget)
        assembler = _StreamAssembler(codec, request)
        async with self._caller.open_stream(self._generate_url(payload), payload) as events:
            async for out in events:
                piece = assembler.feed(out)
                if piece is not None:
                    yield piece
                    if piece.generation is not None:
                        return
        raise RuntimeUnavailableError(
            f"The SGLang server at {self.base_url} ended the stream before the request "
            "finished; check the server log."
        )
