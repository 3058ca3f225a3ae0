"""A card's measured results: one record per benchmarked file (``quantkit-results.json`` beside
the card), the Markdown table of them, and the Hub's ``model-index`` eval results."""

import json
from pathlib import Path

from quantkit.core.atomic import read_json, write_json
from quantkit.core.manifest import RESULTS_FILE, now_iso
from quantkit.core.verdict import VERDICT_CELL, reasons_of, verdict_of

METRICS = (
    ("kld_mean", "kl_divergence", "mean KL divergence vs base"),
    ("top1_agreement", "top1_agreement", "same top token as base"),
    ("ppl_ratio", "perplexity_ratio", "perplexity ratio vs base"),
    ("bits_per_weight", "bits_per_weight", "bits per weight (whole file)"),
    ("prefill_tokens_per_s", "prompt_tokens_per_second", "prompt tokens/s"),
    ("decode_tokens_per_s", "generated_tokens_per_second", "generated tokens/s"),
)


# --- where the card's facts come from ---------------------------------------------------------


def result_record(result: dict, folder: Path, name: str | None = None) -> dict:
    """One bench result as the card keeps it: headline numbers and the machine, no local paths."""
    quality, smoke = result.get("quality") or {}, result.get("smoke")
    target = Path(result.get("artifact") or folder)
    file = target.name if target.is_file() or target.suffix == ".gguf" else None
    env = result.get("environment") or {}
    return {
        "name": name or file or folder.name,
        "file": file,
        "engine": result.get("engine"),
        "bits": result.get("bits"),
        "size_bytes": result.get("size_bytes"),
        "bits_per_weight": result.get("bits_per_weight"),
        "prompt_tokens": result.get("prompt_tokens"),
        "gen_tokens": result.get("gen_tokens"),
        "repetitions": result.get("repetitions"),
        "prefill_tokens_per_s": result.get("prefill_tokens_per_s"),
        "prefill_tokens_per_s_std": result.get("prefill_tokens_per_s_std"),
        "decode_tokens_per_s": result.get("decode_tokens_per_s"),
        "decode_tokens_per_s_std": result.get("decode_tokens_per_s_std"),
        "ttft_ms": result.get("ttft_ms"),
        "peak_rss_mb": result.get("peak_rss_mb"),
        "kld_mean": quality.get("kld_mean"),
        "kld_p99": quality.get("kld_p99"),
        "top1_agreement": quality.get("top1_agreement"),
        "ppl_ratio": quality.get("ppl_ratio"),
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


def _fmt(value, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}{suffix}"


def _speed(row: dict, key: str) -> str:
    return f"{_fmt(row.get(key), 1)} ± {_fmt(row.get(key + '_std'), 1)}"


def results_table(rows: list[dict]) -> str:
    """One Markdown table, a row per benchmarked file."""
    head = [
        "file",
        "engine",
        "bits",
        "size",
        "bits/weight",
        "pp tok/s",
        "tg tok/s",
        "KLD mean",
        "top-1",
        "PPL ratio",
        "smoke",
        "gates",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        smoke = row.get("smoke") or "-"
        if row.get("smoke_mode") == "completion":
            smoke += " (completion)"
        size = row.get("size_bytes")
        lines.append(
            "| "
            + " | ".join(
                [
                    str(row["name"]),
                    str(row.get("engine") or "-"),
                    str(row.get("bits") or "-"),
                    "-" if size is None else f"{size / 2**20:.1f} MiB",
                    _fmt(row.get("bits_per_weight")),
                    _speed(row, "prefill_tokens_per_s"),
                    _speed(row, "decode_tokens_per_s"),
                    _fmt(row.get("kld_mean"), 4),
                    _fmt(row.get("top1_agreement"), 1, 100, "%"),
                    _fmt(row.get("ppl_ratio"), 3),
                    smoke,
                    VERDICT_CELL[verdict_of(row)],
                ]
            )
            + " |"
        )
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
    for row in rows:
        for key, metric_type, metric_name in METRICS:
            if row.get(key) is None:
                continue
            found.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type="quantkit/eval-text",
                    dataset_name=f"quantkit evaluation text vs {base or 'base'}",
                    metric_type=metric_type,
                    metric_value=row[key],
                    metric_name=f"{metric_name} ({row['name']})" if len(rows) > 1 else metric_name,
                    metric_config=row.get("file"),
                )
            )
    return found or None


# --- the card -----------------------------------------------------------------------------------
