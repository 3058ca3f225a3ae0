"""The registry of inference engines, chosen from an artifact's quantkit.json (a plain HF folder
means transformers, a .gguf file or GGUF artifact means llama.cpp)."""

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from quantkit.core.errors import InputError
from quantkit.engines.base import Engine, EngineOptions, Token


@dataclass(frozen=True)
class EngineEntry:
    target: str  # "module:Class"
    summary: str
    imports: tuple[str, ...] = ()  # heavy libraries it loads (bench imports them before timing load)
    speed_tool: str | None = None  # the engine's own speed tool, whose pp/tg bench reports when built


ENGINES: dict[str, EngineEntry] = {
    "transformers": EngineEntry(
        "quantkit.engines.hf:TransformersEngine",
        "PyTorch via transformers (HF folders: fp, AWQ, bitsandbytes)",
        ("torch", "transformers"),
    ),
    "llama.cpp": EngineEntry(
        "quantkit.engines.llamacpp:LlamaCppEngine", "llama.cpp via llama-cpp-python (GGUF)", ("llama_cpp",), "llama-bench"
    ),
}


def engine_for(path: Path) -> str:
    """Which engine runs ``path``: its manifest says; otherwise a .gguf means llama.cpp."""
    from quantkit.core.manifest import read_manifest

    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return "llama.cpp"
    manifest = read_manifest(path) if path.exists() else None
    if manifest and manifest.get("engine"):
        return manifest["engine"]
    if path.is_dir() and any(path.glob("*.gguf")):
        return "llama.cpp"
    if path.is_dir() and (path / "config.json").is_file():
        return "transformers"
    raise InputError(f"{path} is neither a model folder, a quantkit artifact nor a .gguf file")


def load_engine(path: Path | str, options: EngineOptions | None = None, engine: str | None = None) -> Engine:
    name = engine or engine_for(Path(path))
    if name not in ENGINES:
        raise InputError(f"unknown engine {name!r}", hint=f"choose one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name].target.split(":")
    return getattr(import_module(module), cls)(Path(path), options or EngineOptions())


__all__ = ["ENGINES", "Engine", "EngineOptions", "Token", "engine_for", "load_engine"]
