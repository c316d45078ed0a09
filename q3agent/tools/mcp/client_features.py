"""What an MCP server may ask of q3agent's client: sampling, elicitation, roots and progress.

* **Sampling** (``sampling/createMessage``): the server asks the model for a completion. It is
  served by the agent's own runtime, after an approval callback says yes (``sampling=True``
  skips the question). Without ``sampling`` the capability is not advertised.
* **Elicitation** (``elicitation/create``): the server asks the user for input. An
  :data:`ElicitationCallback` answers; :func:`ask_on_terminal` is the one the CLI uses. Field
  defaults from the schema fill what the answer leaves out (SEP-1034).
* **Roots** (``roots/list``): the folders the user lets the server work in, as ``file://`` URIs.
* **Progress**: every tool call asks for ``notifications/progress``; the updates reach the run's
  stream as :class:`q3agent.events.ToolProgress` events.

Tasks (SEP-1686) are not offered: the MCP SDK's client has no API for them yet.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

if TYPE_CHECKING:
    import mcp_types
    from mcp.client.session import (
        ClientRequestContext,
        ElicitationFnT,
        ListRootsFnT,
        SamplingFnT,
    )

    from q3agent.serving.base import Runtime

__all__ = [
    "Elicitation",
    "ElicitationAnswer",
    "ElicitationCallback",
    "SamplingApproval",
    "SamplingRequest",
    "ask_on_terminal",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingRequest:
    """A server's request for a model completion, as the approval callback sees it."""

    server: str
    messages: Sequence[tuple[str, str]]
    """``(role, text)`` pairs."""
    system_prompt: str | None
    max_tokens: int


SamplingApproval = Callable[[SamplingRequest], Awaitable[bool] | bool]
"""Asked before each sampling request is sent to the runtime: ``True`` runs it."""


@dataclass(frozen=True)
class Elicitation:
    """A server's request for input from the user."""

    server: str
    message: str
    schema: dict[str, Any] = field(default_factory=dict)
    """JSON schema of the answer: an object of flat properties (string, number, boolean, enum)."""
    url: str | None = None
    """For URL-mode elicitation: the page the user should open instead of answering here."""


ElicitationAnswer = dict[str, Any] | Literal["decline", "cancel"]
"""A dict accepts with those values; ``"decline"`` says no; ``"cancel"`` dismisses."""

ElicitationCallback = Callable[[Elicitation], Awaitable[ElicitationAnswer] | ElicitationAnswer]
"""Answers an :class:`Elicitation`; may be sync (it then runs in a worker thread) or async."""


async def _maybe_await(fn: Callable[..., Any], *args: Any) -> Any:
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's method
    ):
        return await fn(*args)
    outcome = await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
    if inspect.isawaitable(outcome):
        return await outcome
    return outcome


def _text_of(content: Any) -> str:
    blocks = content if isinstance(content, list) else [content]
    parts = []
    for block in blocks:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind is not None:
            parts.append(f"[{kind} content; not readable by this model]")
    return "\n".join(parts)


def sampling_handler(
    server: str,
    runtime: Callable[[], Runtime | None],
    approve: SamplingApproval | None,
) -> SamplingFnT:
    """The SDK ``sampling_callback``: ask ``approve``, then run the request on ``runtime()``."""

    async def handle(
        context: ClientRequestContext, params: mcp_types.CreateMessageRequestParams
    ) -> mcp_types.CreateMessageResult | mcp_types.ErrorData:
        import mcp_types

        from q3agent.qwen3.messages import AssistantMessage, Message, SystemMessage, UserMessage
        from q3agent.qwen3.parsing import parse
        from q3agent.qwen3.prompt import PromptBuilder
        from q3agent.serving.base import GenerationRequest
        from q3agent.types import SamplingParams

        model = runtime()
        if model is None:
            return mcp_types.ErrorData(
                code=mcp_types.INVALID_REQUEST,
                message="sampling is enabled but no runtime is bound; open the server through "
                "an Agent run or pass sampling_runtime=",
            )
        pairs = [(m.role, _text_of(m.content)) for m in params.messages]
        request = SamplingRequest(server, pairs, params.system_prompt, params.max_tokens)
        if approve is not None and not await _maybe_await(approve, request):
            return mcp_types.ErrorData(code=-1, message="User rejected sampling request")
        messages: list[Message] = []
        if params.system_prompt:
            messages.append(SystemMessage(content=params.system_prompt))
        for role, text in pairs:
            if role == "assistant":
                messages.append(AssistantMessage(content=text))
            else:
                messages.append(UserMessage(content=text))
        ids = PromptBuilder(model.tokenizer, []).start(messages, enable_thinking=False)
        sampling = SamplingParams(
            max_tokens=max(1, params.max_tokens),
            stop=tuple(params.stop_sequences or ()),
        )
        if params.temperature is not None:
            sampling = sampling.with_(temperature=params.temperature)
        generation = await model.generate(
            GenerationRequest(
                prompt_ids=tuple(ids),
                sampling=sampling,
                messages=tuple(messages),
                enable_thinking=False,
            )
        )
        text = parse(generation.text).content
        stop: str = "maxTokens" if generation.finish_reason == "length" else "endTurn"
        return mcp_types.CreateMessageResult(
            role="assistant",
            content=mcp_types.TextContent(type="text", text=text),
            model=model.model_name,
            stop_reason=stop,
        )

    return handle


