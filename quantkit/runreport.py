"""The report of a recipe run: which artifacts passed, which failed and why, then the bench
tables and plots that ``quantkit.report`` draws from the results, and each model card filled."""

from pathlib import Path

from quantkit.recipe import Recipe

STATUS = {"passed": "passed", "gate_failed": "FAILED gates", "failed": "FAILED", "pending": "not run"}
COLUMNS = (("size MB", "size_bytes", 1 / 2**20), ("decode tok/s", "decode_tokens_per_s", 1),
           ("prefill tok/s", "prefill_tokens_per_s", 1), ("top-1", "quality.top1_agreement", 1),
           ("KLD", "quality.kld_mean", 1), ("PPL ratio", "quality.ppl_ratio", 1), ("smoke", "smoke.passed", None))


def cell(result: dict, key: str, scale) -> str:
    from quantkit.pipeline import get_metric

    value = get_metric(result, key)
    if value is None:
        return "-"
    if scale is None or isinstance(value, bool):
        return "pass" if value is True else "fail" if value is False else str(value)
    return f"{value * scale:.3g}" if isinstance(value, (int, float)) else str(value)


def results_table(results: list[dict]) -> str:
    head = "| artifact | " + " | ".join(c[0] for c in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for result in results:
        rows.append(f"| {result['name']} | " + " | ".join(cell(result, k, s) for _, k, s in COLUMNS) + " |")
    return "\n".join(rows)


def status_section(summary, recipe: Recipe) -> str:
    lines = [f"# quantkit run: {recipe.name}", "", f"Model: `{recipe.model.id}`" +
             (f" ({recipe.model.source})" if recipe.model.source != "hf" else ""), ""]
    if summary.error:
        lines += [f"**Error:** {summary.error}", ""]
    lines += ["| artifact | method | status | stages | why |", "|---|---|---|---|---|"]
    for a in summary.artifacts:
        why = a.error or "; ".join(a.gate_failures) or ""
        stages = ", ".join(f"{k} {v}" for k, v in a.stages.items())
        lines.append(f"| {a.name} | {a.method} | {STATUS[a.status]} | {stages} | {why.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def bench_section(rows: list[dict], out_dir: Path) -> str:
    """The report module's Markdown and plots when it can draw them; otherwise our own table."""
    if not rows:
        return ""
    try:
        from quantkit.report import write_report

        path = Path(write_report(rows, out_dir / "bench-report"))
        text = path.read_text()
        # Its plots sit beside its Markdown; keep the links working from report.md.
        rel = path.parent.relative_to(out_dir).as_posix()
        return text.replace("](", f"]({rel}/").replace(f"]({rel}/http", "](http")
    except ImportError:
        return "## Results\n\n" + results_table(rows) + "\n"


def fill_cards(summary) -> None:
    from quantkit.artifact import CARD, fill_card_results

    for a in summary.artifacts:
        if a.path and a.results and (Path(a.path) / CARD).is_file():
            fill_card_results(Path(a.path), results_table(a.results))


def write_run_report(summary, recipe: Recipe) -> Path:
    rows = [r for a in summary.artifacts for r in a.results]
    fill_cards(summary)
    text = status_section(summary, recipe) + "\n" + bench_section(rows, summary.out_dir)
    path = summary.out_dir / "report.md"
    path.write_text(text)
    return path
