"""What a recipe holds, as dataclasses: the model, the artifacts with their settings (each
method's own options) and gates (bench's ``Gates``), the bench settings (bench's ``BenchOptions``),
the deployment engines bench serves them in (``ServingOptions``), the push section.
quantkit/pipeline/recipe.py loads YAML into them, strictly."""

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantkit.benchmark.bench import BenchOptions
from quantkit.benchmark.gates import Gates
from quantkit.benchmark.serving import ServingOptions
from quantkit.core.errors import InputError

RECIPE_SUFFIXES = (".yaml", ".yml")
RUNNERS = ("cpu", "gpu")
SOURCES = ("hf", "modelscope")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class RecipeError(InputError):
    """A recipe file that cannot be used; the message starts with ``FILE:LINE: KEY:``."""


@dataclass
class ModelSpec:
    id: str  # hub repo id, local folder or bundled:NAME
    source: str = "hf"
    revision: str | None = None
    trust_remote_code: bool = False
    local_config: Path | None = None  # a config.json for --dry-run's preflight when the model is not here


@dataclass
class ArtifactSpec:
    name: str
    method: str
    options: Any  # the method's settings dataclass (quantkit/quantization/options.py), checked at load
    gates: Gates = field(default_factory=Gates)

    def quantize_settings(self) -> dict:
        """Everything that changes the artifact's bytes (its name, gates and force do not)."""
        data = {"method": self.method, **asdict(self.options)}
        for key in ("force", "trust_remote_code"):  # trust_remote_code is the model's (ModelSpec)
            data.pop(key, None)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}

    @property
    def device(self) -> str:
        return getattr(self.options, "device", "auto")

    @property
    def force(self) -> bool:
        return self.options.force


@dataclass
class PushSettings:
    """Where ``quantkit run`` publishes the artifacts that passed their gates (``quantkit push``).
    The token comes from HF_TOKEN / MODELSCOPE_API_TOKEN, never from the recipe."""

    repo: str  # owner/name; "{name}" is replaced by the artifact's name
    source: str = "hf"
    private: bool = False
    revision: str | None = None
    allow_failed: bool = False  # also push artifacts that failed their gates (never ones that failed to build)
    allow_unvalidated: bool = False  # also push unvalidated ones (no base, quality or smoke skipped); cards say so
    artifacts: list[str] = field(default_factory=list)  # which to push (default: all)

    def repo_for(self, name: str) -> str:
        return self.repo.replace("{name}", name)


@dataclass
class Recipe:
    name: str
    model: ModelSpec
    artifacts: list[ArtifactSpec]
    description: str = ""
    runner: str = "cpu"  # which CI runners it needs: cpu (ordinary) or gpu (self-hosted)
    bench: BenchOptions = field(default_factory=BenchOptions)
    path: Path | None = None
    push: PushSettings | None = None
    serving: ServingOptions = field(default_factory=ServingOptions)  # bench: serving: the deployment engines

    def artifact(self, name: str) -> ArtifactSpec:
        for spec in self.artifacts:
            if spec.name == name:
                return spec
        raise InputError(
            f"recipe {self.name} has no artifact {name!r}", hint=f"choose one of {', '.join(a.name for a in self.artifacts)}"
        )


def settings_key(settings: dict) -> str:
    """A short stable hash of a settings dict (what a stage's manifest records)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
