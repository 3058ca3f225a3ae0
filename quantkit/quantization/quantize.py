"""``quantize()``: one model, one method, one artifact folder - written atomically, with the
manifest and the model card that every method shares. The method does only its library call;
``verify`` then loads the result in its own runtime, in a fresh process, before it is renamed."""

import time
from dataclasses import fields
from pathlib import Path

from quantkit.core.atomic import atomic_dir, check_output, read_json
from quantkit.core.card import write_model_card
from quantkit.core.errors import InputError, PreflightError
from quantkit.core.manifest import SOURCE_MANIFEST, bits_per_weight, library_versions, write_manifest
from quantkit.core.memory import PeakRSS
from quantkit.core.modelinfo import describe, load_config
from quantkit.core.preflight import check_device
from quantkit.hub.model_ref import model_name, resolve_model
from quantkit.quantization.base import artifact_facts
from quantkit.quantization.registry import get_method, make_options
from quantkit.quantization.verify import verify_artifact

VERSIONED = (
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "huggingface_hub",
    "llmcompressor",
    "compressed-tensors",
    "gptqmodel",
    "bitsandbytes",
    "llama-cpp-python",
    "gguf",
)
WEIGHT_SUFFIXES = (".safetensors", ".gguf")


def default_output(model: str | Path, method: str, options) -> Path:
    """``./NAME-METHOD`` (plus the format when it is not the method's default)."""
    default = next((f.default for f in fields(options) if f.name == "format"), None)
    suffix = f"-{options.format}" if getattr(options, "format", None) not in (None, default) else ""
    return Path.cwd() / f"{model_name(model)}-{method}{suffix}"


def quantize(
    model: str | Path,
    method: str,
    out: str | Path | None = None,
    options=None,
    overwrite: bool = False,
    source: str = "hf",
    revision: str | None = None,
) -> Path:
    """Quantize ``model`` (folder, ``bundled:NAME`` or hub id) with ``method``; return the artifact
    folder. ``options`` is the method's settings (``registry.make_options(method, {...})``; None:
    its defaults)."""
    impl = get_method(method)
    options = make_options(method) if options is None else options
    if not isinstance(options, impl.Options):
        raise InputError(
            f"method {method} takes {impl.Options.__name__}, not {type(options).__name__}",
            hint="build them with quantkit.quantization.registry.make_options",
        )
    final = Path(out).expanduser().resolve() if out else default_output(model, method, options)
    check_output(final, overwrite)  # refuse before downloading or loading anything
    check_device(getattr(options, "device", "cpu"))
    model_dir = resolve_model(model, source=source, revision=revision)
    config = load_config(model_dir)
    info = describe(config=config)
    reason = impl.supports(config)
    if reason:
        raise PreflightError(
            f"{method} cannot quantize {info.architecture}: {reason}",
            hint=f"`quantkit inspect {model}` lists the methods that can",
        )
    impl.check(model_dir, config, options)
    with atomic_dir(final, overwrite=overwrite) as staging:
        started = time.time()
        with PeakRSS() as peak:
            result = impl.quantize(model_dir, staging, options)
        quantize_s = round(time.time() - started, 1)
        # Loaded the way a user loads it, in a fresh process, before anything is published.
        verification = verify_artifact(staging, model_dir, method, result, options.trust_remote_code)
        weights = sum(p.stat().st_size for p in staging.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
        facts, source_rec = artifact_facts(impl, result), source_record(model, model_dir)
        manifest = {
            "kind": "artifact",
            "name": artifact_name(model, source_rec, facts.pop("label")),
            "method": method,
            "format": result.format,
            "engine": result.engine,
            "settings": result.settings,
            "runtimes": facts.pop("runtimes"),  # what loads it without quantkit (the method's declaration)
            "card": facts,  # library_name, tags, what transformers needs: the card renders from these
            "source": source_rec,
            "model": info.as_dict(),
            "versions": library_versions(*VERSIONED),
            "run": {"wall_s": quantize_s, "peak_rss_mb": peak.mb},
            "weights_bytes": weights,
            "bits_per_weight": bits_per_weight(weights, info.n_params),
            **result.extra,
            "verification": verification,
        }
        manifest = write_manifest(staging, manifest)
        write_model_card(staging, manifest, result.usage, title=manifest["name"])
    return final


def artifact_name(spec: str | Path, source: dict, label: str) -> str:
    """The artifact's name for its card: the base's hub name and the method's label, as the Hub
    names quantizations (``SmolLM2-135M-Instruct-FP8``), whatever the folder is called."""
    repo = source.get("repo_id")
    return f"{repo.split('/')[-1] if isinstance(repo, str) and repo else model_name(spec)}-{label}"


def source_record(spec: str | Path, model_dir: Path) -> dict:
    """What the artifact was made from: the spec as typed, the folder, and its source manifest."""
    record = {"model": str(spec), "path": str(model_dir)}
    source_file = model_dir / SOURCE_MANIFEST
    if source_file.is_file():
        src = read_json(source_file)
        for key in ("source", "repo_id", "revision", "commit", "bundled"):
            if key in src:
                record[key] = src[key]
    return record
