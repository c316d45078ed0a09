"""``serve-mcp``'s served agent built from its flags (q3agent.cli.served_agent), in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from q3agent import Agent
from q3agent.cli.served_agent import load_agent_factory, make_served_agent
from q3agent.mcp_server import ReadPolicy, ServeConfigError, build_mcp_server
from q3agent.options import RunOptions
from q3agent.testing.runtimes import ScriptedRuntime

pytestmark = pytest.mark.anyio


async def test_the_default_agent_takes_the_run_options_and_the_read_grant(tmp_path: Path) -> None:
    folder = tmp_path.resolve()  # noqa: ASYNC240 - a test's own temporary folder
    served = await make_served_agent(
        model="Qwen3-4B",
        runtime=ScriptedRuntime(["Hello."]),
        system_prompt="Be brief.",
        options=RunOptions(max_steps=3),
        read_policy=ReadPolicy.of([tmp_path]),
        max_task_tokens=100,
    )
    assert served.agent.model == "Qwen3-4B"
    assert served.agent.max_steps == 3
    assert served.agent.system_prompt == "Be brief."
    assert served.read_policy.folders == (folder,)
    assert served.max_task_tokens == 100
    assert served.retriever is None and served.ingestor is None and served.research is None
    assert (await served.agent.arun("Hi")).answer == "Hello."


async def test_agent_spec_serves_the_factorys_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "served_here.py").write_text(
        "from q3agent import Agent\n"
        "from q3agent.testing.runtimes import ScriptedRuntime\n\n"
        "async def make() -> Agent:\n"
        "    return Agent('Qwen3-4B', runtime=ScriptedRuntime(['From the factory.']))\n\n"
        "def not_an_agent() -> int:\n"
        "    return 7\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    served = await make_served_agent(agent_spec="served_here:make", research=True)
    assert (await served.agent.arun("Hi")).answer == "From the factory."
    assert served.research is not None  # shares the factory agent's runtime
    assert served.research.runtime is served.agent.runtime
    build_mcp_server(served, lifespan_close=False)  # ask and research are served
    with pytest.raises(ServeConfigError, match="returned 7, not an Agent"):
        await make_served_agent(agent_spec="served_here:not_an_agent")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_colon", "must look like 'package.module:factory'"),
        ("no_such_module_q3:make", "cannot import 'no_such_module_q3'"),
        ("q3agent:no_such_attribute", "has no attribute 'no_such_attribute'"),
        ("q3agent:__version__", "neither an Agent nor a callable"),
    ],
)
def test_a_bad_agent_spec_says_what_to_change(spec: str, says: str) -> None:
    with pytest.raises(ServeConfigError, match=says):
        load_agent_factory(spec)


def test_an_agent_object_is_served_as_itself() -> None:
    import q3agent

    agent = Agent("Qwen3-4B", runtime=ScriptedRuntime([]))
    q3agent._served_for_test = agent  # type: ignore[attr-defined]
    try:
        assert load_agent_factory("q3agent:_served_for_test")() is agent
    finally:
        del q3agent._served_for_test  # type: ignore[attr-defined]
