"""BFCL v3 data: importing ``bfcl-eval`` safely, category names, and loading test entries.

``bfcl-eval`` is installed with ``--no-deps`` (its vendor SDKs are not needed to score). Before
any of its checkers is imported, :func:`import_bfcl` points ``BFCL_PROJECT_ROOT`` at a private
temporary directory (the package creates result folders there on import) and puts a small
stand-in for ``bfcl_eval.constants.model_config`` into ``sys.modules``, so importing the checkers
never imports OpenAI, Anthropic, Mistral… clients.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from q3agent.errors import UsageError

__all__ = [
    "CATEGORY_GROUPS",
    "MAX_STEPS_PER_TURN",
    "MULTI_TURN_CATEGORIES",
    "SINGLE_TURN_CATEGORIES",
    "V3_CATEGORIES",
    "BfclEntry",
    "BfclUnavailableError",
    "bfcl_module",
    "import_bfcl",
    "load_category",
    "resolve_categories",
]

# q3agent (= BFCL v3) category name -> the category name bfcl-eval files use.
V3_CATEGORIES: dict[str, str] = {
    "simple": "simple_python",
    "java": "simple_java",
    "javascript": "simple_javascript",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
    "irrelevance": "irrelevance",
    "live_simple": "live_simple",
    "live_multiple": "live_multiple",
    "live_parallel": "live_parallel",
    "live_parallel_multiple": "live_parallel_multiple",
    "live_irrelevance": "live_irrelevance",
    "live_relevance": "live_relevance",
    "multi_turn_base": "multi_turn_base",
    "multi_turn_miss_func": "multi_turn_miss_func",
    "multi_turn_miss_param": "multi_turn_miss_param",
    "multi_turn_long_context": "multi_turn_long_context",
}
"""The BFCL v3 categories, keyed by their v3 names (bfcl-eval ≥ v4 renamed the simple ones)."""

MULTI_TURN_CATEGORIES: tuple[str, ...] = tuple(c for c in V3_CATEGORIES if "multi_turn" in c)
SINGLE_TURN_CATEGORIES: tuple[str, ...] = tuple(
    c for c in V3_CATEGORIES if c not in MULTI_TURN_CATEGORIES
)
_NON_LIVE = (
    "simple",
    "java",
    "javascript",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
)
CATEGORY_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(V3_CATEGORIES),
    "single_turn": SINGLE_TURN_CATEGORIES,
    "multi_turn": MULTI_TURN_CATEGORIES,
    "non_live": _NON_LIVE,
    "live": tuple(c for c in V3_CATEGORIES if c.startswith("live_")),
    "ast": tuple(c for c in SINGLE_TURN_CATEGORIES if "relevance" not in c),
    "relevance": tuple(c for c in V3_CATEGORIES if "relevance" in c),
    "python": tuple(c for c in SINGLE_TURN_CATEGORIES if c not in ("java", "javascript")),
    "non_python": ("java", "javascript"),
}
"""Names that expand to several categories on the command line (as BFCL's own groups do)."""

_ALIASES = {v: k for k, v in V3_CATEGORIES.items()}

MAX_STEPS_PER_TURN = 20
"""BFCL's ``MAXIMUM_STEP_LIMIT``: a turn with more tool-calling steps is force-terminated."""


class BfclUnavailableError(UsageError, RuntimeError):
    """``bfcl-eval`` (or a module its checkers import) is not installed."""


def resolve_categories(names: Sequence[str]) -> list[str]:
    """Expand group names and v4 aliases into v3 category names, in canonical order.

    Raises ``ValueError`` naming the unknown entry and the valid choices.
    """
    wanted: set[str] = set()
    for raw in names:
        for name in (part.strip() for part in raw.split(",")):
            if not name:
                continue
            if name in CATEGORY_GROUPS:
                wanted.update(CATEGORY_GROUPS[name])
            elif name in V3_CATEGORIES:
                wanted.add(name)
            elif name in _ALIASES:
                wanted.add(_ALIASES[name])
            else:
                choices = ", ".join([*CATEGORY_GROUPS, *V3_CATEGORIES])
                raise ValueError(f"unknown BFCL category {name!r}; choose from: {choices}")
    return [c for c in V3_CATEGORIES if c in wanted]


# --------------------------------------------------------------------------------------------
# Importing bfcl-eval without its vendor SDKs


@dataclass(frozen=True)
class _ModelConfig:
    """What BFCL's checkers read from a model config (only ``underscore_to_dot``)."""

    model_name: str
    underscore_to_dot: bool = False
    is_fc_model: bool = True


class _AnyModelConfig(Mapping[str, _ModelConfig]):
    """Every model name maps to a config that keeps dots in function names (Qwen3 does)."""

    def __getitem__(self, key: str) -> _ModelConfig:
        return _ModelConfig(model_name=key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


_BFCL_ROOT: str | None = None


def import_bfcl() -> types.ModuleType:
    """Import ``bfcl_eval`` with the stand-ins in place and return the package.

    Idempotent. Raises :class:`BfclUnavailableError` saying what to install when it is missing.
    """
    global _BFCL_ROOT
    if "bfcl_eval.constants.model_config" not in sys.modules:
        stub = types.ModuleType("bfcl_eval.constants.model_config")
        stub.__doc__ = "q3agent stand-in: no vendor SDK is imported to score."
        stub.MODEL_CONFIG_MAPPING = _AnyModelConfig()  # type: ignore[attr-defined]
        stub.ModelConfig = _ModelConfig  # type: ignore[attr-defined]
        sys.modules["bfcl_eval.constants.model_config"] = stub
    if "BFCL_PROJECT_ROOT" not in os.environ:
        _BFCL_ROOT = tempfile.mkdtemp(prefix="q3agent-bfcl-")
        os.environ["BFCL_PROJECT_ROOT"] = _BFCL_ROOT
    try:
        import bfcl_eval
        import bfcl_eval.eval_checker.ast_eval.ast_checker
        import bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker
        import bfcl_eval.utils
    except ImportError as exc:
        raise BfclUnavailableError(
            f"BFCL evaluation needs the bfcl-eval package and the modules its checkers import "
            f"({exc}). Install them with: pip install --no-deps bfcl-eval && "
            "pip install filelock mpmath tenacity overrides python-dotenv tqdm "
            "tree_sitter==0.21.3 tree-sitter-java==0.21.0 tree-sitter-javascript==0.21.4"
        ) from exc
    module: types.ModuleType = bfcl_eval
    return module


def bfcl_module(name: str) -> Any:
    """A ``bfcl_eval`` submodule (``"utils"``, ``"eval_checker.ast_eval.ast_checker"``…)."""
    import importlib

    import_bfcl()
    return importlib.import_module(f"bfcl_eval.{name}")


# --------------------------------------------------------------------------------------------
# Entries


@dataclass
class BfclEntry:
    """One BFCL test entry, ready to run and score.

    ``functions`` are the docs the model sees (BFCL's language hints added, as its generation
    step does); ``checker_functions`` are the untouched docs its AST checker compares against.
    ``turns`` holds the user messages of each turn (one turn for single-turn categories; an
    empty turn in ``multi_turn_miss_func`` is where ``missed_functions[turn]`` get added).
    """

    id: str
    category: str
    turns: list[list[dict[str, Any]]]
    functions: list[dict[str, Any]]
    checker_functions: list[dict[str, Any]]
    ground_truth: list[Any] | None = None
    involved_classes: list[str] = field(default_factory=list)
    initial_config: dict[str, Any] = field(default_factory=dict)
    missed_functions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The entry as BFCL loads it for evaluation (what its multi-turn checker reads)."""

    @property
    def is_multi_turn(self) -> bool:
        """Whether the entry runs as a multi-turn conversation against BFCL's environments."""
        return "multi_turn" in self.category

    @property
    def is_relevance(self) -> bool:
        """Whether it is scored only by whether a call was made (irrelevance / relevance)."""
        return "relevance" in self.category

    @property
    def language(self) -> str:
        """``python``, ``java`` or ``javascript``: how BFCL type-checks arguments."""
        if self.category == "java":
            return "java"
        if self.category == "javascript":
            return "javascript"
        return "python"


def load_category(category: str, limit: int | None = None) -> list[BfclEntry]:
    """The entries of one v3 category (its first ``limit`` ones when given)."""
    if category not in V3_CATEGORIES:
        category = resolve_categories([category])[0]
    bfcl_name = V3_CATEGORIES[category]
    utils = bfcl_module("utils")
    raw_entries: list[dict[str, Any]] = utils.load_dataset_entry(
        bfcl_name, include_prereq=False, include_language_specific_hint=False
    )
    answers: list[dict[str, Any]] | None = None
    if "relevance" not in category:
        answers = utils.load_ground_truth_entry(bfcl_name)
        if answers is None or len(answers) != len(raw_entries):
            raise RuntimeError(
                f"bfcl-eval's {bfcl_name} answers do not line up with its questions "
                f"({len(answers or [])} vs {len(raw_entries)}); reinstall bfcl-eval."
            )
    if limit is not None:
        raw_entries = raw_entries[:limit]
        answers = answers[:limit] if answers is not None else None
    hinted = utils.add_language_specific_hint_to_function_doc(copy.deepcopy(raw_entries))
    entries: list[BfclEntry] = []
    for i, (raw, seen) in enumerate(zip(raw_entries, hinted, strict=True)):
        missed = {int(k): list(v) for k, v in seen.get("missed_function", {}).items()}
        entries.append(
            BfclEntry(
                id=raw["id"],
                category=category,
                turns=seen["question"],
                functions=seen["function"],
                checker_functions=raw["function"],
                ground_truth=answers[i]["ground_truth"] if answers is not None else None,
                involved_classes=list(raw.get("involved_classes", [])),
                initial_config=dict(raw.get("initial_config", {})),
                missed_functions=missed,
                raw=raw,
            )
        )
    return entries
