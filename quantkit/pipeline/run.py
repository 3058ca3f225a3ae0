"""``run(recipe)``: model -> every artifact -> bench (speed, smoke chat, quality) -> gates -> report.

Resumable by stage. Each finished stage leaves a record in ``OUT/stages/`` holding the hash of
the settings that produced it; a rerun skips a stage whose output exists and whose record matches,
so changing one artifact's setting redoes that artifact only, and a bench setting redoes benches
only. Gates and the report are recomputed every time (they are instant). One artifact failing
does not stop the others; the summary, ``results.json`` and the report say which failed and why.

Layout of OUT: ``artifacts/NAME/`` (the quantize output), ``bench/NAME.json``, ``stages/*.json``,
``results.json``, ``report.md`` (+ plots).
"""

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from quantkit.benchmark.gates import Gates
from quantkit.core import events
from quantkit.core.atomic import read_json, write_json
from quantkit.core.errors import GateFailed, QuantkitError
from quantkit.pipeline.recipe_schema import ArtifactSpec, Recipe, settings_key
from quantkit.pipeline.stages import Stages, bench_settings, model_settings, quantize_settings  # noqa: F401  (re-exported for tests)

LOG = events.logger("run")


def say(line: str) -> None:
    """A stage line of the run (``[bench nf4] done in 12s``): the CLI shows it on the terminal."""
    events.stage(LOG, "run", line)


@dataclass
class ArtifactOutcome:
    name: str
    method: str
    status: str = "pending"  # passed | unvalidated | gate_failed | failed
    path: str | None = None
    failed_stage: str | None = None
    error: str | None = None
    gate_failures: list[str] = field(default_factory=list)
    unvalidated: list[str] = field(default_factory=list)  # why it is not validated though no gate failed
    stages: dict[str, str] = field(default_factory=dict)  # stage -> done | skipped | failed
    results: list[dict] = field(default_factory=list)  # one bench result per target (GGUF type)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time when it was built
    pushed: str | None = None  # the repo URL when the recipe's push: published it


@dataclass
class RunSummary:
    recipe: str
    out_dir: Path
    artifacts: list[ArtifactOutcome] = field(default_factory=list)
    plan: list = field(default_factory=list)  # dry run: PlanRow list
    report: Path | None = None
    error: str | None = None  # a failure before any artifact (e.g. the model stage)

    @property
    def failed(self) -> list[ArtifactOutcome]:
        return [a for a in self.artifacts if a.status != "passed"]

    @property
    def verdict(self) -> str:
        """failed (a stage or a gate failed), unvalidated (some artifact was never compared with
        its base: exit 0 all the same) or passed."""
        if self.exit_code:
            return "failed"
        return "unvalidated" if any(a.status == "unvalidated" for a in self.artifacts) else "passed"

    @property
    def exit_code(self) -> int:
        """0 all passed; 3 (GateFailed) when only gates failed; 1 when a stage failed."""
        if self.error or any(a.status == "failed" for a in self.artifacts):
            return 1
        if any(a.status == "gate_failed" for a in self.artifacts):
            return GateFailed.exit_code
        return 0


# --- the stages ------------------------------------------------------------------------------


def stage_model(recipe: Recipe, stages: Stages, force: bool) -> Path:
    """Resolve the model to a local folder (download / materialize, both cached by their own code)."""
    from quantkit.hub.model_ref import resolve_model

    settings = model_settings(recipe)
    key = settings_key(settings)
    record = None if force else stages.matches("model", key)
    if record and Path(record["path"]).is_dir():
        say(f"[model] {recipe.model.id}: skipped (up to date: {record['path']})")
        return Path(record["path"])
    say(f"[model] {recipe.model.id}: resolving...")
    started = time.time()
    path = resolve_model(recipe.model.id, source=recipe.model.source, revision=recipe.model.revision)
    stages.record("model", key, settings, path=str(path), seconds=round(time.time() - started, 1))
    say(f"[model] {recipe.model.id}: done in {time.time() - started:.0f}s ({path})")
    return path


def quantize_options(recipe: Recipe, spec: ArtifactSpec):
    """The artifact's settings with the model's trust_remote_code (a recipe sets it once, on the model)."""
    return replace(spec.options, trust_remote_code=recipe.model.trust_remote_code)