def _with_defaults(schema: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """The answer, with each property's schema ``default`` where the answer has none."""
    filled = dict(answer)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, Mapping) and "default" in prop:
            filled[name] = prop["default"]
    return filled


def elicitation_handler(server: str, callback: ElicitationCallback) -> ElicitationFnT:
    """The SDK ``elicitation_callback``: ask ``callback``, fill schema defaults into the answer."""

    async def handle(
        context: ClientRequestContext, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        import mcp_types

        schema = dict(getattr(params, "requested_schema", None) or {})
        url = getattr(params, "url", None)
        request = Elicitation(server, params.message, schema, url)
        try:
            answer = await _maybe_await(callback, request)
        except Exception as exc:
            logger.warning("elicitation callback for MCP server %r failed: %r", server, exc)
            return mcp_types.ElicitResult(action="cancel")
        if answer == "decline" or answer == "cancel":
            return mcp_types.ElicitResult(action=answer)
        if not isinstance(answer, Mapping):
            return mcp_types.ElicitResult(action="decline")
        content = _with_defaults(schema, answer) if url is None else None
        return mcp_types.ElicitResult(action="accept", content=content)

    return handle


def roots_handler(roots: Sequence[str | Path]) -> ListRootsFnT:
    """The SDK ``list_roots_callback``: the given folders as ``file://`` roots."""
    import mcp_types

    listed = mcp_types.ListRootsResult(
        roots=[
            mcp_types.Root(uri=Path(r).expanduser().resolve().as_uri(), name=Path(r).name)
            for r in roots
        ]
    )

    async def handle(context: ClientRequestContext) -> mcp_types.ListRootsResult:
        return listed

    return handle


def _convert(value: str, prop: Mapping[str, Any]) -> Any:
    kind = prop.get("type")
    if kind == "boolean":
        if value.lower() in ("y", "yes", "true", "1"):
            return True
        if value.lower() in ("n", "no", "false", "0"):
            return False
        raise ValueError("answer yes or no")
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    choices = prop.get("enum")
    if choices is None and isinstance(prop.get("oneOf"), list):
        choices = [c.get("const") for c in prop["oneOf"] if isinstance(c, Mapping)]
    if choices and value not in choices:
        raise ValueError("choose one of " + ", ".join(map(str, choices)))
    return value


def ask_on_terminal(request: Elicitation) -> ElicitationAnswer:
    """Ask the user on the terminal (stdin/stderr); the CLI's elicitation callback.

    Shows the server's message, asks for each field (Enter keeps the default or skips an
    optional field), then asks whether to send the answer.
    """
    import sys

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    say(f"\nMCP server {request.server!r} asks: {request.message}")
    if request.url is not None:
        say(f"  open this page to continue: {request.url}")
        reply = input("  done? [y/N] ").strip().lower()
        return {} if reply in ("y", "yes") else "decline"
    props: Mapping[str, Any] = request.schema.get("properties") or {}
    required = set(request.schema.get("required") or [])
    answer: dict[str, Any] = {}
    for name, prop in props.items():
        label = prop.get("title") or name
        hint = prop.get("description")
        default = prop.get("default")
        choices = prop.get("enum")
        extra = f" ({', '.join(map(str, choices))})" if choices else ""
        shown = f" [{default}]" if default is not None else ""
        while True:
            raw = input(f"  {label}{extra}{shown}{' — ' + hint if hint else ''}: ").strip()
            if not raw:
                if default is not None or name not in required:
                    break
                say("  this field is required")
                continue
            try:
                answer[name] = _convert(raw, prop)
                break
            except ValueError as exc:
                say(f"  {exc}")
    reply = input("  send this answer? [Y/n/cancel] ").strip().lower()
    if reply in ("cancel", "c"):
        return "cancel"
    if reply in ("n", "no"):
        return "decline"
    say(f"  sent: {json.dumps(_with_defaults(request.schema, answer), ensure_ascii=False)}")
    return answer
