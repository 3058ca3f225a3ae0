"""The ``stages/`` folder of a run: one JSON record per finished stage, keyed by the hash of the
settings that made it, so a rerun skips what is already built with the same settings."""

from dataclasses import asdict
from pathlib import Path

from quantkit.core.atomic import read_json, write_json
from quantkit.pipeline.recipe_schema import ArtifactSpec, Recipe, settings_key


class Stages:
    """The ``stages/`` folder: one JSON record per finished stage."""

    def __init__(self, out_dir: Path, estimates: dict | None = None):
        self.folder = out_dir / "stages"
        self.estimates = estimates or {}  # (stage, artifact) -> the dry run's seconds, for progress lines

    def expected(self, stage: str, artifact: str) -> str:
        """' (estimate ~N s)' for a progress line, or '' when the plan had none."""
        seconds = self.estimates.get((stage, artifact))
        if not seconds:
            return ""
        return f" (estimate ~{seconds:.0f} s)" if seconds < 120 else f" (estimate ~{seconds / 60:.0f} min)"

    def matches(self, stage: str, key: str) -> dict | None:
        record = read_json(self.folder / f"{stage}.json", default={})  # none yet, or damaged: redo
        return record if record.get("key") == key else None

    def record(self, stage: str, key: str, settings: dict, **extra) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / f"{stage}.json", {"key": key, "settings": settings, **extra}, default=str)

    def forget(self, stage: str) -> None:
        (self.folder / f"{stage}.json").unlink(missing_ok=True)


def model_settings(recipe: Recipe) -> dict:
    m = recipe.model
    return {"id": m.id, "source": m.source, "revision": m.revision}


def quantize_settings(recipe: Recipe, spec: ArtifactSpec) -> dict:
    return {"model": model_settings(recipe), "trust_remote_code": recipe.model.trust_remote_code, **spec.quantize_settings()}


def bench_settings(recipe: Recipe, spec: ArtifactSpec) -> dict:
    return {"quantize": settings_key(quantize_settings(recipe, spec)), **asdict(recipe.bench)}
