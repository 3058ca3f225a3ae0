"""``quantkit run --dry-run``: the plan of a recipe, stage by stage, with what each will cost and
whether a previous run already did it, plus the preflight that config.json alone can answer."""

from dataclasses import dataclass
from pathlib import Path

from quantkit.core.estimate import Cost, bench_cost, download_cost, find_config, quantize_cost
from quantkit.pipeline.recipe_schema import ArtifactSpec, Recipe, settings_key
from quantkit.quantization.registry import get_method


@dataclass
class PlanRow:
    stage: str  # model | quantize | bench | serving
    artifact: str | None
    action: str  # run | skip (up to date) | blocked | n/a (a serving engine that does not run the format)
    cost: Cost | None
    note: str = ""


def preflight(recipe: Recipe, spec: ArtifactSpec, config: dict) -> str | None:
    """Why ``spec`` cannot work on this model, from config.json alone (None: no objection)."""
    from quantkit.core.errors import QuantkitError

    method = get_method(spec.method)
    verdict = method.supports(config)
    if verdict:
        return verdict
    if config.get("auto_map") and not recipe.model.trust_remote_code:
        return "the model ships its own code (auto_map): set model.trust_remote_code: true to allow it"
    try:
        method.check_config(config, spec.options)  # the very check quantize runs (AWQ's group fallback, ...)
    except QuantkitError as exc:
        return str(exc)
    return None


def device_of(recipe: Recipe, spec: ArtifactSpec | None = None) -> str:
    wanted = spec.device if spec else recipe.bench.device
    if wanted == "auto":
        wanted = "cuda" if recipe.runner == "gpu" else "cpu"
    return wanted


def plan(recipe: Recipe, specs: list[ArtifactSpec], out_dir: Path, force: bool) -> list[PlanRow]:
    from quantkit.pipeline.serving import serving_settings
    from quantkit.pipeline.stages import Stages, bench_settings, model_settings, quantize_settings

    stages = Stages(out_dir)
    config, found = find_config(recipe.model.id, recipe.model.source, recipe.model.revision, recipe.model.local_config)

    def action(stage: str, settings: dict) -> str:
        return "skip" if not force and stages.matches(stage, settings_key(settings)) else "run"

    local = recipe.model.id.startswith("bundled:") or Path(recipe.model.id).expanduser().is_dir()
    rows = [
        PlanRow(
            "model",
            None,
            action("model", model_settings(recipe)),
            download_cost(config, local) if config else None,
            f"config: {found}",
        )
    ]
    calibrated: dict[str, str] = {}  # calibration key -> the first artifact made from it
    for spec in specs:
        problem = preflight(recipe, spec, config) if config else None
        if problem:
            rows.append(PlanRow("quantize", spec.name, "blocked", None, problem))
            continue
        q_action = action(f"{spec.name}.quantize", quantize_settings(recipe, spec))
        b_action = action(f"{spec.name}.bench", bench_settings(recipe, spec))
        if q_action == "run":
            b_action = "run"  # a rebuilt artifact is benched again
        footprint = get_method(spec.method).footprint(spec.options)
        fmt, types = getattr(spec.options, "format", None), getattr(spec.options, "gguf_types", [])
        q_note = spec.method + (f" {fmt}" if fmt else "") + (f" {'+'.join(types)}" if types else "")
        q_cost = quantize_cost(config, footprint, device_of(recipe, spec)) if config else None
        if q_cost and q_cost.gpu_bytes:
            q_note += verification_note(config, footprint, q_cost)
        if q_cost and (first := calibrated.get(calibration_key(spec))):
            q_cost, q_note = repack_cost(q_cost), q_note + f" (repack of {first}'s calibration)"
        calibrated.setdefault(calibration_key(spec), spec.name)
        rows.append(PlanRow("quantize", spec.name, q_action, q_cost, q_note))
        rows.append(
            PlanRow(
                "bench",
                spec.name,
                b_action,
                bench_cost(config, footprint, recipe.bench, device_of(recipe)) if config else None,
                bench_note(recipe, spec, footprint),
            )
        )
        s_action = "run" if b_action == "run" else action(f"{spec.name}.serving", serving_settings(recipe, spec))
        rows += [serving_row(recipe, spec, engine, config, footprint, s_action) for engine in recipe.serving.serving]
    return rows


