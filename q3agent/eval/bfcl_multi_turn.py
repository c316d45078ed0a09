"""BFCL multi-turn entries run the way BFCL's own inference loop runs them.

For each user turn the model is asked again and again until a step holds no call; each step's
calls are executed in order by BFCL's own executor on the entry's environment instances, and
their results go back as one ``<tool_response>`` turn. This loop is the harness's, not the
agent's, because BFCL's rules differ from q3agent's agent loop on purpose:

* a step without a valid call ends the turn, including one whose call blocks were all
  unparseable (the agent would answer a broken call with an error and go on);
* a call to a function the environments do not have gets BFCL's executor text,
  ``Error during execution: name 'x' is not defined`` (the agent says "no tool named …");
  a held-out function the environment has runs even before it is announced, as in BFCL;
* more than BFCL's 20 tool-calling steps in one turn force-terminate the entry;
* ``miss_func`` functions arrive at their turn either in the tools block (``holdout="tools"``,
  BFCL's FC path) or as a Python-repr list in the user message with the tools block unchanged
  (``holdout="message"``, bfcl-eval's local Qwen3 handler).

The prompt is q3agent's append-only token ids (a new user query re-renders only where the
template drops earlier thinking), generated under the thinking policy and budget, each request
sized to what the context has left.
"""

from __future__ import annotations

import importlib
import inspect
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from q3agent.eval.bfcl_convert import call_string, to_qwen3_tools
from q3agent.eval.bfcl_data import BfclEntry, bfcl_module
from q3agent.eval.bfcl_decode import bfcl_decode_execute
from q3agent.eval.bfcl_settings import model_capability, request_max_tokens, step_sampling
from q3agent.eval.scoring import check_multi_turn
from q3agent.loop import parse_generation
from q3agent.policy.base import Policy, RunState, StepMode, ThinkingCapability
from q3agent.qwen3.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolMessage,
    UserMessage,
    dump_messages,
)
from q3agent.qwen3.prompt import PromptBuilder
from q3agent.serving.base import GenerationRequest, Runtime
from q3agent.serving.budget import BudgetedGeneration, generate_with_budget
from q3agent.types import Usage

if TYPE_CHECKING:
    from q3agent.eval.bfcl_runner import EntryResult, EvalConfig

__all__ = ["BfclExecutor", "MultiTurnRun", "holdout_message", "run_multi_turn"]

_BLOCKED = {"kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run"}
"""Names BFCL's executor refuses to evaluate."""


def holdout_message(functions: Sequence[dict[str, Any]], holdout: str) -> str:
    """The user message of a ``miss_func`` turn: BFCL's FC text, or its prompting text with the
    held-out functions as a Python-repr list (bfcl-eval's local handlers)."""
    prompts = bfcl_module("constants.default_prompts")
    if holdout == "tools":
        return str(prompts.DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC)
    return str(prompts.DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING).format(
        functions=list(functions)
    )


class BfclExecutor:
    """BFCL's ``execute_multi_turn_func_call`` on one entry's environment instances.

    BFCL keeps the instances in its module's globals, keyed by model name and entry id; a name
    unique to this run keeps concurrent entries apart, and :meth:`close` drops them. Only names
    of the environments' public methods are evaluated; any other name gets the text BFCL's
    ``eval`` produces for an undefined name, without evaluating the model's text.
    """

    def __init__(self, entry: BfclEntry) -> None:
        self.entry = entry
        self._utils = bfcl_module("eval_checker.multi_turn_eval.multi_turn_utils")
        self._model_name = f"q3agent_run_{uuid.uuid4().hex}"
        self.methods = _public_methods(entry.involved_classes)

    def execute(self, calls: Sequence[str]) -> list[str]:
        """Results of the calls (``name(a=1)`` strings), in order, as BFCL shows them."""
        results: list[str | None] = []
        runnable: list[str] = []
        for call in calls:
            name = call.split("(", 1)[0].strip()
            if name in self.methods and name not in _BLOCKED:
                runnable.append(call)
                results.append(None)  # filled in below, in order
            elif name.split(".")[-1] in _BLOCKED:
                blocked = name.split(".")[-1]
                results.append(f"Error during execution: Function call {blocked} is not allowed.")
            else:
                undefined = re.split(r"[.\s\[]", name, maxsplit=1)[0] or name
                results.append(f"Error during execution: name '{undefined}' is not defined")
        if runnable:  # calls that fail change no state, so the rest run as one batch, in order
            out, _ = self._utils.execute_multi_turn_func_call(
                runnable,
                self.entry.initial_config,
                self.entry.involved_classes,
                self._model_name,
                self.entry.id,
                long_context="long_context" in self.entry.category,
                is_evaL_run=False,
            )
            ran = iter(str(x) for x in out)
            results = [next(ran) if r is None else r for r in results]
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Drop this run's environment instances from BFCL's module globals."""
        prefix = re.sub(r"[-./:]", "_", self._model_name)
        namespace = vars(self._utils)
        for key in [k for k in namespace if k.startswith(prefix)]:
            del namespace[key]


def _public_methods(class_names: Sequence[str]) -> set[str]:
    config = bfcl_module("constants.executable_backend_config")
    names: set[str] = set()
    for class_name in class_names:
        module = importlib.import_module(config.CLASS_FILE_PATH_MAPPING[class_name])
        cls = getattr(module, class_name)
        names.update(n for n, _ in inspect.getmembers(cls, inspect.isfunction) if n[0] != "_")
    return names


@contextmanager
def _executor(entry: BfclEntry) -> Iterator[BfclExecutor]:
    executor = BfclExecutor(entry)
    try:
        yield executor
    finally:
        executor.close()


@dataclass
class MultiTurnRun:
    """What one entry's run produced, per turn and per step."""

    completions: list[list[str]] = field(default_factory=list)
    """The raw completion of each step (reasoning included)."""
    calls: list[list[list[str]]] = field(default_factory=list)
    """The calls q3agent's parser read and the harness executed, per step."""
    messages: list[Message] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    force_quit: bool = False


