"""The ``q3agent models`` command: the Qwen3 registry as a table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from q3agent.qwen3.models import registry_table

if TYPE_CHECKING:
    from rich.console import Console


def print_models_table(console: Console, *, gpu_memory_gb: float = 80.0) -> None:
    """Print every registry model with its size, attention shape, KV cost, GPUs and context."""
    from rich.table import Table

    gpus_key = f"gpus_{gpu_memory_gb:g}gb"
    table = Table(title="Qwen3 models", title_justify="left")
    for header, justify in (
        ("Model", "left"),
        ("Params (B)", "right"),
        ("Active (B)", "right"),
        ("Layers", "right"),
        ("Heads q/kv", "right"),
        ("Experts", "right"),
        ("KV KiB/token", "right"),
        ("bf16 GB", "right"),
        (f"GPUs @{gpu_memory_gb:g}GB", "right"),
        ("Context", "right"),
        ("Thinking", "left"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in registry_table(gpu_memory_gb):
        table.add_row(
            row["name"],
            f"{row['params_b']:g}",
            f"{row['active_b']:g}",
            str(row["layers"]),
            row["heads"],
            row["experts"],
            f"{row['kv_kib_per_token']:g}",
            f"{row['bf16_gb']:.1f}",
            str(row[gpus_key]),
            row["context"],
            row["thinking"],
        )
    console.print(table)
    console.print(
        "Hugging Face ids: Qwen/<model>. GPUs: bf16 weights plus the KV cache of one "
        "native-context sequence within 90% of each GPU's memory, rounded up to a "
        "tensor-parallel size (1, 2, 4, 8, then multiples of 8). Sampling presets: thinking "
        "T=0.6 top-p 0.95 top-k 20; non-thinking T=0.7 top-p 0.8 top-k 20 presence penalty 1.5.",
        style="dim",
    )