def stage_quantize(
    recipe: Recipe, spec: ArtifactSpec, model_dir: Path, out_dir: Path, stages: Stages, force: bool
) -> tuple[Path, bool]:
    """The artifact folder, and whether it was (re)built."""
    from quantkit.core.manifest import MANIFEST
    from quantkit.quantization.quantize import quantize

    settings = quantize_settings(recipe, spec)
    key = settings_key(settings)
    final = out_dir / "artifacts" / spec.name
    stage = f"{spec.name}.quantize"
    if not force and stages.matches(stage, key) and (final / MANIFEST).is_file():
        say(f"[quantize {spec.name}] skipped (up to date: {final})")
        return final, False
    stages.forget(stage)
    say(f"[quantize {spec.name}] {spec.method}...{stages.expected('quantize', spec.name)}")
    started = time.time()
    quantize(model_dir, spec.method, final, quantize_options(recipe, spec), overwrite=True)
    stages.record(stage, key, settings, artifact=str(final), seconds=round(time.time() - started, 1))
    say(f"[quantize {spec.name}] done in {time.time() - started:.0f}s")
    return final, True


def bench_targets(spec: ArtifactSpec, artifact: Path) -> list[tuple[str, Path]]:
    """What to bench: the folder, or each .gguf file when one entry made several GGUF types."""
    ggufs = sorted(artifact.glob("*.gguf"))
    if len(ggufs) > 1:
        # The gguf method names its files NAME-TYPE.gguf: label each by its type.
        return [(f"{spec.name}/{path.stem.rsplit('-', 1)[-1]}", path) for path in ggufs]
    return [(spec.name, artifact)]


def bench_one(target: Path, base: Path, recipe: Recipe, force: bool = False) -> dict:
    """The seam to the bench module: one artifact (folder or .gguf) -> its results dict.
    Orchestration tests replace this to keep the pipeline's own logic fast to test.
    ``force`` (the artifact's ``force: true``) skips the bench's memory preflight."""
    from quantkit.benchmark.bench import bench, release_memory

    options = replace(recipe.bench, force=force)
    release_memory(options.device)  # what the quantize stage (or the previous bench) freed goes back first
    return bench(target, base=base, options=options).to_dict()


def stage_bench(
    recipe: Recipe, spec: ArtifactSpec, artifact: Path, model_dir: Path, out_dir: Path, stages: Stages, force: bool
) -> tuple[list[dict], bool]:
    """The bench results of every target, and whether they were measured now."""
    settings = bench_settings(recipe, spec)
    key = settings_key(settings)
    stage = f"{spec.name}.bench"
    file = out_dir / "bench" / f"{spec.name}.json"
    if not force and stages.matches(stage, key) and file.is_file():
        say(f"[bench {spec.name}] skipped (up to date: {file})")
        return read_json(file), False
    stages.forget(stage)
    results, started_all = [], time.time()
    targets = bench_targets(spec, artifact)
    for label, target in targets:
        say(f"[bench {label}] speed, smoke chat, quality...{stages.expected('bench', spec.name) if len(targets) == 1 else ''}")
        started = time.time()
        forced = {"force": True} if spec.force else {}  # the seam's fakes take (target, base, recipe)
        result = bench_one(target, model_dir, recipe, **forced)
        results.append({"name": label, "artifact": str(target), **result})
        say(f"[bench {label}] done in {time.time() - started:.0f}s")
    file.parent.mkdir(parents=True, exist_ok=True)
    write_json(file, results, default=str)
    stages.record(stage, key, settings, results=str(file), seconds=round(time.time() - started_all, 1))
    return results, True


def check_gates(result: dict, gates: Gates) -> list[str]:
    """Why ``result`` fails ``gates`` (empty: it passes), by quantkit.benchmark.gates' rules: its defaults for
    the artifact's bit width, with the recipe's thresholds applied. Computed from the stored
    smoke/quality results, so changing a threshold re-gates without measuring again. The result's
    own verdict (``failures``, ``verdict``, ``unvalidated``, ``passed``, ``gates``) is replaced so the
    report shows the recipe's."""
    from quantkit.benchmark.gates import check, gates_for
    from quantkit.core.verdict import unvalidated_reasons

    thresholds = gates_for(int(result.get("bits") or 16), gates.overrides())
    failures = check(thresholds, result.get("smoke") if gates.smoke else None, result.get("quality"), result)
    gated = {"bits": result.get("bits"), "smoke": gates.smoke, **thresholds.to_dict()}
    unvalidated = [] if failures else unvalidated_reasons(result.get("base"), result.get("smoke"), result.get("quality"), gated)
    verdict = "failed" if failures else ("unvalidated" if unvalidated else "passed")
    result.update(failures=failures, verdict=verdict, unvalidated=unvalidated, passed=verdict == "passed", gates=gated)
    return failures


