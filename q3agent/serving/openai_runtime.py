"""Qwen3 behind any OpenAI-compatible server (vLLM, SGLang, llama.cpp, hosted APIs).

Two modes:

* **completions** (default): ``POST /v1/completions`` with the prompt we built. With
  ``prompt_format="ids"`` the prompt goes as a list of token ids (the OpenAI spec allows it;
  vLLM and SGLang accept it), so the server runs exactly our tokens and prefix caching works
  across steps. ``prompt_format="text"`` sends the trusted decoding instead, for servers that
  take only strings. **Injection caveat**: the server re-tokenizes that text and turns any
  special-token string in it (``<|im_start|>``, ``<tool_call>``) into the control token, also
  where the string came from a web page or a tool result. Prefer ``"ids"`` wherever the
  server accepts it. A :class:`ToolCallConstraint` travels as vLLM's ``structured_outputs``
  (a structural tag).
* **chat** (``chat=True``): ``POST /v1/chat/completions`` with ``request.messages`` and
  ``request.tools``, for servers that must render the template themselves. A thinking-budget
  continuation sends the partial assistant turn with ``continue_final_message=true,
  add_generation_prompt=false``; a :class:`ToolCallConstraint` becomes ``tool_choice``.

Either way the completion's ids come from the server (``return_token_ids``) and its text is
our own decoding of them (:func:`~q3agent.serving.base.completion_text`): servers drop a
matched stop id's text (vLLM's detokenizer does for ``</think>``), and their reasoning/tool
parsers reshape chat replies. A server that returns no ids gets its text re-encoded as
*untrusted* (special-token strings stay plain text) and the generation is marked
``ids_exact=False``, so an echoed ``<|im_start|>`` never becomes a control token; chat
replies are then reassembled into Qwen3 text (``<think>\\n…\\n</think>\\n\\n`` + content +
``<tool_call>`` blocks) first.

``max_tokens`` is clamped to what the context leaves after the prompt
(:func:`~q3agent.serving.base.fit_to_context`); the context is ``context_length`` or the
server's ``/v1/models`` ``max_model_len``. ``extra_body`` is merged into every request body
(vendor parameters such as ``{"chat_template_kwargs": ...}`` or ``{"priority": 1}``).

Requests retry with exponential backoff and jitter on 429/5xx and connection failures,
honouring ``Retry-After`` (:class:`~q3agent.serving._http.RetryPolicy`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from q3agent.qwen3.thinking import count_reasoning_tokens, reasoning_mode
from q3agent.serving._http import (
    HTTPOptions,
    HTTPRuntimeBase,
    RuntimeHTTPError,
)
from q3agent.serving.base import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    RuntimeCapabilities,
    RuntimeUnavailableError,
    ToolCallConstraint,
    check_max_tokens,
    completion_text,
    fit_to_context,
    stop_ids_for,
)
from q3agent.serving.engine_budget import budget_params
from q3agent.serving.sglang_runtime import tool_call_tag_json
from q3agent.types import FinishReason, Usage

if TYPE_CHECKING:
    from q3agent.qwen3.messages import Message
    from q3agent.qwen3.tokenizer import Qwen3Tokenizer

logger = logging.getLogger("q3agent.serving.openai")

PromptFormat = Literal["ids", "text"]


def message_to_openai(message: Message) -> dict[str, Any]:
    """One typed message as an OpenAI chat message dict."""
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.reasoning_content:
            out["reasoning_content"] = message.reasoning_content
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json()},
                }
                for call in message.tool_calls
            ]
        return out
    if message.role == "tool":
        tool: dict[str, Any] = {"role": "tool", "content": message.content}
        if message.tool_call_id is not None:
            tool["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            tool["name"] = message.name
        return tool
    return {"role": message.role, "content": message.content}


def _arguments_text(raw: Any) -> str:
    """Arguments as the Qwen3 template renders them (``tojson``), raw text when not JSON."""
    if isinstance(raw, str):
        try:
            return json.dumps(json.loads(raw), ensure_ascii=False)
        except json.JSONDecodeError:
            return raw  # model misbehaviour: our parser reports it to the model
    return json.dumps(raw, ensure_ascii=False)


def qwen3_completion_text(
    reasoning: str | None,
    content: str,
    tool_calls: Sequence[Mapping[str, Any]],
    *,
    reasoning_closed: bool = True,
) -> str:
    """Reassemble a chat reply into the text a Qwen3 model writes for it.

    The layout is the official template's for an assistant turn: ``<think>\\n`` reasoning
    ``\\n</think>\\n\\n`` when there is reasoning, then the content, then one
    ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` block per call, separated
    by newlines. ``reasoning_closed=False`` (the reply was cut inside its reasoning) leaves the
    think block open.
    """
    text = ""
    if reasoning is not None and not reasoning_closed and not content and not tool_calls:
        return f"<think>\n{reasoning.lstrip(chr(10))}"
    if reasoning is not None:
        text = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n"
        content = content.lstrip("\n")
    text += content
    for index, call in enumerate(tool_calls):
        function = call.get("function", call)
        if (index == 0 and content) or index > 0:
            text += "\n"
        name = function.get("name", "")
        args = _arguments_text(function.get("arguments", {}))
        text += f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'
    return text


def _finish_reason(raw: Any) -> FinishReason:
    if raw == "length":
        return "length"
    if raw in ("abort", "cancelled", "content_filter"):
        return "abort"
    return "stop"


class OpenAICompatibleRuntime(HTTPRuntimeBase):
    """A Qwen3 model served by an OpenAI-compatible HTTP server.

    ``model`` is the served model name the server expects in requests. ``tokenizer`` is a
    :class:`Qwen3Tokenizer` or a local model directory (default: the offline build, which all
    Qwen3 models share). ``extended_sampling`` sends the vLLM/SGLang extensions ``top_k``,
    ``min_p``, ``repetition_penalty``, ``stop_token_ids``, ``skip_special_tokens=False`` and
    ``return_token_ids``, and ``structured_outputs`` for tool-call constraints in completions
    mode; turn it off for servers that reject unknown fields. ``extra_body`` is merged into
    every request. ``context_length`` overrides the server's ``max_model_len``.
    ``engine_budget=True`` says the server runs q3agent's thinking-budget logits processor
    (``--logits-processors q3agent.serving.engine_budget:VLLMThinkingBudget``): a budgeted
    step sends its budget in ``vllm_xargs`` and the server forces the early-stop text, so a
    budget hit stays one request (:mod:`q3agent.serving.engine_budget`). ``max_tokens`` caps
    the completion tokens of every request (an :class:`~q3agent.Agent` on this runtime uses it
    as its own limit unless given ``max_tokens``).
    """

    _server_label = "OpenAI-compatible server"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        tokenizer: Qwen3Tokenizer | str | os.PathLike[str] | None = None,
        chat: bool = False,
        prompt_format: PromptFormat = "ids",
        extended_sampling: bool = True,
        http: HTTPOptions | None = None,
        extra_body: Mapping[str, Any] | None = None,
        context_length: int | None = None,
        engine_budget: bool = False,
        max_tokens: int | None = None,
    ) -> None:
        self.max_tokens = check_max_tokens(max_tokens)
        """Most completion tokens per request (``None``: as each request asks)."""
        if prompt_format not in ("ids", "text"):
            raise ValueError(f"prompt_format must be 'ids' or 'text', got {prompt_format!r}")
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else f"{base}/v1"
        self.model = model
        self.chat = chat
        self.prompt_format: PromptFormat = prompt_format
        self.extended_sampling = extended_sampling
        self.extra_body = dict(extra_body or {})
        super().__init__(
            api_key=api_key, http=http, tokenizer=tokenizer, context_length=context_length
        )
        self._context_sources = (("/models", ("max_model_len",)),)
        self._served_model = model
        self._warned: set[str] = set()
        self._engine_budget = engine_budget

    @property
    def capabilities(self) -> RuntimeCapabilities:
        """Token ids unless the server is spoken to in chat or text form; tool-call constraints
        in chat mode (``tool_choice``) or with ``extended_sampling`` (``structured_outputs``);
        the in-engine thinking budget when
        the server runs q3agent's logits processor (the ``engine_budget`` argument: a vLLM server
        started with ``--logits-processors q3agent.serving.engine_budget:VLLMThinkingBudget``)."""
        return RuntimeCapabilities(
            token_ids=not self.chat and self.prompt_format == "ids",
            tool_call_constraint=self.chat or self.extended_sampling,
            engine_budget=self._engine_budget,
        )

    def _finish_body(
        self, body: dict[str, Any], request: GenerationRequest, *, stream: bool
    ) -> dict[str, Any]:
        """Add what both endpoints' bodies end with: streaming, ``extra_body``, the budget."""
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        if self._engine_budget and request.engine_budget is not None:
            extra = dict(body.get("vllm_xargs") or {})
            extra.update(budget_params(request.engine_budget, self.tokenizer))
            body["vllm_xargs"] = extra
        return body

    @property
    def model_name(self) -> str:
        """The served model name."""
        return self.model

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # ---------------------------------------------------------------- request building

    def _sampling(self, request: GenerationRequest) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "presence_penalty": s.presence_penalty,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if s.seed is not None:
            body["seed"] = s.seed
        if self.extended_sampling:
            body["top_k"] = s.top_k
            body["min_p"] = s.min_p
            body["repetition_penalty"] = s.repetition_penalty
            body["stop_token_ids"] = list(
                dict.fromkeys(stop_ids_for(self.tokenizer, s.stop_token_ids))
            )
            body["skip_special_tokens"] = False
            body["spaces_between_special_tokens"] = False
        return body

    def completion_body(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON body of the ``/v1/completions`` request for ``request``."""
        body = self._sampling(request)
        if self.prompt_format == "ids":
            body["prompt"] = list(request.prompt_ids)
        else:
            body["prompt"] = self.tokenizer.decode(list(request.prompt_ids))
        if self.extended_sampling:
            body["return_token_ids"] = True
        if isinstance(request.constraint, ToolCallConstraint):
            if self.extended_sampling:
                mode = reasoning_mode(request.prompt_ids, self.tokenizer, request.enable_thinking)
                body["structured_outputs"] = {
                    "structural_tag": tool_call_tag_json(request.constraint, mode)
                }
            else:
                self._warn_once(
                    "constraint",
                    "tool-call constraints need vLLM's structured_outputs, which "
                    "extended_sampling=False does not send; use chat=True for tool_choice",
                )
        return self._finish_body(body, request, stream=stream)

    def chat_body(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON body of the ``/v1/chat/completions`` request for ``request``."""
        if not request.messages:
            raise ValueError(
                "chat mode needs request.messages; the agent loop fills them, a hand-built "
                "GenerationRequest must carry them (or use chat=False)"
            )
        body = self._sampling(request)
        body["messages"] = [message_to_openai(m) for m in request.messages]
        tools = list(request.tools)
        if isinstance(request.constraint, ToolCallConstraint):
            tools = tools or list(request.constraint.tools)
            body["tool_choice"] = "required" if request.constraint.required else "auto"
        if tools:
            body["tools"] = tools
        if request.enable_thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": request.enable_thinking}
        partial = self._partial_assistant_turn(request.prompt_ids)
        if partial is not None:
            # a budget continuation: the server renders the partial turn without closing it
            body["messages"].append({"role": "assistant", "content": partial})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if self.extended_sampling:
            body["return_token_ids"] = True
        return self._finish_body(body, request, stream=stream)

    def _partial_assistant_turn(self, prompt_ids: Sequence[int]) -> str | None:
        """The text of an assistant turn the prompt ends inside (a continuation), else None.

        The generation prompt itself (empty, the non-thinking empty think block, or the
        ``<think>\\n`` a Thinking-2507 template opens) is not a partial turn.
        """
        tok = self.tokenizer
        tail: list[int] = []
        for tid in reversed(prompt_ids):
            if tid == tok.im_start_id:
                break
            tail.append(tid)
        tail.reverse()
        header = tok.encode_trusted("assistant\n")
        if tail[: len(header)] != header:
            return None
        rest = tail[len(header) :]
        openers: tuple[list[int], ...] = (
            [],
            tok.encode_trusted("<think>\n\n</think>\n\n"),
            tok.encode_trusted("<think>\n"),
        )
        return None if rest in openers else tok.decode(rest)

    # ---------------------------------------------------------------- replies

    def _usage(self, raw: Mapping[str, Any] | None, prompt: Sequence[int], ids: list[int]) -> Usage:
        """Usage from the server's figures; reasoning tokens counted on ``ids`` (control ids)."""
        raw = raw or {}
        details = raw.get("prompt_tokens_details") or {}
        return Usage(
            prompt_tokens=int(raw.get("prompt_tokens", len(prompt))),
            completion_tokens=int(raw.get("completion_tokens", len(ids))),
            cached_tokens=int(details.get("cached_tokens") or 0),
            reasoning_tokens=count_reasoning_tokens(
                ids,
                self.tokenizer,
                prompt_open=reasoning_mode(prompt, self.tokenizer, None) == "open",
            ),
            requests=1,
        )

    def _generation(
        self,
        request: GenerationRequest,
        server_ids: Any,
        fallback_text: Callable[[], str],
        finish_raw: Any,
        matched_raw: Any,
        usage: Any,
    ) -> Generation:
        """Map a reply: the server's ids (decoded by us), else its text re-encoded untrusted.

        ``matched_raw`` is vLLM's ``stop_reason`` / SGLang's ``matched_stop``: an id, a stop
        string, or None for EOS. Only an EOS stop ends the turn with ``<|im_end|>``; a stop on
        ``</think>`` (``stop_reason=151668``) keeps that id instead.
        """
        tok = self.tokenizer
        finish = _finish_reason(finish_raw)
        usable = isinstance(matched_raw, str | int) and not isinstance(matched_raw, bool)
        matched: str | int | None = matched_raw if usable and matched_raw != "" else None
        if finish != "stop":
            matched = None
        exact = isinstance(server_ids, list)
        if exact:
            ids = [int(t) for t in server_ids]
        else:
            self._warn_once(
                "no-ids",
                f"the server at {self.base_url} returned no token ids (return_token_ids); its "
                "text is re-encoded as untrusted (special-token strings stay plain text). Use a "
                "server that returns ids (vLLM) or chat=True with its tool/reasoning parsers",
            )
            ids = tok.encode(fallback_text())
        if finish == "stop" and not isinstance(matched, str):
            if matched is None:  # an EOS stop: the id the turn ended with
                ends = bool(ids) and ids[-1] in (tok.im_end_id, tok.eos_id)
                matched = ids[-1] if exact and ends else tok.im_end_id
            if not ids or ids[-1] != matched:
                ids.append(matched)
        text = completion_text(tok, ids, matched) if exact else fallback_text()
        # untrusted ids carry no control ids: count reasoning on the text's structure instead
        counted = ids if exact else tok.encode_trusted(text)
        return Generation(
            text=text,
            token_ids=tuple(ids),
            finish_reason=finish,
            usage=self._usage(usage, request.prompt_ids, counted),
            matched_stop=matched,
            ids_exact=exact,
        )

    def _chat_fallback(
        self,
        reasoning: str | None,
        content: str,
        tool_calls: Sequence[Mapping[str, Any]],
        finish_raw: Any,
    ) -> Callable[[], str]:
        def text() -> str:
            return qwen3_completion_text(
                reasoning, content, tool_calls, reasoning_closed=finish_raw != "length"
            )

        return text

    # ---------------------------------------------------------------- protocol

    async def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        try:
            return await self._caller.post_json(f"{self.base_url}{path}", body)
        except RuntimeHTTPError as exc:
            raise self._explain(exc) from exc

    def _explain(self, exc: RuntimeHTTPError) -> RuntimeHTTPError:
        if exc.status_code in (400, 422) and not self.chat and self.prompt_format == "ids":
            return RuntimeHTTPError(
                f"{exc} If this server does not take token-id prompts, use "
                "prompt_format='text' (mind the injection caveat in its docs).",
                status_code=exc.status_code,
                body=exc.body,
            )
        return exc

    async def _fit(self, request: GenerationRequest) -> GenerationRequest:
        return fit_to_context(
            request,
            await self.fetch_context_length(),
            model=self.model,
            max_tokens=self.max_tokens,
        )

    async def generate(self, request: GenerationRequest) -> Generation:
        """Run one request to completion."""
        request = await self._fit(request)
        if self.chat:
            out = await self._post("/chat/completions", self.chat_body(request, stream=False))
            choice = _first_choice(out)
            message = choice.get("message") or {}
            reasoning = message.get("reasoning_content", message.get("reasoning"))
            return self._generation(
                request,
                choice.get("token_ids"),
                self._chat_fallback(
                    reasoning if isinstance(reasoning, str) else None,
                    str(message.get("content") or ""),
                    message.get("tool_calls") or [],
                    choice.get("finish_reason"),
                ),
                choice.get("finish_reason"),
                choice.get("stop_reason", choice.get("matched_stop")),
                out.get("usage"),
            )
        out = await self._post("/completions", self.completion_body(request, stream=False))
        choice = _first_choice(out)
        text = str(choice.get("text") or "")
        return self._generation(
            request,
            choice.get("token_ids"),
            lambda: text,
            choice.get("finish_reason"),
            choice.get("stop_reason", choice.get("matched_stop")),
            out.get("usage"),
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Run one request, yielding text as the server streams it.

        With ids in the stream (``return_token_ids``) the text is decoded from them, so the
        chunks concatenate to the final ``generation.text``; otherwise the server's deltas
        are passed on.
        """
        request = await self._fit(request)
        path = "/chat/completions" if self.chat else "/completions"
        body = (
            self.chat_body(request, stream=True)
            if self.chat
            else self.completion_body(request, stream=True)
        )
        state = _StreamState(self.tokenizer)
        try:
            async with self._caller.open_stream(f"{self.base_url}{path}", body) as events:
                async for event in events:
                    piece, ids = state.feed(event, chat=self.chat)
                    if piece or ids:
                        yield GenerationChunk(
                            text=piece, token_ids=ids, cached_tokens=state.cached_tokens()
                        )
        except RuntimeHTTPError as exc:
            raise self._explain(exc) from exc
        if state.finish is None:
            raise RuntimeUnavailableError(
                f"The server at {self.base_url} ended the stream without a finish reason; "
                "check its log."
            )
        content = state.content
        fallback = (
            self._chat_fallback(
                state.reasoning if state.saw_reasoning else None,
                content,
                state.calls(),
                state.finish,
            )
            if self.chat
            else (lambda: content)
        )
        generation = self._generation(
            request,
            state.token_ids if state.saw_ids else None,
            fallback,
            state.finish,
            state.matched,
            state.usage,
        )
        emitted = state.emitted
        tail = generation.text[len(emitted) :] if generation.text.startswith(emitted) else ""
        yield GenerationChunk(text=tail, generation=generation)


def _first_choice(out: Any) -> Mapping[str, Any]:
    choices = out.get("choices") if isinstance(out, Mapping) else None
    if not choices:
        raise RuntimeHTTPError(
            f"The server's reply has no choices: {str(out)[:300]!r}",
            status_code=200,
            body=json.dumps(out) if out is not None else "",
        )
    first: Mapping[str, Any] = choices[0]
    return first


class _StreamState:
    """Accumulates an OpenAI SSE stream (completions or chat) into reply fields.

    Text shown while streaming is decoded from the streamed ids when the server sends them
    (a final ``<|im_end|>``/``<|endoftext|>`` is not shown), else taken from the deltas.
    """

    def __init__(self, tokenizer: Qwen3Tokenizer) -> None:
        self.content = ""
        self.reasoning = ""
        self.saw_reasoning = False
        self.closed_reasoning = False
        self.emitted = ""
        self.finish: Any = None
        self.matched: Any = None
        self.usage: Any = None
        self.token_ids: list[int] = []
        self.saw_ids = False
        self._end_ids = (tokenizer.im_end_id, tokenizer.eos_id)
        self._decoder = tokenizer.decoder()
        self._calls: dict[int, dict[str, Any]] = {}

    def calls(self) -> list[dict[str, Any]]:
        return [self._calls[i] for i in sorted(self._calls)]

    def cached_tokens(self) -> int | None:
        """Cached prompt tokens from a usage seen before the end (servers that send it per
        chunk; vLLM's per-chunk usage has no details, so a cut vLLM stream reports none)."""
        details = (self.usage or {}).get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens")
        return cached if isinstance(cached, int) else None

    def feed(self, event: Mapping[str, Any], *, chat: bool) -> tuple[str, tuple[int, ...]]:
        """Take one event; return the text to show and the ids it carried."""
        if event.get("usage"):
            self.usage = event["usage"]
        piece = ""
        carried: list[int] = []
        for choice in event.get("choices") or []:
            if choice.get("finish_reason") is not None:
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason", choice.get("matched_stop"))
            delta_text = self._accumulate(choice, chat=chat)
            ids = choice.get("token_ids")
            if isinstance(ids, list):
                self.saw_ids = True
                fresh = [int(t) for t in ids]
                self.token_ids.extend(fresh)
                carried += fresh
                piece += self._decoder.push([t for t in fresh if t not in self._end_ids])
            elif not self.saw_ids:
                piece += delta_text
        self.emitted += piece
        return piece, tuple(carried)

    def _accumulate(self, choice: Mapping[str, Any], *, chat: bool) -> str:
        """Record the choice's text fields; return them as Qwen3 text (the no-ids fallback)."""
        if not chat:
            text = str(choice.get("text") or "")
            self.content += text
            return text
        piece = ""
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content", delta.get("reasoning"))
        if isinstance(reasoning, str) and reasoning:
            if not self.saw_reasoning:
                piece += "<think>\n"
            self.saw_reasoning = True
            self.reasoning += reasoning
            piece += reasoning
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self.saw_reasoning and not self.closed_reasoning:
                self.closed_reasoning = True
                piece += "\n</think>\n\n"
            self.content += content
            piece += content
        for call in delta.get("tool_calls") or []:
            slot = self._calls.setdefault(
                int(call.get("index", len(self._calls))),
                {"function": {"name": "", "arguments": ""}},
            )
            function = call.get("function") or {}
            if function.get("name"):
                slot["function"]["name"] += function["name"]
            if function.get("arguments"):
                slot["function"]["arguments"] += function["arguments"]
        return piece
