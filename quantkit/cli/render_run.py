"""Tables for ``quantkit run``: the dry-run plan and the final summary (presentation only)."""

from rich.table import Table

from quantkit.cli.render import console
from quantkit.core.modelinfo import human_size


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_table(rows) -> None:
    table = Table(title="plan (rough estimates)")
    for col in ("stage", "artifact", "action", "peak RAM", "peak GPU", "disk", "time", "note"):
        table.add_column(col)
    for row in rows:
        cost = row.cost
        gpu = (human_size(cost.gpu_bytes) if cost.gpu_bytes else "-") if cost else "?"
        cells = (human_size(cost.memory_bytes), gpu, human_size(cost.disk_bytes), duration(cost.seconds)) if cost else ("?",) * 4
        style = {"skip": "dim", "n/a": "dim", "blocked": "red"}.get(row.action)
        action = "skip (up to date)" if row.action == "skip" else row.action
        table.add_row(row.stage, row.artifact or "-", action, *cells, row.note, style=style)
    console.print(table)


def summary_table(summary) -> None:
    table = Table(title=f"run {summary.recipe}")
    for col in ("artifact", "method", "status", "stages", "why"):
        table.add_column(col)
    for a in summary.artifacts:
        style = {"passed": "green", "unvalidated": "yellow"}.get(a.status, "red")
        why = a.error or "; ".join(a.gate_failures or a.unvalidated)
        table.add_row(a.name, a.method, a.status, ", ".join(f"{k} {v}" for k, v in a.stages.items()), why, style=style)
    console.print(table)
