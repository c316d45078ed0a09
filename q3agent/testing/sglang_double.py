"""An engine-faithful stand-in for ``sglang.Engine``, for tests where SGLang cannot run (no GPU).

:class:`SGLangEngineDouble` answers ``async_generate`` the way SGLang's tokenizer manager,
scheduler and detokenizer do, with the model's words chosen by a script:

* it **rejects** what SGLang rejects: in the tokenizer manager (``tokenizer_manager.py``) a
  prompt of ``context_length`` tokens or more ("The input (N tokens) is longer than the
  model's context length (C tokens).") and ``prompt + max_new_tokens > context_length``
  ("Requested token count exceeds the model's maximum context length …"), both as
  ``ValueError``, and a ``rid`` that is still in flight ("Duplicate request ID detected: …";
  a finished request's rid may be reused, as on the real engine); in the scheduler
  (``validate_input_length``) a prompt of ``context_length - 6`` tokens or more, aborted with
  status 400: a ``ValueError`` with the scheduler's message, or, when streaming, one chunk
  whose ``finish_reason`` is that abort;
* the scheduler caps a request's output at ``context_length - prompt - 2`` tokens;
* it stops where SGLang stops (``max_new_tokens``, ``stop_token_ids`` plus EOS, stop strings)
  and reports it the same way: ``output_ids`` keep a matched stop id while ``text`` drops it
  (``detokenizer_manager.py`` trims ``output[:-1]``), a stop string is cut from the text,
  ``meta_info.finish_reason`` is ``{"type": "stop", "matched": …}`` or ``{"type": "length",
  "length": n}``;
* ``cached_tokens`` is what RadixAttention would serve: the longest prefix shared with *any*
  earlier request's prompt plus its output minus the last token (that token's KV is never
  computed), and never the whole prompt (SGLang prefills at least the last prompt token);
* streaming yields SGLang's default cumulative chunks, which (as in the embedded engine)
  share one ``output_ids`` list that grows under the consumer: copy it per chunk.

Each of these was checked against SGLang 0.5.23's CPU engine (tests/engine/sglang).

``SGLangRuntime(model, engine_factory=lambda **kw: double, ...)`` runs against it; the runtime
reads the context from ``double.tokenizer_manager.context_len`` as it does from a real engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from q3agent.qwen3.tokenizer import Qwen3Tokenizer

ScriptFn = Callable[[list[int]], str]
"""A function of the prompt ids returning the completion text the model writes."""


@dataclass
class _TokenizerManager:
    """The part of SGLang's tokenizer manager the runtime reads."""

    context_len: int


def kill_process_tree(parent_pid: int | None, include_parent: bool = True, **_: Any) -> None:
    """SGLang's process killer, here a no-op: the double owns no processes.

    (``shutdown_engine_only`` scopes the engine module's ``kill_process_tree``; a real one
    lives in ``sglang.srt.utils``.)
    """


