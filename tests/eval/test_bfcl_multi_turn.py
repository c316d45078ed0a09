"""Multi-turn BFCL: environments as tools, the agent session per turn, BFCL's state checker."""

from __future__ import annotations

import anyio
import pytest

from q3agent.eval.bfcl_data import MULTI_TURN_CATEGORIES, bfcl_module, load_category
from q3agent.eval.bfcl_envs import BfclEnvironment
from q3agent.eval.bfcl_runner import EvalConfig, run_bfcl
from q3agent.eval.oracle import HOLDOUT_MESSAGE, NoisyOracleRuntime, OracleRuntime
from q3agent.serving.testing import ScriptedRuntime
from q3agent.tools.context import RunContext

pytest.importorskip("bfcl_eval", reason="bfcl-eval not installed: pip install --no-deps bfcl-eval")


def test_environment_tools_answer_like_bfcls_executor() -> None:
    entry = load_category("multi_turn_base", 1)[0]
    env = BfclEnvironment.create(entry)
    tools = {t.name: t for t in env.tools(entry.functions)}
    assert set(tools) == {doc["name"] for doc in entry.functions}
    calls = ["cd(folder='document')", "ls(a=True)", "cd(folder='nowhere')", "mv(source=1)"]
    utils = bfcl_module("eval_checker.multi_turn_eval.multi_turn_utils")
    expected, _ = utils.execute_multi_turn_func_call(
        calls, entry.initial_config, entry.involved_classes, "q3agent_envtest", entry.id
    )
    ctx = RunContext(deps=None, run_id="t", step=0, messages=())
    args = [{"folder": "document"}, {"a": True}, {"folder": "nowhere"}, {"source": 1}]
    names = ["cd", "ls", "cd", "mv"]

    async def run() -> list[str]:
        out = []
        for name, arguments in zip(names, args, strict=True):
            tool = tools[name]
            out.append(tool.render(await tool.call(tool.validate(arguments), ctx)))
        return out

    assert anyio.run(run) == expected
    schema = tools["ls"].schema()["function"]["parameters"]
    assert schema["type"] == "object" and schema["properties"]["a"]["type"] == "boolean"


@pytest.mark.parametrize("runtime_cls", [OracleRuntime, NoisyOracleRuntime])
def test_oracle_scores_every_multi_turn_category_fully(runtime_cls: type) -> None:
    entries = [e for c in MULTI_TURN_CATEGORIES for e in load_category(c, 3)]
    report = anyio.run(lambda: run_bfcl(runtime_cls(), EvalConfig(), entries=entries))
    failed = [(r.id, r.verdict.error_type, r.verdict.error) for r in report.results]
    assert [f for f in failed if f[1] is not None] == []
    assert set(report.scores) == set(MULTI_TURN_CATEGORIES)
    miss_func = next(r for r in report.results if r.category == "multi_turn_miss_func")
    users = [m["content"] for m in miss_func.messages or [] if m["role"] == "user"]
    assert HOLDOUT_MESSAGE in users
    turns = {e.id: len(e.turns) for e in entries}
    assert all(len(r.calls) == turns[r.id] for r in report.results)


def test_a_model_that_skips_the_work_fails_the_state_check() -> None:
    entry = load_category("multi_turn_base", 1)[0]
    runtime = ScriptedRuntime(["Sure, done."] * len(entry.turns))
    report = anyio.run(lambda: run_bfcl(runtime, EvalConfig(), entries=[entry]))
    result = report.results[0]
    assert not result.verdict.valid
    assert result.verdict.error_type == "multi_turn:empty_turn_model_response"
    assert len(result.calls) == len(entry.turns)