# --- the run ---------------------------------------------------------------------------------


def select(recipe: Recipe, only: str | list[str] | None) -> list[ArtifactSpec]:
    if not only:
        return list(recipe.artifacts)
    names = [only] if isinstance(only, str) else list(only)
    return [recipe.artifact(name) for name in names]


def run_artifact(recipe, spec, model_dir, out_dir, stages, force) -> ArtifactOutcome:
    outcome = ArtifactOutcome(spec.name, spec.method)
    stage = "quantize"
    try:
        artifact, rebuilt = stage_quantize(recipe, spec, model_dir, out_dir, stages, force)
        outcome.path, outcome.stages["quantize"] = str(artifact), "done" if rebuilt else "skipped"
        stage = "bench"
        outcome.results, measured = stage_bench(recipe, spec, artifact, model_dir, out_dir, stages, force or rebuilt)
        outcome.stages["bench"] = "done" if measured else "skipped"
        if recipe.serving.serving:  # bench: serving: the deployment engines, beside the in-process numbers
            from quantkit.pipeline.serving import stage_serving

            stage = "serving"
            served = stage_serving(recipe, spec, outcome.results, out_dir, stages, force or measured)
            outcome.stages["serving"] = "done" if served else "skipped"
    except Exception as exc:  # one artifact failing must not stop the others
        outcome.status, outcome.failed_stage = "failed", stage
        outcome.stages[stage] = "failed"
        outcome.error = str(exc) if isinstance(exc, QuantkitError) else f"{type(exc).__name__}: {exc}"
        say(f"[{stage} {spec.name}] FAILED: {outcome.error}")
        return outcome
    for stage in ("quantize", "bench"):
        record = read_json(stages.folder / f"{spec.name}.{stage}.json")
        outcome.seconds[stage] = record.get("seconds")
    for result in outcome.results:
        outcome.gate_failures += [f"{result['name']}: {why}" for why in check_gates(result, spec.gates)]
    outcome.unvalidated = [f"{r['name']}: {why}" for r in outcome.results for why in r.get("unvalidated") or []]
    outcome.status = "gate_failed" if outcome.gate_failures else ("unvalidated" if outcome.unvalidated else "passed")
    verdict = {
        "passed": "passed",
        "gate_failed": "FAILED: " + "; ".join(outcome.gate_failures),
        "unvalidated": "unvalidated: " + "; ".join(outcome.unvalidated),
    }[outcome.status]
    say(f"[gates {spec.name}] {verdict}")
    return outcome


def run(
    recipe: Recipe,
    out_dir: Path | str,
    only: str | list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    verbose: bool = False,
) -> RunSummary:
    """Run ``recipe`` into ``out_dir``; returns the summary (its ``exit_code`` says how it went).
    The libraries' own output goes to ``out_dir/run.log`` unless ``verbose``."""
    out_dir = Path(out_dir).expanduser().resolve()
    specs = select(recipe, only)
    summary = RunSummary(recipe.name, out_dir)
    if dry_run:
        from quantkit.pipeline.plan import blocked, plan

        summary.plan = plan(recipe, specs, out_dir, force)
        if blocked(summary.plan):
            summary.error = "preflight: " + "; ".join(f"{row.artifact}: {row.note}" for row in blocked(summary.plan))
        return summary
    out_dir.mkdir(parents=True, exist_ok=True)
    # The run's verdict is rewritten at the end: a rerun killed half-way must not leave the last one.
    for stale in ("results.json", "report.md"):
        (out_dir / stale).unlink(missing_ok=True)
    from quantkit.core.quiet import libraries_to_log

    log = out_dir / "run.log"
    if not verbose:
        say(f"[run] {recipe.name}: library output goes to {log}")
    with libraries_to_log(log, enabled=not verbose):
        _run_stages(recipe, specs, out_dir, summary, force)
    return summary