class SGLangEngineDouble:
    """Stands in for ``sglang.Engine``: same call shape, SGLang's checks and stop trimming.

    ``completions``: the texts the "model" writes, in order (control tokens included, e.g.
    ``"<think>\\n…\\n</think>\\n\\nAnswer."``), or a function of the prompt ids. A completion
    that ends before any stop gets ``<|im_end|>`` appended, as a model ends its turn.
    ``context_length``: what SGLang derived (40,960 for the April Qwen3 models). Every call's
    keyword arguments are kept in ``calls``.
    """

    def __init__(
        self,
        completions: Iterable[str] | ScriptFn = (),
        *,
        context_length: int = 40_960,
        tokenizer: Qwen3Tokenizer | None = None,
        **engine_args: Any,
    ) -> None:
        self.tokenizer = tokenizer or Qwen3Tokenizer.offline()
        self.tokenizer_manager = _TokenizerManager(context_len=context_length)
        self.engine_args = engine_args
        self._fn: ScriptFn | None = completions if callable(completions) else None
        self._script: list[str] = [] if callable(completions) else list(completions)
        self.calls: list[dict[str, Any]] = []
        self._in_flight: set[str] = set()
        self._cached: list[list[int]] = []

    @property
    def context_length(self) -> int:
        """The context SGLang enforces."""
        return self.tokenizer_manager.context_len

    def get_all_child_pids(self) -> list[int]:
        """No scheduler or detokenizer processes."""
        return []

    def shutdown(self) -> None:
        """Nothing to stop."""

    async def async_generate(
        self,
        input_ids: Sequence[int],
        sampling_params: dict[str, Any],
        stream: bool = False,
        rid: str | None = None,
        **extra: Any,
    ) -> Any:
        """One request, checked and answered as SGLang would (a dict, or chunks when streaming)."""
        self.calls.append(
            {"input_ids": list(input_ids), "sampling_params": dict(sampling_params)}
            | {"stream": stream, "rid": rid}
            | extra
        )
        self._validate(list(input_ids), sampling_params, rid)
        refusal = self._scheduler_refusal(len(input_ids), rid)
        if refusal is not None and not stream:
            raise ValueError(refusal["meta_info"]["finish_reason"]["message"])
        out = refusal or self._complete(list(input_ids), sampling_params, rid)
        if not stream:
            return out
        if rid is not None:
            self._in_flight.add(rid)
        return self._chunks(out, rid)

    def _scheduler_refusal(self, prompt: int, rid: str | None) -> dict[str, Any] | None:
        """The scheduler's abort for a prompt past ``max_req_input_len`` (context - 6)."""
        allowed = self.context_length - 6
        if prompt < allowed:
            return None
        message = (
            f"Input length ({prompt} tokens) exceeds the maximum allowed length "
            f"({allowed} tokens). Use a shorter input or enable --allow-auto-truncate."
        )
        finish = {
            "type": "abort",
            "message": message,
            "status_code": 400,
            "err_type": "BadRequestError",
        }
        meta = {"id": rid, "finish_reason": finish, "prompt_tokens": prompt}
        return {"text": "", "output_ids": [], "meta_info": meta | {"completion_tokens": 0}}

    def _validate(self, ids: list[int], params: dict[str, Any], rid: str | None) -> None:
        if rid is not None and rid in self._in_flight:
            raise ValueError(f"Duplicate request ID detected: {rid}")
        context = self.context_length
        if len(ids) >= context:
            raise ValueError(
                f"The input ({len(ids)} tokens) is longer than the model's context length "
                f"({context} tokens)."
            )
        max_new = params.get("max_new_tokens")
        if max_new is not None and max_new + len(ids) > context:
            raise ValueError(
                f"Requested token count exceeds the model's maximum context length of "
                f"{context} tokens. You requested a total of {max_new + len(ids)} tokens: "
                f"{len(ids)} tokens from the input messages and {max_new} tokens for the "
                "completion. Please reduce the number of tokens in the input messages or the "
                "completion to fit within the limit."
            )

    def _next_text(self, ids: list[int]) -> str:
        if self._fn is not None:
            return self._fn(ids)
        if not self._script:
            raise AssertionError("SGLangEngineDouble got more requests than scripted completions")
        return self._script.pop(0)

    def _complete(
        self, prompt: list[int], params: dict[str, Any], rid: str | None
    ) -> dict[str, Any]:
        tok = self.tokenizer
        planned = tok.encode_trusted(self._next_text(prompt))
        max_new = params.get("max_new_tokens")
        room = self.context_length - len(prompt) - 2  # the scheduler's cap on the output
        limit = room if max_new is None else min(int(max_new), room)
        stop_ids = {tok.im_end_id, tok.eos_id, *params.get("stop_token_ids", ())}
        stops = [s for s in params.get("stop") or () if s]
        out: list[int] = []
        finish: dict[str, Any] | None = None
        decoder = tok.decoder()
        text = ""
        for tid in [*planned, tok.im_end_id]:
            if len(out) >= limit:
                finish = {"type": "length", "length": len(out)}
                break
            out.append(tid)
            if tid in stop_ids:
                finish = {"type": "stop", "matched": tid}
                break  # the detokenizer drops the matched id's text: not added
            text += decoder.push([tid])
            hit = next((s for s in stops if s in text), None)
            if hit is not None:
                finish = {"type": "stop", "matched": hit}
                text = text[: text.index(hit)]
                break
        if finish is None:
            finish = {"type": "length", "length": len(out)}
        cached = min(
            max((_shared(seq, prompt) for seq in self._cached), default=0), len(prompt) - 1
        )
        self._cached.append(prompt + out[:-1])
        return {
            "text": text,
            "output_ids": out,
            "meta_info": {
                "id": rid,
                "finish_reason": finish,
                "prompt_tokens": len(prompt),
                "completion_tokens": len(out),
                "cached_tokens": cached,
            },
        }

    async def _chunks(self, out: dict[str, Any], rid: str | None) -> AsyncIterator[dict[str, Any]]:
        ids: list[int] = out["output_ids"]
        meta = out["meta_info"]
        shared: list[int] = []  # one list for every chunk, as the engine streams them
        try:
            for end in range(1, len(ids)):
                shared.append(ids[end - 1])
                partial = dict(meta, finish_reason=None, completion_tokens=end)
                yield {
                    "text": self.tokenizer.decode(ids[:end]),
                    "output_ids": shared,
                    "meta_info": partial,
                }
            shared.extend(ids[len(shared) :])
            yield dict(out, output_ids=shared)
        finally:
            self._in_flight.discard(rid or "")


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
