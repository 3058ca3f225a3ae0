"""The registry of inference engines, chosen from an artifact's quantkit.json (a plain HF folder
means transformers, a .gguf file or GGUF artifact means llama.cpp).

Each engine declares its facts here, once: bench, quality, verification, the estimates, cards,
``pick`` and ``inspect`` ask ``engine_entry(name)`` and never compare with an engine's name.
Nothing here imports an engine's libraries (entries name their classes as "module:Class")."""

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from quantkit.core.errors import InputError
from quantkit.engines.base import Engine, EngineOptions, Token

ENGINES_DIR = Path(__file__).parent  # where the verification children's load recipes are


@dataclass(frozen=True)
class VerifyRecipe:
    """How verification loads an artifact in a fresh ``python -I`` process that never imports
    quantkit: ``child`` is a standalone .py file whose ``load(spec, target, device)`` returns the
    artifact's token ids of the text (plain and with its special tokens), its logits at the base's
    ids and its chat template (quantkit/quantization/verify_runtime.py compares them with the base)."""

    child: str  # path of the standalone file (absolute, or relative to quantkit/engines)
    where: str  # who loads it, for messages: "plain transformers", "llama.cpp"
    per_file: bool = False  # one check per weights file (a GGUF artifact's types), else the folder
    on_cpu: bool = False  # the child runs the artifact on the CPU even when the base is on the GPU

    def child_path(self) -> Path:
        return ENGINES_DIR / self.child  # an absolute ``child`` stays as it is


@dataclass(frozen=True)
class EngineEntry:
    target: str  # "module:Class"
    summary: str
    verify: VerifyRecipe
    imports: tuple[str, ...] = ()  # heavy libraries it loads (bench imports them before timing load)
    speed_tool: str | None = None  # the engine's own speed tool, whose pp/tg bench reports when built
    formats: tuple[str, ...] = ()  # manifest "format" values it runs as they are (pick's engine filter)
    file_suffix: str | None = None  # it runs one self-contained weights file (".gguf"); None: a folder
    # Runs through torch: "auto" is torch's device and its GPU memory is torch's allocator peak.
    # Otherwise its GPU buffers are its own: the device's used memory is read before and after load.
    on_torch: bool = False
    library_name: str = "transformers"  # the Hub's library_name of the artifacts it runs
    # "module:function" counting the bytes a decode step reads, given the loaded engine
    # (quantkit/engines/weights_read.py); None: its weight files' size.
    bytes_per_token: str | None = None


ENGINES: dict[str, EngineEntry] = {
    "transformers": EngineEntry(
        "quantkit.engines.hf:TransformersEngine",
        "PyTorch via transformers (HF folders: fp, AWQ, bitsandbytes)",
        VerifyRecipe("hf_child.py", "plain transformers"),
        ("torch", "transformers"),
        formats=("compressed-tensors", "autoawq", "bitsandbytes"),
        on_torch=True,
        bytes_per_token="quantkit.engines.weights_read:torch_model_bytes",
    ),
    "llama.cpp": EngineEntry(
        "quantkit.engines.llamacpp:LlamaCppEngine",
        "llama.cpp via llama-cpp-python (GGUF)",
        VerifyRecipe("llamacpp_child.py", "llama.cpp", per_file=True, on_cpu=True),
        ("llama_cpp",),
        "llama-bench",
        formats=("gguf",),
        file_suffix=".gguf",
        library_name="gguf",
        bytes_per_token="quantkit.engines.weights_read:gguf_file_bytes",
    ),
}


def engine_entry(name: str) -> EngineEntry:
    if name not in ENGINES:
        raise InputError(f"unknown engine {name!r}", hint=f"choose one of {', '.join(ENGINES)}")
    return ENGINES[name]


def engine_for(path: Path) -> str:
    """Which engine runs ``path``: its manifest says; otherwise the engine whose weights file it is
    (or holds), else transformers for a folder with config.json."""
    from quantkit.core.manifest import read_manifest

    path = Path(path)
    by_file = [name for name, e in ENGINES.items() if e.file_suffix]
    for name in by_file:
        if path.is_file() and path.suffix == ENGINES[name].file_suffix:
            return name
    manifest = read_manifest(path) if path.exists() else None
    if manifest and manifest.get("engine"):
        return manifest["engine"]
    for name in by_file:
        if path.is_dir() and any(path.glob(f"*{ENGINES[name].file_suffix}")):
            return name
    if path.is_dir() and (path / "config.json").is_file():
        return next(name for name, e in ENGINES.items() if e.on_torch)  # a Hugging Face folder
    raise InputError(f"{path} is neither a model folder, a quantkit artifact nor a .gguf file")


def load_engine(path: Path | str, options: EngineOptions | None = None, engine: str | None = None) -> Engine:
    name = engine or engine_for(Path(path))
    module, cls = engine_entry(name).target.split(":")
    return getattr(import_module(module), cls)(Path(path), options or EngineOptions())


__all__ = [
    "ENGINES",
    "Engine",
    "EngineEntry",
    "EngineOptions",
    "Token",
    "VerifyRecipe",
    "engine_entry",
    "engine_for",
    "load_engine",
]
