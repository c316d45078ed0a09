"""Building ``serve-mcp``'s served agent from its flags: ``--agent`` or the default agent.

:func:`make_served_agent` turns the command's options into a
:class:`~q3agent.mcp_server.ServedAgent`: the agent (an ``--agent MODULE:FACTORY`` or one made
from ``--model``, the runtime, ``--mcp-config`` and ``--system``), the RAG store behind
``rag_search``/``rag_ingest`` and, with ``--research``, the research agent. The server itself
is :mod:`q3agent.mcp_server`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from q3agent.mcp_server import DEFAULT_MAX_TASK_TOKENS, ReadPolicy, ServeConfigError, ServedAgent

if TYPE_CHECKING:
    from q3agent.agent import Agent
    from q3agent.options import RunOptions
    from q3agent.policy.base import ThinkingCapability
    from q3agent.serving.base import Runtime

__all__ = ["AgentFactory", "load_agent_factory", "make_served_agent", "read_script"]

AgentFactory = Callable[[], "Agent | Awaitable[Agent]"]
"""What ``--agent MODULE:FACTORY`` names: a function returning an Agent (or awaitable one)."""


def load_agent_factory(spec: str) -> AgentFactory:
    """``module:attribute`` → a callable returning an :class:`Agent` (or an Agent itself)."""
    from q3agent.agent import Agent

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ServeConfigError(
            f"--agent {spec!r} must look like 'package.module:factory' (a function that returns "
            "an Agent, or an Agent object)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ServeConfigError(
            f"--agent: cannot import {module_name!r} ({exc}); run from the directory that "
            "contains it or install it"
        ) from exc
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ServeConfigError(f"--agent: {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, Agent):
        agent = target

        def same() -> Agent:
            return agent

        return same
    if not callable(target):
        raise ServeConfigError(f"--agent: {spec} is neither an Agent nor a callable")
    return target  # type: ignore[no-any-return]


def read_script(path: str) -> list[str]:
    """Completions for ``--runtime-script`` (see ``testing.load_completions``)."""
    from q3agent.testing.runtimes import ScriptFileError, load_completions

    try:
        return load_completions(path)
    except ScriptFileError as exc:
        raise ServeConfigError(f"--runtime-script: {exc}") from None


def scripted_runtime(path: str) -> Runtime:
    """The runtime of ``--runtime-script``: it answers with the file's completions in order."""
    from q3agent.testing.runtimes import ScriptedRuntime

    return ScriptedRuntime(read_script(path))


async def make_served_agent(
    *,
    agent_spec: str | None = None,
    model: str | None = None,
    runtime: Runtime | None = None,
    capability: ThinkingCapability | None = None,
    mcp_config: str | None = None,
    system_prompt: str | None = None,
    options: RunOptions | None = None,
    read_policy: ReadPolicy | None = None,
    rag_store: str | None = None,
    rag_url: str | None = None,
    research: bool = False,
    max_task_tokens: int = DEFAULT_MAX_TASK_TOKENS,
) -> ServedAgent:
    """Build the served agent from ``serve-mcp``'s options (see ``q3agent serve-mcp --help``).

    With ``agent_spec`` (``--agent``) that factory's agent is served; otherwise a default agent
    on ``model`` with ``runtime`` (built by the CLI from its runtime flags, or the scripted one;
    without one it is chosen on the first call), ``capability``, the MCP servers of
    ``mcp_config``, ``system_prompt`` and ``options``. ``read_policy`` is what ``rag_ingest``
    may read; ``rag_store``/``rag_url`` open the store behind ``rag_*``; ``research`` adds a
    research agent that shares the runtime.
    """
    if agent_spec is not None:
        agent = await _agent_from_factory(agent_spec)
    else:
        agent = _default_agent(model, runtime, capability, mcp_config, system_prompt, options)
    served = ServedAgent(
        agent, read_policy=read_policy or ReadPolicy(), max_task_tokens=max_task_tokens
    )
    if rag_store is not None or rag_url is not None:
        _open_store(served, rag_store, rag_url)
    if research:
        _add_research(served)
    return served


async def _agent_from_factory(spec: str) -> Agent:
    """The agent ``--agent MODULE:FACTORY`` makes (the factory may be async)."""
    from q3agent.agent import Agent

    made = load_agent_factory(spec)()
    agent = await made if inspect.isawaitable(made) else made
    if not isinstance(agent, Agent):
        raise ServeConfigError(f"--agent {spec} returned {agent!r}, not an Agent")
    return agent


def _default_agent(
    model: str | None,
    runtime: Runtime | None,
    capability: ThinkingCapability | None,
    mcp_config: str | None,
    system_prompt: str | None,
    options: RunOptions | None,
) -> Agent:
    """The agent served without ``--agent``: the model, its runtime and ``--mcp-config``."""
    from q3agent.agent import Agent

    servers: Sequence[Any] = ()
    if mcp_config is not None:
        from q3agent.tools.mcp import load_mcp_config

        servers = load_mcp_config(mcp_config)
    return Agent(
        model or "Qwen3-30B-A3B",
        runtime=runtime,
        capability=capability,
        mcp_servers=servers,
        system_prompt=system_prompt,
        options=options,
    )


def _open_store(served: ServedAgent, rag_store: str | None, rag_url: str | None) -> None:
    """Open the RAG store (a folder or a Chroma server) behind ``rag_search``/``rag_ingest``."""
    from q3agent.rag import Ingestor, RagStore, Retriever

    store = RagStore.open(rag_store, url=rag_url)
    served.retriever = Retriever(store)
    served.ingestor = Ingestor(store)
    served.closers.append(store.close)


def _add_research(served: ServedAgent) -> None:
    """The research agent behind ``research``, on the served agent's runtime and tools."""
    from q3agent.research.pipeline import ResearchAgent
    from q3agent.serving.base import RuntimeUnavailableError

    agent = served.agent
    try:  # the same runtime object: one model in memory serves both tools
        shared = agent.runtime
    except RuntimeUnavailableError:  # no model here: each research call says why
        shared = None
    served.research = ResearchAgent(
        agent.model,
        runtime=shared,
        retriever=served.retriever,
        mcp_servers=agent.mcp_servers,
    )
