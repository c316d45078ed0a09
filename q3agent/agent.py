"""The public entry point: ``Agent(model=...).run(task)``, async, streaming and sessions."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Literal

import anyio

from q3agent._sync import SyncPortal
from q3agent.closing import Closing
from q3agent.conversation import Conversation
from q3agent.events import Event, FinalResult
from q3agent.loop import LoopSettings, run_task
from q3agent.memory.context_window import NATIVE_CONTEXT, ContextWindow
from q3agent.memory.recorder import SessionRecorder
from q3agent.memory.sessions import Session, SessionStore, session_store
from q3agent.options import RunOptions
from q3agent.policy.base import Policy, ThinkingCapability
from q3agent.policy.builtin import PlanAct
from q3agent.qwen3.messages import AssistantMessage, Message, SystemMessage
from q3agent.qwen3.prompt import PromptBuilder
from q3agent.result import RunResult
from q3agent.serving.base import Runtime
from q3agent.telemetry import emit_run_spans
from q3agent.tools.base import Tool, Toolset, collect_tools, resolve_tools

ToolLike = Tool | Callable[..., Any]


def capability_for(model: str | None, runtime: Runtime | None = None) -> ThinkingCapability:
    """What the model can do, from the registry model (never from a server's own name).

    ``model=None`` with a runtime falls back to the runtime's name when the registry knows
    it, else hybrid; any other name the registry does not know is an error.
    """
    from q3agent.qwen3.models import UnknownModelError, find_model, get_model

    if model is None:
        try:  # find_model: an unknown runtime name costs no "did you mean" hint here
            spec = find_model(runtime.model_name) if runtime is not None else None
        except (OSError, ValueError):
            return "hybrid"
        return "hybrid" if spec is None else spec.thinking
    try:
        return get_model(model).thinking
    except UnknownModelError as exc:
        raise UnknownModelError(
            f"{exc} If it is a Qwen3 model under another name, pass the registry model it is "
            "as the model and the server's name as served_model (--served-model), or say "
            "what it can do with capability='hybrid'|'thinking_only'|'non_thinking' "
            "(--capability)."
        ) from None


def _with_shortcuts(options: RunOptions | None, **shortcuts: int | None) -> RunOptions:
    """``options`` (or the defaults) with the keyword shortcuts that were given applied."""
    base = options if options is not None else RunOptions()
    given = {name: value for name, value in shortcuts.items() if value is not None}
    if options is not None:
        for name, value in given.items():
            default = RunOptions.__dataclass_fields__[name].default
            current = getattr(options, name)
            if current != default and current != value:
                raise ValueError(
                    f"{name} is given twice: Agent({name}={value!r}) and "
                    f"RunOptions({name}={current!r}); pass it in one place"
                )
    return base.replace(**given) if given else base


DEFAULT_MAX_TOKENS = 16_384
"""Completion tokens per request unless ``max_tokens``, ``Q3AGENT_MAX_TOKENS`` or the runtime
says otherwise: room for the largest built-in thinking budget (8,192) and a long answer."""


class Agent:
    """A Qwen3 agent: a model, its tools, a thinking policy and the limits of a run.

    >>> agent = Agent("Qwen3-30B-A3B", tools=[get_weather])  # doctest: +SKIP
    >>> agent.run("What's the weather in Paris?").answer  # doctest: +SKIP

    ``model`` is the registry model (or a local model directory): it decides whether the model
    can think (hybrid, 2507 Instruct: never, 2507 Thinking: always) and its context; a name the
    registry does not know is an error unless ``capability`` says what the model can do. A
    server is sent the model's Hugging Face id unless ``Q3AGENT_SERVED_MODEL`` says otherwise.
    ``runtime`` defaults to the best one available for ``model`` (embedded SGLang on a GPU,
    else local transformers weights; see :func:`q3agent.serving.select_runtime`). Tools are
    plain functions (wrapped with :func:`q3agent.tools.tool`), :class:`Tool` objects, or
    toolsets such as MCP servers passed in ``mcp_servers``, which are opened for each run and
    closed after it. ``policy`` decides per step whether to think (default :class:`PlanAct`).
    ``max_tokens`` caps the completion tokens of each model request, thinking included (see
    :meth:`completion_limit`); an answer cut there ends the run with status ``truncated``.

    How a run behaves (steps, usage limits, tool errors and timeout, output cap, tool choice,
    parallel calls, approval, completion tokens) is one :class:`~q3agent.RunOptions` given as
    ``options``. The two most used of them, ``max_steps`` and ``max_tokens``, are also keyword
    shortcuts: ``Agent(max_steps=5)`` is ``Agent(options=RunOptions(max_steps=5))``. A shortcut
    given with ``options`` replaces that field of it, unless ``options`` sets the field to
    another value: that is an error.
    """

    def __init__(
        self,
        model: str | None = "Qwen3-30B-A3B",
        *,
        runtime: Runtime | None = None,
        tools: Iterable[ToolLike] = (),
        mcp_servers: Iterable[Toolset] = (),
        policy: Policy | None = None,
        system_prompt: str | None = None,
        options: RunOptions | None = None,
        max_steps: int | None = None,
        max_tokens: int | None = None,
        deps: Any = None,
        capability: ThinkingCapability | None = None,
        context_window: ContextWindow | Literal["auto"] | None = "auto",
    ) -> None:
        self.options: RunOptions = _with_shortcuts(
            options, max_steps=max_steps, max_tokens=max_tokens
        )
        """How each run behaves: limits, tool handling, approval."""
        self._portal = SyncPortal()
        """The event loop every sync call of this agent (and its sessions) runs on."""
        self.model = model
        self._runtime = runtime
        self.tools: dict[str, Tool] = resolve_tools(tools)
        self.mcp_servers: list[Toolset] = list(mcp_servers)
        self.policy: Policy = policy or PlanAct()
        self.system_prompt = system_prompt
        self.deps = deps
        self.context_window = context_window
        """Summarises older turns near the model's window; ``"auto"`` sizes it from the
        registry (32,768 tokens for Qwen3, 262,144 for the 2507 models), ``None`` turns it off."""
        self.capability: ThinkingCapability = capability or capability_for(model, runtime)
        self.options.check_tool_choice(list(self.tools))

    @property
    def max_steps(self) -> int:
        """Most model steps of a task (``options.max_steps``)."""
        return self.options.max_steps

    @property
    def max_tokens(self) -> int | None:
        """Completion-token cap per request; ``None``: see :meth:`completion_limit`."""
        return self.options.max_tokens

    def completion_limit(self, runtime: Runtime | None = None) -> int:
        """The most completion tokens one model request may produce (thinking included).

        ``Agent(max_tokens=N)`` (``RunOptions.max_tokens``) when given; else
        ``Q3AGENT_MAX_TOKENS`` when set; else the
        limit the runtime was built with (``--max-tokens`` of the CLI); else
        :data:`DEFAULT_MAX_TOKENS`, sized for interactive use (the built-in policies' largest
        thinking budget plus a long answer) rather than the 32,768 the Qwen3 model cards
        suggest for benchmark problems.
        """
        if self.max_tokens is not None:
            return self.max_tokens
        from q3agent.serving.settings import RuntimeSettings

        from_env = RuntimeSettings.from_env().max_tokens
        if from_env is not None:
            return from_env
        own = runtime.max_tokens if runtime is not None else None
        if own is not None and own >= 1:
            return own
        return DEFAULT_MAX_TOKENS

    @property
    def runtime(self) -> Runtime:
        """The runtime, chosen and created on first use when none was given."""
        if self._runtime is None:
            from q3agent.serving.select import runtime_for

            self._runtime = runtime_for("Agent", self.model)
        return self._runtime

    def session(
        self,
        history: Sequence[Message] = (),
        *,
        store: SessionStore | str | os.PathLike[str] | None = None,
        session_id: str | None = None,
        wait: bool | float = False,
        lease_ttl: float | None = None,
    ) -> AgentSession:
        """A conversation that keeps its history (and prompt ids) across tasks.

        With ``store`` (a :class:`~q3agent.memory.sessions.SessionStore`, a SQLite path, or a
        URL: ``sqlite:///sessions.db``, ``postgresql://…``) the conversation is persisted as
        it happens under ``session_id`` and reloaded when the same id is opened again;
        :meth:`AgentSession.resume` continues a task that was interrupted (even by
        ``kill -9``) without re-running the tool calls that had completed. The session is
        leased to this process until :meth:`AgentSession.close`: another worker opening it
        gets :class:`~q3agent.memory.sessions.SessionBusy`, or waits with ``wait=True`` (or
        up to ``wait`` seconds); a killed holder's lease lapses after ``lease_ttl`` seconds.
        """
        return AgentSession(
            self, history, store=store, session_id=session_id, wait=wait, lease_ttl=lease_ttl
        )

    def _window(self, runtime: Runtime) -> ContextWindow | None:
        if self.context_window != "auto":
            return self.context_window
        size = NATIVE_CONTEXT
        from q3agent.qwen3.models import UnknownModelError, get_model

        for name in (self.model, runtime.model_name):
            try:
                size = get_model(name).native_context if name else size
                break
            except (UnknownModelError, OSError, ValueError):
                continue
        served = runtime.context_length  # what the engine really allows
        if served is not None and 0 < served < size:
            size = served
        return ContextWindow(runtime.tokenizer, max_tokens=size)

    def run(self, task: str, *, thinking: bool | None = None) -> RunResult:
        """Run ``task`` to completion from synchronous code (any number of times).

        Every sync call of this agent runs on one event loop kept in a background thread, so
        a runtime's HTTP clients and engine stay usable from one call to the next.
        """
        return self._portal.call(
            lambda: self.arun(task, thinking=thinking), instead="await agent.arun(...)"
        )

    async def arun(self, task: str, *, thinking: bool | None = None) -> RunResult:
        """Run ``task`` to completion. ``thinking`` forces thinking on or off for every step."""
        return await self.session().arun(task, thinking=thinking)

    def stream(self, task: str, *, thinking: bool | None = None) -> AsyncIterator[Event]:
        """Run ``task``, yielding reasoning/content deltas, tool calls and results, steps."""
        return self.session().stream(task, thinking=thinking)

    async def aclose(self) -> None:
        """Release the runtime (MCP servers are closed after each run already)."""
        if self._runtime is not None:
            await self._runtime.aclose()

    def close(self) -> None:
        """Synchronous :meth:`aclose`: release the runtime, then stop the sync event loop."""
        self._portal.call(self.aclose, instead="await agent.aclose()")
        self._portal.close()


class AgentSession(Closing):
    """A multi-turn conversation with an :class:`Agent`: each task sees the earlier ones.

    The prompt stays append-only across tasks where Qwen3's template allows it (a new query
    after thinking turns forces a re-render; the step record says where the prefix changed).
    """

    def __init__(
        self,
        agent: Agent,
        history: Sequence[Message] = (),
        *,
        store: SessionStore | str | os.PathLike[str] | None = None,
        session_id: str | None = None,
        wait: bool | float = False,
        lease_ttl: float | None = None,
    ) -> None:
        self.agent = agent
        self.extra_tools: dict[str, Tool] = {}
        """Tools added to this session only (e.g. BFCL functions that appear at a turn)."""
        self._conversation: Conversation | None = None
        self._schemas: list[dict[str, Any]] = []
        self._history = list(history)
        self._recorder: SessionRecorder | None = None
        self.session_id = session_id or uuid.uuid4().hex
        self._saved: Session | None = None
        self._own_store: SessionStore | None = None
        if store is not None:
            sessions = session_store(store)
            if sessions is not store:
                self._own_store = sessions
            saved = self._saved = sessions.open(
                self.session_id, lease=True, wait=wait, lease_ttl=lease_ttl
            )
            state = saved.load()
            if state.messages:
                self._history = list(state.messages)
            elif self._history:
                saved.append_messages(self._history)
            self._recorder = SessionRecorder(saved, state.next_step)

    def close(self) -> None:
        """Release the persisted session's lease (and close a store opened from a path)."""
        if self._saved is not None:
            self._saved.close()
        if self._own_store is not None:
            self._own_store.close()

    @property
    def interrupted(self) -> bool:
        """Whether the last task ended without an answer (say, the process was killed)."""
        history = self.messages
        if not history:
            return False
        last = history[-1]
        return not isinstance(last, AssistantMessage) or bool(last.tool_calls)

    @property
    def messages(self) -> list[Message]:
        """The whole conversation so far."""
        if self._conversation is None:
            return list(self._history)
        return list(self._conversation.messages)

    def add_tools(self, tools: Iterable[ToolLike]) -> None:
        """Make more tools available from the next task on."""
        self.extra_tools.update(resolve_tools(tools))

    def run(self, task: str, *, thinking: bool | None = None) -> RunResult:
        """Synchronous :meth:`arun`."""
        return self.agent._portal.call(
            lambda: self.arun(task, thinking=thinking), instead="await session.arun(...)"
        )

    async def arun(self, task: str, *, thinking: bool | None = None) -> RunResult:
        """Run the next task of this conversation."""
        return await self._run(task, thinking=thinking)

    async def aresume(self, *, thinking: bool | None = None) -> RunResult:
        """Continue the interrupted task: finish its last step's tool calls, then go on.

        Calls whose results were recorded before the interruption are not run again.
        """
        if not self.interrupted:
            raise ValueError(
                "nothing to resume: this session's last task ended with an answer; "
                "call arun(task) for a new task"
            )
        return await self._run(None, thinking=thinking)

    def resume(self, *, thinking: bool | None = None) -> RunResult:
        """Synchronous :meth:`aresume`."""
        return self.agent._portal.call(
            lambda: self.aresume(thinking=thinking), instead="await session.aresume()"
        )

    async def _run(self, task: str | None, *, thinking: bool | None) -> RunResult:
        final: RunResult | None = None
        stream = self._events(task, thinking=thinking, stream=False)
        try:
            async for event in stream:
                if isinstance(event, FinalResult):
                    final = event.result
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        assert final is not None  # run_task always ends with FinalResult
        return final

    def stream(self, task: str, *, thinking: bool | None = None) -> AsyncIterator[Event]:
        """Run the next task, yielding its events; the last one is :class:`FinalResult`."""
        return self._events(task, thinking=thinking, stream=True)

    async def _events(
        self, task: str | None, *, thinking: bool | None, stream: bool
    ) -> AsyncGenerator[Event, None]:
        agent = self.agent
        runtime = agent.runtime
        async with contextlib.AsyncExitStack() as servers:
            from q3agent.tools.mcp.toolset import open_toolsets

            missing = await open_toolsets(servers, agent.mcp_servers, runtime=runtime)
            if missing and task is not None:
                task += "\n\n(Note: " + "; ".join(missing) + ".)"
            tools = await collect_tools(
                [*agent.tools.values(), *agent.mcp_servers, *self.extra_tools.values()]
            )
            schemas = [t.schema() for t in tools.values()]
            conversation = self._conversation
            if conversation is None:
                history: list[Message] = list(self._history)
                if agent.system_prompt and not any(m.role == "system" for m in history):
                    history.insert(0, SystemMessage(content=agent.system_prompt))
                    if self._recorder is not None:
                        self._recorder.replace(history)
                await runtime.fetch_context_length()  # a server asks once, before sizing
                builder = PromptBuilder(runtime.tokenizer, schemas)
                conversation = self._conversation = Conversation(
                    builder,
                    history,
                    recorder=self._recorder,
                    context=agent._window(runtime),
                )
            elif schemas != self._schemas:
                conversation.set_tools(runtime.tokenizer, schemas)
            self._schemas = schemas
            settings = LoopSettings(
                runtime=runtime,
                policy=agent.policy,
                tools=tools,
                capability=agent.capability,
                deps=agent.deps,
                options=agent.options.replace(max_tokens=agent.completion_limit(runtime)),
            )
            events = run_task(settings, conversation, task, stream=stream, thinking=thinking)
            try:
                async for event in events:
                    if isinstance(event, FinalResult):
                        emit_run_spans(event.result, model=runtime.model_name)
                    yield event
            finally:
                with anyio.CancelScope(shield=True):
                    await events.aclose()
