"""Reports from bench results (the dicts of ``BenchResult.to_dict()``): a Markdown summary with PNG
plots (size vs decode tokens/s, size vs KLD), the merged JSON, and each artifact's model card
results section."""

import json
from pathlib import Path

from quantkit.core import metrics
from quantkit.core.atomic import atomic_dir, read_json
from quantkit.core.errors import InputError
from quantkit.core.manifest import CARD
from quantkit.core.verdict import VERDICT_CELL, reasons_of, verdict_of

REPORT = "report.md"
HEAD = ("artifact", "engine", "bits", "size")
TAIL = ("smoke", "verdict")


def columns() -> list[str]:
    """The table's header: a column per metric declared for the report (quantkit.core.metrics)."""
    return [*HEAD, *[m.short or m.label for m in metrics.METRICS if m.report], *TAIL]


def load_results(paths: list[str | Path]) -> list[dict]:
    """Bench results from JSON files and folders (searched for ``*.json`` holding kind=bench)."""
    results = []
    for path in map(Path, paths):
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        if not path.exists():
            raise InputError(f"{path} does not exist")
        for file in files:
            data = read_json(file, default=None) if path.is_dir() else read_json(file)
            if data is None:
                continue  # other JSON in a results folder is not ours
            items = data if isinstance(data, list) else [data]
            results += [item for item in items if isinstance(item, dict) and item.get("kind") == "bench"]
    if not results:
        raise InputError("no bench results found", hint="write them with: quantkit bench ARTIFACT --json FILE")
    return results


def fmt(value, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}{suffix}"


def label(result: dict) -> str:
    """A recipe's name for the artifact when the pipeline gave one, else its file/folder name."""
    return str(result.get("name") or Path(result.get("artifact", "?")).name)


def row(result: dict) -> list[str]:
    smoke = result.get("smoke")
    return [
        label(result),
        result["engine"],
        str(result.get("bits", "-")),
        fmt(result["size_bytes"] / 2**20, 1, suffix=" MiB"),
        *[m.cell(result) for m in metrics.METRICS if m.report],
        "-" if smoke is None else smoke_verdict(smoke),
        VERDICT_CELL[verdict_of(result)],
    ]


def smoke_verdict(smoke: dict) -> str:
    return ("pass" if smoke["passed"] else "FAIL") + (" (completion)" if smoke.get("mode") == "completion" else "")


def table(results: list[dict]) -> str:
    head = columns()
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines)


def results_markdown(result: dict) -> str:
    """One artifact's results, for its model card."""
    env = result.get("environment", {})
    lines = [
        table([result]),
        "",
        f"Measured with `quantkit bench` on {env.get('cpu', '?')} ({env.get('device', '?')}, "
        f"{env.get('threads', '?')} threads): pp{result['prompt_tokens']} / tg{result['gen_tokens']}, "
        f"{result['repetitions']} repetitions; quality teacher-forced against `{result.get('base') or 'no base'}`.",
    ]
    if result.get("failures"):
        lines += ["", "Gate failures:", *[f"- {f}" for f in result["failures"]]]
    elif verdict_of(result) == "unvalidated":
        lines += ["", "Unvalidated (no gate failed, but not checked against its base):", *[f"- {w}" for w in reasons_of(result)]]
    return "\n".join(lines)


def cell(text: str) -> str:
    """Text for one Markdown table cell: control tokens stay visible (HTML-escaped), no code spans,
    newlines as <br>."""
    import html

    return html.escape(text.strip()).replace("|", "&#124;").replace("`", "&#96;").replace("\n", "<br>") or "*(empty)*"


