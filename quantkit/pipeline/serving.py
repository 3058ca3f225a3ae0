"""A recipe's serving stage (``bench: serving: [llama-server, vllm]``): after the in-process bench,
each bench target is served in each named deployment engine that runs it and load-tested at the
recipe's concurrencies (quantkit.benchmark.serving); the records ride on the bench results as
``serving``, so the report shows them beside the in-process numbers. A target the engine does not
run, or an engine not installed here, is a record with the reason, not an error. Resumable like the
other stages: ``OUT/serving/NAME.json`` and its stage record, keyed by the bench's settings and
the serving ones."""

import time
from dataclasses import asdict
from pathlib import Path

from quantkit.core import events
from quantkit.core.atomic import read_json, write_json
from quantkit.pipeline.recipe_schema import ArtifactSpec, Recipe, settings_key
from quantkit.pipeline.stages import Stages, bench_settings

LOG = events.logger("run")


def serving_settings(recipe: Recipe, spec: ArtifactSpec) -> dict:
    return {"bench": settings_key(bench_settings(recipe, spec)), **asdict(recipe.serving)}


def serve_one(target: Path, engine: str, recipe: Recipe) -> dict:
    """One engine's serving record for one target, or ``{"engine", "skipped": why}``."""
    from quantkit.benchmark.serving import serving_bench
    from quantkit.core.errors import DependencyError, InputError
    from quantkit.engines.servers import SERVERS, choose_server

    try:
        choose_server(target, engine)
    except (InputError, DependencyError) as exc:  # a format it does not run, or not installed here
        return {"engine": engine, "skipped": str(exc)}
    s, b = recipe.serving, recipe.bench
    sizes = (s.tensor_parallel, s.pipeline_parallel) if SERVERS[engine].parallel_sizes else (1, 1)
    return serving_bench(
        target,
        engine,
        s.concurrency,
        s.num_requests,
        s.max_tokens,
        threads=b.threads,
        n_gpu_layers=b.n_gpu_layers,
        device=b.device,
        tensor_parallel=sizes[0],
        pipeline_parallel=sizes[1],
    )


def stage_serving(recipe: Recipe, spec: ArtifactSpec, results: list[dict], out_dir: Path, stages: Stages, force: bool) -> bool:
    """Put each result's ``serving`` records on it; True when they were measured now. A server that
    fails on a target it should run raises (the artifact fails at this stage)."""
    key = settings_key(serving_settings(recipe, spec))
    stage = f"{spec.name}.serving"
    file = out_dir / "serving" / f"{spec.name}.json"
    records = read_json(file, default=None) if not force and stages.matches(stage, key) else None
    measured = records is None
    if measured:
        stages.forget(stage)
        records, started_all = {}, time.time()
        for result in results:
            records[result["name"]] = []
            for engine in recipe.serving.serving:
                started = time.time()
                record = serve_one(Path(result["artifact"]), engine, recipe)
                records[result["name"]].append(record)
                done = f"skipped: {record['skipped']}" if "skipped" in record else f"done in {time.time() - started:.0f}s"
                events.stage(LOG, "run", f"[serving {result['name']} {engine}] {done}")
        file.parent.mkdir(parents=True, exist_ok=True)
        write_json(file, records, default=str)
        stages.record(stage, key, serving_settings(recipe, spec), results=str(file), seconds=round(time.time() - started_all, 1))
    else:
        events.stage(LOG, "run", f"[serving {spec.name}] skipped (up to date: {file})")
    for result in results:
        result["serving"] = records.get(result["name"], [])
    return measured