async def _generate(
    runtime: Runtime,
    builder: PromptBuilder,
    mode: StepMode,
    capability: ThinkingCapability,
    config: EvalConfig,
    context_length: int | None,
    request_id: str,
) -> tuple[BudgetedGeneration, str]:
    """One step from the open generation prompt; returns it and the completion's full text."""
    prompt_open = capability == "thinking_only"
    if prompt_open:  # Thinking-2507: the generation prompt opens <think>
        builder.append_text("<think>\n", trusted=True)
    sampling = step_sampling(config.sampling, mode.sampling, config.max_tokens, config.temperature)
    prompt = builder.ids
    wanted = request_max_tokens(config.sampling, sampling.max_tokens, len(prompt), context_length)
    request = GenerationRequest(
        prompt_ids=prompt,
        sampling=sampling.with_(max_tokens=wanted),
        messages=tuple(builder.messages),
        enable_thinking=mode.thinking if capability == "hybrid" else None,
        request_id=request_id,
    )
    generation: BudgetedGeneration | None = None
    async for item in generate_with_budget(
        runtime, request, mode.budget if mode.thinking else None, model_opens_think=not prompt_open
    ):
        if isinstance(item, BudgetedGeneration):
            generation = item
    assert generation is not None
    return generation, ("<think>\n" + generation.text) if prompt_open else generation.text


@dataclass
class TurnTally:
    """Counts the thinking policy reads within one user turn (or one single-turn task)."""

    task_tokens: int
    num_tools: int
    capability: ThinkingCapability
    max_steps: int
    step: int = 0
    tool_calls: int = 0
    failures: int = 0
    last_failed: bool = False
    last_had_calls: bool = False
    last_hit_budget: bool = False
    thinking_steps: int = 0
    thinking_tokens: int = 0

    def state(self) -> RunState:
        """The snapshot the policy decides the next step from."""
        return RunState(
            step=self.step,
            task_tokens=self.task_tokens,
            num_tools=self.num_tools,
            capability=self.capability,
            tool_calls_so_far=self.tool_calls,
            failures_so_far=self.failures,
            last_step_failed=self.last_failed,
            last_step_had_calls=self.last_had_calls,
            last_thinking_hit_budget=self.last_hit_budget,
            thinking_steps=self.thinking_steps,
            thinking_tokens_used=self.thinking_tokens,
            max_steps=self.max_steps,
        )


async def run_multi_turn(
    entry: BfclEntry,
    runtime: Runtime,
    config: EvalConfig,
    policy: Policy,
    context_length: int | None,
) -> EntryResult:
    """Run one multi-turn entry BFCL's way and score it with both decoders."""
    from q3agent.eval.bfcl_runner import EntryResult

    turns = _EntryTurns(entry, runtime, config, policy, context_length)
    run = turns.run
    started = time.perf_counter()
    with _executor(entry) as executor:
        for turn, turn_messages in enumerate(entry.turns):
            await turns.run_turn(turn, turn_messages, executor)
            if run.force_quit:
                break
    latency = time.perf_counter() - started
    bfcl_calls = bfcl_turns(run.completions)
    return EntryResult(
        id=entry.id,
        category=entry.category,
        verdict=check_multi_turn(entry, run.calls, force_quit=run.force_quit),
        raw_output=run.completions,
        calls=run.calls,
        messages=dump_messages(run.messages),
        usage=run.usage,
        latency_s=latency,
        bfcl_verdict=check_multi_turn(entry, bfcl_calls, force_quit=run.force_quit),
        bfcl_calls=bfcl_calls,
    )


