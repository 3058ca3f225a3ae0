"""The report of a recipe run: which artifacts passed, which failed and why, then the bench
tables, plots and transcripts that ``quantkit.benchmark.report`` writes from the results, and each
artifact's model card filled with its results."""

import re
from pathlib import Path

from quantkit.pipeline.recipe_schema import Recipe

STATUS = {
    "passed": "passed",
    "unvalidated": "unvalidated",  # no gate failed, but quality or smoke was not checked against the base
    "gate_failed": "FAILED gates",
    "failed": "FAILED",
    "pending": "not run",
}
BENCH_DIR = "bench-report"  # quantkit.benchmark.report's own folder inside the run folder


def status_section(summary, recipe: Recipe) -> str:
    source = f" ({recipe.model.source})" if recipe.model.source != "hf" else ""
    lines = [f"# quantkit run: {recipe.name}", "", f"Model: `{recipe.model.id}`{source}", ""]
    if summary.error:
        lines += [f"**Error:** {summary.error}", ""]
    lines += ["| artifact | method | status | stages | why |", "|---|---|---|---|---|"]
    for a in summary.artifacts:
        why = a.error or "; ".join(a.gate_failures or getattr(a, "unvalidated", [])) or ""
        stages = ", ".join(f"{k} {v}" for k, v in a.stages.items())
        lines.append(f"| {a.name} | {a.method} | {STATUS[a.status]} | {stages} | {why.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def bench_section(rows: list[dict], out_dir: Path) -> str:
    """quantkit.benchmark.report's Markdown, its title demoted and its plot links pointing into its folder."""
    if not rows:
        return ""
    from quantkit.benchmark.report import write_report

    text = Path(write_report(rows, out_dir / BENCH_DIR, fill_cards=False)).read_text()
    text = re.sub(r"^# .*$", "## Benchmarks", text, count=1, flags=re.M)
    return re.sub(r"!\[([^\]]*)\]\(([^)/:]+\.png)\)", rf"![\1]({BENCH_DIR}/\2)", text)


def fill_cards(summary) -> None:
    """Each artifact folder's card gets its results (both rows for a GGUF folder of two types)."""
    from quantkit.benchmark.report import fill_card
    from quantkit.core.manifest import CARD

    for a in summary.artifacts:
        if a.path and a.results and (Path(a.path) / CARD).is_file():
            fill_card(Path(a.path), a.results)


def write_run_report(summary, recipe: Recipe) -> Path:
    rows = [r for a in summary.artifacts for r in a.results]
    fill_cards(summary)
    text = status_section(summary, recipe) + "\n" + bench_section(rows, summary.out_dir)
    path = summary.out_dir / "report.md"
    path.write_text(text)
    return path
