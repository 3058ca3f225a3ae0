"""``quantkit run --dry-run``: the plan of a recipe, stage by stage, with what each will cost and
whether a previous run already did it, plus the preflight that config.json alone can answer."""

from dataclasses import dataclass
from pathlib import Path

from quantkit.core.estimate import Cost, bench_cost, download_cost, find_config, quantize_cost
from quantkit.core.modelinfo import text_config
from quantkit.pipeline.recipe_schema import ArtifactSpec, Recipe, settings_key


@dataclass
class PlanRow:
    stage: str  # model | quantize | bench
    artifact: str | None
    action: str  # run | skip (up to date) | blocked
    cost: Cost | None
    note: str = ""


def preflight(recipe: Recipe, spec: ArtifactSpec, config: dict) -> str | None:
    """Why ``spec`` cannot work on this model, from config.json alone (None: no objection)."""
    from quantkit.quantize.registry import get_method

    verdict = get_method(spec.method).supports(config)
    if verdict:
        return verdict
    cfg = text_config(config)
    if config.get("auto_map") and not recipe.model.trust_remote_code:
        return "the model ships its own code (auto_map): set model.trust_remote_code: true to allow it"
    if spec.method == "awq":
        group = spec.group_size or 128
        for key in ("hidden_size", "intermediate_size"):
            width = cfg.get(key)
            if width and width % group:
                return f"group_size {group} does not divide {key} {width}: choose a divisor"
    return None


def device_of(recipe: Recipe, spec: ArtifactSpec | None = None) -> str:
    wanted = spec.device if spec else recipe.bench.device
    if wanted == "auto":
        wanted = "cuda" if recipe.runner == "gpu" else "cpu"
    return wanted


def plan(recipe: Recipe, specs: list[ArtifactSpec], out_dir: Path, force: bool) -> list[PlanRow]:
    from quantkit.pipeline.stages import Stages, bench_settings, model_settings, quantize_settings

    stages = Stages(out_dir)
    config, found = find_config(recipe.model.id, recipe.model.source, recipe.model.revision, recipe.model.local_config)

    def action(stage: str, settings: dict) -> str:
        return "skip" if not force and stages.matches(stage, settings_key(settings)) else "run"

    local = recipe.model.id.startswith("bundled:") or Path(recipe.model.id).expanduser().is_dir()
    rows = [PlanRow("model", None, action("model", model_settings(recipe)),
                    download_cost(config, local) if config else None, f"config: {found}")]
    for spec in specs:
        problem = preflight(recipe, spec, config) if config else None
        if problem:
            rows.append(PlanRow("quantize", spec.name, "blocked", None, problem))
            continue
        q_action = action(f"{spec.name}.quantize", quantize_settings(recipe, spec))
        b_action = action(f"{spec.name}.bench", bench_settings(recipe, spec))
        if q_action == "run":
            b_action = "run"  # a rebuilt artifact is benched again
        q_note = spec.method + (f" {spec.format}" if spec.format else "") + (f" {'+'.join(spec.gguf_types)}" if spec.gguf_types else "")
        rows.append(PlanRow("quantize", spec.name, q_action,
                            quantize_cost(config, spec, device_of(recipe, spec)) if config else None, q_note))
        rows.append(PlanRow("bench", spec.name, b_action,
                            bench_cost(config, spec, recipe.bench, device_of(recipe)) if config else None,
                            bench_note(recipe, spec)))
    return rows


def bench_note(recipe: Recipe, spec: ArtifactSpec) -> str:
    b = recipe.bench
    note = f"pp{b.prompt_tokens} tg{b.gen_tokens} x{b.repetitions}"
    if device_of(recipe) == "cuda" and (b.quality or b.smoke):
        note += "; GPU peak: the base's bf16 reference, unless cached"  # one model at a time, the base first
    if spec.method == "awq" and (spec.format or "compressed-tensors") == "compressed-tensors":
        note += "; runs dense (dequantized) in transformers"
    return note


def blocked(rows: list[PlanRow]) -> list[PlanRow]:
    return [row for row in rows if row.action == "blocked"]
