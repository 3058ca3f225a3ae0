"""The protocol every quantization method implements, and the files every artifact shares.

A method module imports nothing heavy at top level (torch, transformers, ... are imported inside
``quantize``), so the registry can ask every method about a config.json cheaply. Its settings
are one dataclass (``Options``, see quantkit/quantization/options.py) from which the CLI, recipes,
the API and the docs are derived.
"""

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from quantkit.core.errors import QuantizeError

# What a transformers artifact needs besides weights and config (tokenizer_config.json may hold
# an older-style chat template; newer checkpoints keep it in chat_template.jinja).
SUPPORT_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


@dataclass
class MethodResult:
    """What a method reports back for the manifest."""

    format: str  # compressed-tensors | autoawq | bitsandbytes | gguf
    engine: str  # transformers | llama.cpp
    settings: dict  # always holds "bits": the nominal weight width (which gates apply)
    extra: dict = field(default_factory=dict)  # method-specific manifest keys (calibration, ...)
    usage: str = ""  # markdown: how to load the artifact without quantkit


@dataclass(frozen=True)
class FormatFacts:
    """What one artifact format is to the world outside quantkit, declared by the method that
    writes it: the card's library and tags, and the runtimes that load it without quantkit."""

    library_name: str | None  # the Hub's library_name (None: that of the engine that runs it)
    tags: tuple[str, ...]  # card tags for the format (the method's own come from Method.tags)
    runtimes: tuple[str, ...]  # what loads it as is: transformers, vllm, llama.cpp, ollama (pick's engines)
    needs: str = ""  # what transformers needs installed to load it
    bits_tag: bool = True  # tag the card "N-bit" from settings["bits"] (False: bits differ per file)


class Method(Protocol):
    name: str
    extra: str  # the pip extra that brings its libraries
    Options: type  # its settings dataclass
    summary: str  # one line for --help and docs/methods.md
    label: str  # the artifact name's suffix: SmolLM2-135M-Instruct-FP8
    tags: tuple[str, ...]  # the method's own card tags
    formats: dict[str, FormatFacts]  # every format it writes; the first is its default

    def supports(self, config: dict) -> str | None:
        """None when the architecture in ``config`` can be handled, else the reason why not."""

    def check_config(self, config: dict, options) -> None:
        """What config.json and the settings alone decide (the dry run asks this too); raise with a fix."""

    def footprint(self, options):
        """``quantkit.core.estimate.Footprint``: how the estimates count this method's cost."""

    def check(self, model_dir: Path, config: dict, options) -> None:
        """Raise PreflightError/InputError/DependencyError with a fix, before loading weights."""

    def quantize(self, model_dir: Path, out_dir: Path, options) -> MethodResult:
        """Write the artifact's weights, tokenizer and configs into ``out_dir``."""


def copy_support_files(model_dir: Path, out_dir: Path) -> list[str]:
    """Copy tokenizer, chat template and generation config from the source folder, keeping any
    file the method already wrote; return the names copied. For methods that save weights only."""
    copied = []
    for name in SUPPORT_FILES:
        src, dst = Path(model_dir) / name, Path(out_dir) / name
        if src.is_file() and not dst.exists():
            shutil.copyfile(src, dst)
            copied.append(name)
    return copied


def artifact_facts(method: Method, result: MethodResult) -> dict:
    """The manifest's record of the method's declarations for this artifact (cards and pick read
    it, so a card renders the same without the method installed)."""
    facts = method.formats.get(result.format)
    if facts is None:
        raise QuantizeError(
            f"method {method.name} wrote format {result.format!r}, which it does not declare",
            hint=f"add {result.format!r} to {type(method).__name__}.formats (its card tags and runtimes)",
        )
    from quantkit.engines import engine_entry

    bits = result.settings.get("bits")
    bit_tag = [f"{bits}-bit"] if facts.bits_tag and isinstance(bits, int) and bits < 16 else []
    return {
        "label": method.label,
        "library_name": facts.library_name or engine_entry(result.engine).library_name,
        "tags": list(dict.fromkeys([method.name, *method.tags, *facts.tags, *bit_tag])),
        "runtimes": list(facts.runtimes),
        "needs": facts.needs,
    }