def smoke_section(smoke: dict) -> list[str]:
    """The smoke's transcript: side by side with the base's, turn by turn, when judged against it."""
    title = (smoke.get("title") or "smoke chat").capitalize()
    base = smoke.get("base")
    if not base:
        return [f"{title} transcript (no base to compare with):", "", "```text", smoke.get("transcript", ""), "```", ""]
    completion = smoke.get("mode") == "completion"
    lines = [
        f"{title}, the artifact's replies beside the base's (greedy; a defect counts only where the "
        "base does not show it on the same turn):",
        "",
        f"| # | {'prompt' if completion else 'user'} | artifact | base |",
        "|---|---|---|---|",
    ]
    base_turns = base.get("turns") or []
    for i, turn in enumerate(smoke.get("turns") or []):
        other = base_turns[i] if i < len(base_turns) else {}
        replies = [
            cell(t.get("reply", "")) + (f"<br>**{cell('; '.join(t['problems']))}**" if t.get("problems") else "")
            for t in (turn, other)
        ]
        lines.append(f"| {i + 1} | {cell(turn.get('user', ''))} | {replies[0]} | {replies[1]} |")
    if smoke.get("excused"):
        lines += ["", "Shown by the base too (not counted):", *[f"- {e}" for e in smoke["excused"]]]
    return lines + [""]


def plot(results: list[dict], y_key, y_label: str, file: Path, log_y: bool = False) -> bool:
    """Scatter of size (MiB) against one metric; False when no result has it."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    points = [(r["size_bytes"] / 2**20, y_key(r), label(r)) for r in results]
    points = [p for p in points if p[1] is not None]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    for x, y, text in points:
        ax.annotate(text, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("size on disk (MiB)")
    ax.set_ylabel(y_label)
    if log_y and all(p[1] > 0 for p in points):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(file)
    plt.close(fig)
    return True


def write_report(results: list[dict], out_dir: str | Path, fill_cards: bool = True) -> Path:
    """Write report.md, results.json and the plots into ``out_dir``; fill each artifact's card.
    Returns the path of report.md."""
    if not results:
        raise InputError("no results to report")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=True) as staging:
        (staging / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        plots = []
        if plot(results, lambda r: r["decode_tokens_per_s"], "decode tokens/s", staging / "size_vs_decode.png"):
            plots.append(("Size vs decode speed", "size_vs_decode.png"))
        if plot(
            results,
            lambda r: (r.get("quality") or {}).get("kld_mean"),
            "mean KLD vs base (log)",
            staging / "size_vs_kld.png",
            log_y=True,
        ):
            plots.append(("Size vs KL divergence", "size_vs_kld.png"))
        parts = ["# quantkit report", "", table(results), ""]
        parts += [f"![{title}]({name})\n" for title, name in plots]
        from quantkit.benchmark.serving import serving_markdown

        parts += serving_markdown(results, label)  # bench --engine llama-server: the deployment engine's rows
        for result in results:
            parts += [f"## {label(result)}", ""]
            if result.get("failures"):
                parts += ["Gate failures:", *[f"- {f}" for f in result["failures"]], ""]
            elif verdict_of(result) == "unvalidated":
                parts += ["Unvalidated: " + "; ".join(reasons_of(result)), ""]
            if result.get("smoke"):
                parts += smoke_section(result["smoke"])
        (staging / REPORT).write_text("\n".join(parts))
    if fill_cards:
        for folder, rows in card_folders(results).items():
            fill_card(folder, rows)
    return out_dir.resolve() / REPORT


def fill_card(folder: Path, results: list[dict]) -> None:
    """Record an artifact's results beside its card (``quantkit-results.json``, what ``quantkit
    push`` publishes from) and put them in the card: one table, a row per file, and the header's
    model-index. No local path is kept: files by name, the base by its hub id."""
    from quantkit.core.card import refill
    from quantkit.core.card_results import result_record, write_results
    from quantkit.core.manifest import read_manifest

    records = [result_record(r, Path(folder)) for r in results]
    write_results(folder, records)
    refill(folder, read_manifest(folder) or {}, records)


def card_folders(results: list[dict]) -> dict[Path, list[dict]]:
    """Artifact folders with a model card -> their results (a multi-type GGUF folder gets one
    row per .gguf file benched)."""
    from quantkit.core.manifest import MANIFEST

    folders: dict[Path, list[dict]] = {}
    for result in results:
        path = Path(result.get("artifact", ""))
        folder = path if path.is_dir() else path.parent if (path.parent / MANIFEST).is_file() else None
        if folder is not None and (folder / CARD).is_file():
            folders.setdefault(folder, []).append(result)
    return folders