def estimates(recipe: Recipe, specs: list[ArtifactSpec], out_dir: Path, force: bool) -> dict:
    """The dry run's time per stage, shown beside each progress line; planning never stops a run."""
    from quantkit.pipeline.plan import plan

    try:
        return {(row.stage, row.artifact): row.cost.seconds for row in plan(recipe, specs, out_dir, force) if row.cost}
    except Exception:  # noqa: BLE001 - an estimate is a courtesy
        return {}


def _run_stages(recipe: Recipe, specs: list[ArtifactSpec], out_dir: Path, summary: RunSummary, force: bool) -> None:
    stages = Stages(out_dir)
    started = time.time()
    try:
        model_dir = stage_model(recipe, stages, force)
    except QuantkitError as exc:
        summary.error = f"model stage failed: {exc}"
        summary.artifacts = [ArtifactOutcome(s.name, s.method, "failed", failed_stage="model", error=str(exc)) for s in specs]
        say(f"[model] FAILED: {exc}")
    else:
        stages.estimates = estimates(recipe, specs, out_dir, force)  # the model's config.json is here now
        for spec in specs:
            summary.artifacts.append(run_artifact(recipe, spec, model_dir, out_dir, stages, force))
        if recipe.push is not None:
            stage_push(recipe, summary)
    finish(recipe, summary, time.time() - started)


def stage_push(recipe: Recipe, summary: RunSummary) -> None:
    """After the gates: publish each artifact that passed (or failed only its gates, with
    allow_failed; or is unvalidated, with allow_unvalidated) to the recipe's repo. Always runs: the hub itself skips what it already has."""
    from quantkit.benchmark.report import fill_card
    from quantkit.hub.push import push

    settings = recipe.push
    for a in summary.artifacts:
        if settings.artifacts and a.name not in settings.artifacts:
            continue
        allowed = {"gate_failed": settings.allow_failed, "unvalidated": settings.allow_unvalidated or settings.allow_failed}
        if not (a.status == "passed" or allowed.get(a.status)):
            a.stages["push"] = "skipped"
            why = {"gate_failed": "it failed its gates", "unvalidated": "it is unvalidated"}.get(a.status, "it was not built")
            say(f"[push {a.name}] skipped: {why}")
            continue
        repo = settings.repo_for(a.name)
        say(f"[push {a.name}] {settings.source}:{repo}...")
        started = time.time()
        try:
            fill_card(Path(a.path), a.results)  # the card and results that push publishes
            result = push(
                a.path,
                repo,
                source=settings.source,
                private=settings.private,
                revision=settings.revision,
                allow_failed=settings.allow_failed,
                allow_unvalidated=settings.allow_unvalidated,
            )
        except QuantkitError as exc:
            a.status, a.failed_stage, a.error = "failed", "push", str(exc)
            a.stages["push"] = "failed"
            say(f"[push {a.name}] FAILED: {exc}")
            continue
        a.stages["push"], a.pushed = "done", result.url
        a.seconds["push"] = round(time.time() - started, 1)
        say(f"[push {a.name}] done in {time.time() - started:.0f}s: {result.url}")


def finish(recipe: Recipe, summary: RunSummary, seconds: float) -> None:
    """results.json, then the Markdown report with plots and the model cards' results."""
    data = {
        "recipe": recipe.name,
        "recipe_file": str(recipe.path) if recipe.path else None,
        "model": recipe.model.id,
        "verdict": summary.verdict,
        "passed": summary.verdict == "passed",  # true only when every artifact passed: not when unvalidated
        "exit_code": summary.exit_code,
        "error": summary.error,
        "seconds": round(seconds, 1),
        "artifacts": [asdict(a) for a in summary.artifacts],
    }
    write_json(summary.out_dir / "results.json", data, default=str)
    try:
        from quantkit.pipeline.run_report import write_run_report

        summary.report = write_run_report(summary, recipe)
        say(f"[report] {summary.report}")
    except Exception as exc:  # the results are safe in results.json; say why the report is not
        summary.error = summary.error or f"report failed: {exc}"
        say(f"[report] FAILED: {exc}")