@dataclass(eq=False)
class _EntryTurns:
    """One entry's user turns on one append-only prompt, each run until a step holds no call
    (or BFCL's step limit force-quits the entry); what they produced is in :attr:`run`."""

    entry: BfclEntry
    runtime: Runtime
    config: EvalConfig
    policy: Policy
    context_length: int | None
    run: MultiTurnRun = field(default_factory=MultiTurnRun, init=False)

    def __post_init__(self) -> None:
        self.tok = self.runtime.tokenizer
        self.capability = model_capability(self.config.model, self.config.capability)
        self.functions = list(self.entry.functions)
        self.builder = PromptBuilder(self.tok, to_qwen3_tools(self.functions))

    def _thinking(self, mode: StepMode) -> bool | None:
        """``enable_thinking`` for the template: only hybrid models take it."""
        return mode.thinking if self.capability == "hybrid" else None

    def _user_message(self, turn: int, turn_messages: Sequence[dict[str, Any]]) -> UserMessage:
        """The turn's user message; a ``miss_func`` turn announces its held-out functions
        (in the tools block, which re-renders the prompt, or in the message)."""
        if turn not in self.entry.missed_functions:
            return UserMessage(content=str(turn_messages[-1]["content"]))
        held = self.entry.missed_functions[turn]
        if self.config.holdout == "tools":
            self.functions += held
            self.builder = PromptBuilder(self.tok, to_qwen3_tools(self.functions))
        return UserMessage(content=holdout_message(held, self.config.holdout))

    async def run_turn(
        self, turn: int, turn_messages: Sequence[dict[str, Any]], executor: BfclExecutor
    ) -> None:
        """Ask the model step after step until a step holds no call; run each step's calls."""
        rerender = turn == 0 or (
            turn in self.entry.missed_functions and self.config.holdout == "tools"
        )
        user = self._user_message(turn, turn_messages)
        self.run.messages.append(user)
        tally = TurnTally(
            self.tok.count(user.content),
            len(self.functions),
            self.capability,
            self.config.max_steps_per_turn + 1,
        )
        mode = self.policy.decide(tally.state())
        if rerender:
            self.builder.start(self.run.messages, enable_thinking=self._thinking(mode))
        else:
            self.builder.append_user(user, enable_thinking=self._thinking(mode))
        steps_text: list[str] = []
        steps_calls: list[list[str]] = []
        while True:
            calls, completion = await self._step(turn, tally, mode)
            steps_text.append(completion)
            rendered = [call_string(c) for c in calls]
            steps_calls.append(rendered)
            if not rendered:  # BFCL: a step without a decodable call ends the turn
                break
            tool_messages = self._execute(calls, rendered, executor, tally)
            if tally.step > self.config.max_steps_per_turn:  # BFCL's force-quit
                self.run.force_quit = True
                break
            mode = self.policy.decide(tally.state())
            self.builder.append_tool_results(tool_messages, enable_thinking=self._thinking(mode))
        self.run.completions.append(steps_text)
        self.run.calls.append(steps_calls)

    async def _step(
        self, turn: int, tally: TurnTally, mode: StepMode
    ) -> tuple[list[ToolCall], str]:
        """One model step appended to the prompt; its parsed calls and its completion text."""
        request_id = f"{self.entry.id}-{turn}-{tally.step}"
        generation, completion = await _generate(
            self.runtime,
            self.builder,
            mode,
            self.capability,
            self.config,
            self.context_length,
            request_id,
        )
        self.run.usage += generation.usage
        if mode.thinking:
            tally.thinking_steps += 1
            tally.thinking_tokens += generation.usage.reasoning_tokens
        tally.last_hit_budget = generation.hit_budget
        parsed = parse_generation(self.tok, generation)
        calls = list(parsed.tool_calls)
        assistant = AssistantMessage(
            content=parsed.content, reasoning_content=parsed.reasoning, tool_calls=calls
        )
        self.builder.append_generation(
            generation.token_ids, message=assistant, finish_reason=generation.finish_reason
        )
        self.run.messages.append(assistant)
        return calls, completion

    def _execute(
        self,
        calls: list[ToolCall],
        rendered: list[str],
        executor: BfclExecutor,
        tally: TurnTally,
    ) -> list[ToolMessage]:
        """Run a step's calls with BFCL's executor; their results as tool messages."""
        results = executor.execute(rendered)
        tool_messages = [
            ToolMessage(
                content=result,
                name=call.name,
                tool_call_id=call.id,
                is_error=result.startswith("Error during execution"),
            )
            for call, result in zip(calls, results, strict=True)
        ]
        self.run.messages.extend(tool_messages)
        failed = sum(m.is_error for m in tool_messages)
        tally.tool_calls += len(rendered)
        tally.failures += failed
        tally.last_failed, tally.last_had_calls = failed > 0, True
        tally.step += 1
        return tool_messages


def bfcl_turns(completions: Sequence[Sequence[str]]) -> list[list[list[str]]]:
    """The calls BFCL's decoder reads from the same completions, per turn and step.

    BFCL ends a turn at the first step its decoder finds no call in, so later steps of that
    turn (which q3agent's parser went on with) are not counted.
    """
    out: list[list[list[str]]] = []
    for turn in completions:
        steps: list[list[str]] = []
        for text in turn:
            decoded = bfcl_decode_execute(text)
            steps.append(decoded)
            if not decoded:
                break
        out.append(steps)
    return out