def serving_row(recipe: Recipe, spec: ArtifactSpec, engine: str, config: dict | None, footprint, s_action: str) -> PlanRow:
    """One deployment engine's load test of the artifact, priced per device: a server that takes
    tensor/pipeline-parallel sizes splits the weights and the KV cache over tp x pp GPUs (vLLM
    shards each layer over tp and the layers over pp), so each holds 1/(tp x pp) of both."""
    from quantkit.core.estimate import DECODE_BANDWIDTH, DISK_BYTES_PER_S, LIBRARY_ALLOWANCE_BYTES, artifact_bytes, kv_cache_bytes
    from quantkit.core.estimate_gpu import CUDA_OVERHEAD_BYTES
    from quantkit.core.modelinfo import human_size
    from quantkit.engines.servers import SERVERS
    from quantkit.quantization.registry import format_facts

    s, entry = recipe.serving, SERVERS[engine]
    facts = format_facts(spec.method, getattr(spec.options, "format", None))
    if facts is not None and entry.runtime not in facts.runtimes:
        return PlanRow("serving", spec.name, "n/a", None, f"{engine} does not run it (it loads in {', '.join(facts.runtimes)})")
    gpus = s.gpus if entry.parallel_sizes else 1
    levels = f"c={','.join(map(str, sorted(set(s.concurrency))))} x{s.num_requests} requests of {s.max_tokens} tokens"
    if not config:
        return PlanRow("serving", spec.name, s_action, None, f"{engine} {levels}")
    weights = max(artifact_bytes(config, footprint, i) for i in range(len(footprint.bits)))
    # The load test's sequences: one slot per concurrent request, the prompt set plus the reply.
    kv = kv_cache_bytes(config, max(s.concurrency) * max(512, s.max_tokens + 256))
    device = device_of(recipe)
    per_gpu = -(-weights // gpus) + -(-kv // gpus)
    seconds = (
        weights / DISK_BYTES_PER_S
        + 30
        + len(set(s.concurrency)) * s.num_requests * s.max_tokens * per_gpu / DECODE_BANDWIDTH[device]
    )
    note = f"{engine} {levels}"
    if gpus > 1:
        note += (
            f"; tp{s.tensor_parallel} x pp{s.pipeline_parallel} = {gpus} GPUs, each {human_size(per_gpu)}: "
            f"weights {human_size(weights)}/{gpus} + KV cache {human_size(kv)}/{gpus}"
        )
    if device == "cuda":
        return PlanRow(
            "serving", spec.name, s_action, Cost(LIBRARY_ALLOWANCE_BYTES, 0, seconds, per_gpu + CUDA_OVERHEAD_BYTES), note
        )
    return PlanRow("serving", spec.name, s_action, Cost(weights + kv + LIBRARY_ALLOWANCE_BYTES, 0, seconds), note)


def calibration_key(spec: ArtifactSpec) -> str:
    """Artifacts of one calibration in different formats share this (AWQ's cache reuses it)."""
    settings = spec.quantize_settings()
    settings.pop("format", None)
    return settings_key(settings)


def repack_cost(cost: Cost) -> Cost:
    """A format repacked from a cached calibration: a copy of the weights, no calibration."""
    return Cost(cost.memory_bytes // 4, cost.disk_bytes, cost.disk_bytes / 300e6 + 5, 0)


def verification_note(config: dict, footprint, cost: Cost) -> str:
    """What the quantize stage's GPU peak is: verification's base on the GPU when it is the
    larger, and what quantizing alone needs (verification moves to RAM when the GPU is smaller)."""
    from quantkit.core.estimate import quantize_need
    from quantkit.core.modelinfo import human_size

    alone = quantize_need(config, footprint, "cuda", verify_on="cpu")
    if alone.gpu_bytes >= cost.gpu_bytes:
        return ""
    return (
        f"; GPU peak: verification (bf16 base, then the artifact); quantizing alone {human_size(alone.gpu_bytes)} "
        f"on the GPU, with verification in RAM ({human_size(alone.ram_bytes)}) when the GPU is smaller"
    )


def bench_note(recipe: Recipe, spec: ArtifactSpec, footprint) -> str:
    b = recipe.bench
    note = f"pp{b.prompt_tokens} tg{b.gen_tokens} x{b.repetitions}"
    if device_of(recipe) == "cuda" and (b.quality or b.smoke):
        note += "; GPU peak: the base's bf16 reference, unless cached"  # one model at a time, the base first
    if footprint.dense_runtime:
        note += "; runs dense (dequantized) in transformers"
    return note


def blocked(rows: list[PlanRow]) -> list[PlanRow]:
    return [row for row in rows if row.action == "blocked"]
