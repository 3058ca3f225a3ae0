"""A card's measured results: one record per benchmarked file (``quantkit-results.json`` beside
the card), the Markdown table of them, and the Hub's ``model-index`` eval results."""

import json
from pathlib import Path

from quantkit.core import metrics
from quantkit.core.atomic import read_json, write_json
from quantkit.core.manifest import RESULTS_FILE, now_iso
from quantkit.core.verdict import VERDICT_CELL, reasons_of, verdict_of

# --- where the card's facts come from ---------------------------------------------------------


def result_record(result: dict, folder: Path, name: str | None = None) -> dict:
    """One bench result as the card keeps it: headline numbers and the machine, no local paths."""
    smoke = result.get("smoke")
    target = Path(result.get("artifact") or folder)
    file = target.name if target.is_file() or target.suffix == ".gguf" else None
    env = result.get("environment") or {}
    return {
        "name": name or file or folder.name,
        "file": file,
        "engine": result.get("engine"),
        "bits": result.get("bits"),
        "size_bytes": result.get("size_bytes"),
        "prompt_tokens": result.get("prompt_tokens"),
        "gen_tokens": result.get("gen_tokens"),
        "repetitions": result.get("repetitions"),
        **{  # every declared metric, flat (a quality metric's section dropped), with its spread when it has one
            key: m.of(result, key) for m in metrics.METRICS for key in (m.name, m.name + "_std")[: 1 + m.std]
        },
        "smoke": None if smoke is None else ("pass" if smoke.get("passed") else "fail"),
        "smoke_mode": None if smoke is None else smoke.get("mode", "chat"),
        "verdict": verdict_of(result),  # passed | failed | unvalidated
        "passed": verdict_of(result) == "passed",
        "unvalidated": reasons_of(result),
        "failures": list(result.get("failures") or []),
        "machine": {"cpu": env.get("cpu"), "device": env.get("device"), "threads": env.get("threads")},
    }


def read_results(folder: Path) -> list[dict] | None:
    """The results recorded beside the card; None when the artifact was never benchmarked."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return None
    data = read_json(path, hint="run quantkit bench / report again")
    return data.get("results") if isinstance(data, dict) else None


def write_results(folder: Path, records: list[dict]) -> None:
    write_json(Path(folder) / RESULTS_FILE, {"schema": 1, "written": now_iso(), "results": records}, ensure_ascii=False)


def results_table(rows: list[dict]) -> str:
    """One Markdown table, a row per benchmarked file (a column per metric declared for the card)."""
    shown = [m for m in metrics.METRICS if m.card]
    head = ["file", "engine", "bits", "size", *[m.label for m in shown], "smoke", "gates"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        smoke = row.get("smoke") or "-"
        if row.get("smoke_mode") == "completion":
            smoke += " (completion)"
        size = row.get("size_bytes")
        cells = [str(row["name"]), str(row.get("engine") or "-"), str(row.get("bits") or "-")]
        cells += ["-" if size is None else f"{size / 2**20:.1f} MiB", *[m.cell(row, flat=True) for m in shown]]
        lines.append("| " + " | ".join([*cells, smoke, VERDICT_CELL[verdict_of(row)]]) + " |")
    return "\n".join(lines)


def results_section(rows: list[dict] | None, base: str | None) -> str:
    if not rows:
        return "Not benchmarked yet: run `quantkit bench` on this folder."
    machines = {json.dumps(r.get("machine") or {}, sort_keys=True) for r in rows}
    lines = [results_table(rows), ""]
    for text in sorted(machines):
        m = json.loads(text)
        lines.append(
            f"Measured with `quantkit bench` on {m.get('cpu') or '?'} ({m.get('device') or '?'}, "
            f"{m.get('threads') or '?'} threads): pp{rows[0].get('prompt_tokens') or '?'} / "
            f"tg{rows[0].get('gen_tokens') or '?'}, {rows[0].get('repetitions') or '?'} repetitions; "
            f"quality teacher-forced against {f'`{base}`' if base else 'the base checkpoint'} "
            "on the same token ids."
        )
    failures = [f"{r['name']}: {f}" for r in rows for f in r.get("failures") or []]
    if failures:
        lines += ["", "Gate failures:", *[f"- {f}" for f in failures]]
    unvalidated = [f"{r['name']}: {w}" for r in rows if verdict_of(r) == "unvalidated" for w in reasons_of(r)]
    if unvalidated:
        lines += ["", "Unvalidated (no gate failed, but not checked against the base):", *[f"- {w}" for w in unvalidated]]
    return "\n".join(lines)


def eval_results(rows: list[dict], base: str | None):
    """The measured numbers as model-index entries (one per metric per file)."""
    from huggingface_hub import EvalResult

    found = []
    headline = sorted(metrics.METRICS, key=lambda m: m.section != "quality")  # quality first on the Hub's page
    for row in rows:
        for m in headline:
            if m.model_index is None or row.get(m.name) is None:
                continue
            metric_type, metric_name = m.model_index
            found.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type="quantkit/eval-text",
                    dataset_name=f"quantkit evaluation text vs {base or 'base'}",
                    metric_type=metric_type,
                    metric_value=row[m.name],
                    metric_name=f"{metric_name} ({row['name']})" if len(rows) > 1 else metric_name,
                    metric_config=row.get("file"),
                )
            )
    return found or None


# --- the card -----------------------------------------------------------------------------------
