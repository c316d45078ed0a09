"""The ``q3agent models`` command: the Qwen3 registry as a table."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from q3agent.qwen3.models import MODELS, registry_table

if TYPE_CHECKING:
    from rich.console import Console


_THINKING = {"hybrid": "hybrid", "non_thinking": "never", "thinking_only": "always"}


def _tokens(count: int) -> str:
    return f"{count // 1024}K"


def print_models_table(console: Console | None = None, *, gpu_memory_gb: float = 80.0) -> None:
    """Print every registry model with its size, attention shape, KV cost, GPUs and context.

    Model names are never cut: the table is compact enough for 100 columns, and on a
    narrower terminal the number columns fold while the names stay whole.
    """
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal and not os.environ.get("COLUMNS"):
            # piped or redirected with no width asked for: no terminal to fit, keep rows whole
            console = Console(highlight=False, width=max(console.width, 110))
    gpus_key = f"gpus_{gpu_memory_gb:g}gb"
    rows = registry_table(gpu_memory_gb)
    table = Table(
        title="Qwen3 models", title_justify="left", box=None, pad_edge=False, header_style="bold"
    )
    longest = max(len(row["name"]) for row in rows)
    table.add_column("Model", no_wrap=True, min_width=longest)
    for header in ("Params", "Lyr", "Heads", "Exp", "KV/tok", "bf16GB", "GPUs", "Context",
                   "Think"):  # fmt: skip
        table.add_column(header, justify="left" if header == "Think" else "right",
                         overflow="fold")  # fmt: skip
    for spec, row in zip(MODELS, rows, strict=True):
        params = f"{row['params_b']:g}"
        if spec.is_moe:
            params += f"/{row['active_b']:g}"
        context = _tokens(spec.native_context)
        if spec.yarn_context:
            context += f"/{_tokens(spec.yarn_context)}"
        table.add_row(
            row["name"],
            params,
            str(row["layers"]),
            row["heads"],
            row["experts"],
            f"{row['kv_kib_per_token']:g}",
            f"{row['bf16_gb']:.1f}",
            str(row[gpus_key]),
            context,
            _THINKING[row["thinking"]],
        )
    console.print(table)
    console.print(
        "Hugging Face ids: Qwen/<model>. Params: billions, total/active for MoE models. Lyr: "
        "layers; heads: query/KV; Exp: experts active/total; KV/tok: KV-cache KiB per token. "
        "Context: native/with YaRN. Think: hybrid switches per request; never (capability "
        "non_thinking); always (thinking_only). GPUs: 80 GB GPUs for bf16 weights plus the KV "
        "cache of one native-context sequence within 90% of each GPU's memory, rounded up to "
        "a tensor-parallel size (1, 2, 4, 8, then multiples of 8). Sampling presets: thinking "
        "T=0.6 top-p 0.95 top-k 20; non-thinking T=0.7 top-p 0.8 top-k 20 presence penalty 1.5.",
        style="dim",
    )
