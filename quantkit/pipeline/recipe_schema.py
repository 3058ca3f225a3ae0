"""What a recipe holds, as dataclasses: the model, the artifacts with their settings and gates,
the bench settings, the push section. quantkit/pipeline/recipe.py loads YAML into them, strictly."""

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantkit.core.errors import InputError

RECIPE_SUFFIXES = (".yaml", ".yml")
RUNNERS = ("cpu", "gpu")
SOURCES = ("hf", "modelscope")
DEVICES = ("auto", "cpu", "cuda")
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
class Gates:
    """What an artifact must meet. A threshold left None takes quantkit.bench.gates' default for the
    artifact's bit width (measured, docs/gates.md); smoke false reports the chat without gating it."""

    smoke: bool = True
    top1_min: float | None = None
    kld_mean_max: float | None = None
    kld_p99_max: float | None = None
    ppl_ratio_max: float | None = None

    def overrides(self) -> dict:
        """The thresholds given, in quantkit.bench.gates' names."""
        return {k: v for k, v in asdict(self).items() if k != "smoke" and v is not None}


@dataclass
class BenchSettings:
    prompt_tokens: int = 512  # pp{P}
    gen_tokens: int = 128  # tg{N}
    repetitions: int = 5
    warmup: int = 1
    threads: int | None = None
    device: str = "auto"
    n_gpu_layers: int = 0
    smoke: bool = True
    quality: bool = True
    quality_tokens: int | None = None  # evaluation tokens for quality (None: bench's default)


@dataclass
class ArtifactSpec:
    name: str
    method: str
    options: Any  # the method's settings dataclass (quantkit/quantize/options.py), checked at load
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
    bench: BenchSettings = field(default_factory=BenchSettings)
    path: Path | None = None
    push: PushSettings | None = None

    def artifact(self, name: str) -> ArtifactSpec:
        for spec in self.artifacts:
            if spec.name == name:
                return spec
        raise InputError(f"recipe {self.name} has no artifact {name!r}",
                         hint=f"choose one of {', '.join(a.name for a in self.artifacts)}")


def settings_key(settings: dict) -> str:
    """A short stable hash of a settings dict (what a stage's manifest records)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
