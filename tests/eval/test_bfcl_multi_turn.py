"""Multi-turn BFCL: environments as tools, the agent session per turn, BFCL's state checker."""

from __future__ import annotations

import anyio
import pytest

from q3agent.eval.bfcl_data import MULTI_TURN_CATEGORIES, bfcl_module, load_category
from q3agent.eval.bfcl_envs import BfclEnvironment
from q3agent.eval.bfcl_multi_turn import BfclExecutor
from q3agent.eval.bfcl_runner import EvalConfig, run_bfcl
from q3agent.eval.oracle import HOLDOUT_MESSAGE, NoisyOracleRuntime, OracleRuntime
from q3agent.serving.base import Generation, GenerationRequest, Runtime, RuntimeWrapper
from q3agent.testing.runtimes import ScriptedRuntime
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


def test_unknown_functions_and_broken_calls_get_bfcls_treatment() -> None:
    entry = load_category("multi_turn_base", 1)[0]
    unknown = '<tool_call>\n{"name": "teleport", "arguments": {"to": "x"}}\n</tool_call>'
    broken = "<tool_call>\nls -a\n</tool_call>"
    rest = ["Done."] * (len(entry.turns) - 1)
    runtime = ScriptedRuntime([unknown, broken, *rest])
    report = anyio.run(lambda: run_bfcl(runtime, EvalConfig(), entries=[entry]))
    result = report.results[0]
    tool_messages = [m for m in result.messages or [] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [
        "Error during execution: name 'teleport' is not defined"
    ]
    # the broken call ended turn 0: the next request is turn 1's user message, not a retry
    assert len(runtime.requests) == 2 + len(rest)
    third = runtime.requests[2].prompt_text
    last_user = third.rsplit("<|im_start|>user\n", 1)[1]
    assert last_user.startswith(f"{entry.turns[1][0]['content']}<|im_end|>")
    assert result.calls[0] == [["teleport(to='x')"], []]


class PromptLog(RuntimeWrapper):
    """Keeps every prompt's text (the oracle itself keeps only the last few requests)."""

    def __init__(self, inner: Runtime) -> None:
        super().__init__(inner)
        self.prompts: list[str] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        self.prompts.append(self.tokenizer.decode(list(request.prompt_ids)))
        return await self.inner.generate(request)


@pytest.mark.parametrize("holdout", ["tools", "message"])
def test_held_out_functions_arrive_in_the_tools_block_or_the_message(holdout: str) -> None:
    entry = load_category("multi_turn_miss_func", 1)[0]
    (turn, held), *_ = entry.missed_functions.items()
    name = held[0]["name"]
    runtime = PromptLog(OracleRuntime())
    config = EvalConfig(holdout=holdout)  # type: ignore[arg-type]
    report = anyio.run(lambda: run_bfcl(runtime, config, entries=[entry]))
    assert report.results[0].verdict.valid and report.results[0].bfcl_verdict.valid
    first = next(p for p in runtime.prompts if p.count("<|im_start|>user\n") - p.count(
        "<|im_start|>user\n<tool_response>") == turn + 1)  # fmt: skip
    tools_block = first.split("\n</tools>")[0]
    last_user = first.rsplit("<|im_start|>user\n", 1)[1]
    if holdout == "tools":
        assert f'"name": "{name}"' in tools_block
        assert last_user.startswith(HOLDOUT_MESSAGE)
    else:
        assert f'"name": "{name}"' not in tools_block
        assert last_user.startswith(f"[{{'name': '{name}'")
        assert HOLDOUT_MESSAGE in last_user


def test_both_decoders_score_the_same_completions() -> None:
    entries = [e for c in MULTI_TURN_CATEGORIES for e in load_category(c, 2)]
    exact = anyio.run(lambda: run_bfcl(OracleRuntime(), EvalConfig(), entries=entries))
    noisy = anyio.run(lambda: run_bfcl(NoisyOracleRuntime(), EvalConfig(), entries=entries))
    assert all(s.accuracy == 1.0 for s in exact.bfcl_scores.values())
    assert all(s.accuracy == 1.0 for s in noisy.scores.values())
    # BFCL's decoder reads only "<tool_call>\n{json}\n</tool_call>" blocks
    assert noisy.bfcl_summary["multi_turn"] < 0.5
    first = noisy.results[0]
    assert first.bfcl_verdict is not None and not first.bfcl_verdict.valid
    assert first.to_json()["bfcl_decoder"]["valid"] is False


def test_harness_executor_answers_as_bfcls_own() -> None:
    entry = load_category("multi_turn_base", 1)[0]
    calls = ["cd(folder='document')", "teleport(to='x')", "ls(a=True)", "mv(source=1)"]
    utils = bfcl_module("eval_checker.multi_turn_eval.multi_turn_utils")
    expected, _ = utils.execute_multi_turn_func_call(
        calls, entry.initial_config, entry.involved_classes, "q3agent_exectest", entry.id
    )
    executor = BfclExecutor(entry)
    try:
        assert executor.execute(calls) == expected
        assert executor.execute(["pwd()"]) == [
            '{"current_working_directory": "/workspace/document"}'
        ]
    finally:
        executor.close()
    assert not [k for k in vars(utils) if k.startswith("q3agent_run_")]
