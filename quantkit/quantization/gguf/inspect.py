"""What a .gguf file is and which engines run it, from its own metadata (``quantkit inspect``)."""

from pathlib import Path

from quantkit.core.errors import InputError


def describe_gguf(path: Path) -> dict:
    """What a .gguf file is, from its own metadata (the gguf package; no runtime loaded):
    architecture, parameters, file type and bits per weight, context, chat template, and which
    engines run it."""
    from collections import Counter

    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError:
        raise InputError("the gguf package is not installed", hint="pip install gguf") from None
    path = Path(path)
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path} is not a readable GGUF file: {exc}") from exc

    def field(key: str):
        return reader.fields[key].contents() if key in reader.fields else None

    arch = str(field("general.architecture") or "unknown")
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    size = path.stat().st_size
    file_type = field("general.file_type")
    try:
        type_name = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        type_name = f"type {file_type}"
    return {
        "path": str(path),
        "name": field("general.name"),
        "architecture": arch,
        "n_params": n_params,
        "file_type": type_name,
        "size_bytes": size,
        "bits_per_weight": round(size * 8 / n_params, 3) if n_params else None,
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors).most_common()),
        "context_length": field(f"{arch}.context_length"),
        "num_layers": field(f"{arch}.block_count"),
        "hidden_size": field(f"{arch}.embedding_length"),
        "tokenizer": field("tokenizer.ggml.model"),
        "chat_template": field("tokenizer.chat_template") is not None,
        "engines": gguf_engines(arch),
    }


def gguf_engines(arch: str) -> dict[str, str | None]:
    """Engine -> None (runs it) or why not. llama.cpp's architecture list is read from the gguf-py
    vendored with the installed llama-cpp-python (same commit as its runtime) when unpacked, else
    from the PyPI gguf package; transformers' from its GGUF loader's table (read, not imported)."""
    import ast
    import re

    from quantkit.core.library_tables import package_root, version_of
    from quantkit.quantization.gguf.tools import cached_converter

    converter = cached_converter()
    constants = converter.root / "gguf-py" / "gguf" / "constants.py" if converter else None
    if constants is not None and constants.is_file():
        block = constants.read_text().split("MODEL_ARCH_NAMES", 1)[-1].split("}", 1)[0]
        llama_archs = set(re.findall(r':\s*"([\w.-]+)"', block))
    else:
        from gguf import MODEL_ARCH_NAMES

        llama_archs = set(MODEL_ARCH_NAMES.values())
    engines: dict[str, str | None] = {}
    version = version_of("llama-cpp-python")
    if version is None:
        engines["llama.cpp"] = "llama-cpp-python is not installed (pip install 'quantkit[gguf]')"
    elif arch in llama_archs:
        engines["llama.cpp"] = None
    else:
        engines["llama.cpp"] = f"llama-cpp-python {version}'s llama.cpp does not know architecture {arch!r}"
    engines["ollama"] = None if arch in llama_archs else f"llama.cpp (and so Ollama) may not know {arch!r}"
    ggml = (package_root("transformers") or Path("/nonexistent")) / "integrations" / "ggml.py"
    known: set[str] = set()
    if ggml.is_file():
        for node in ast.parse(ggml.read_text()).body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "GGUF_CONFIG_MAPPING":
                known = {k.value for k in node.value.keys if isinstance(k, ast.Constant)} - {"general", "tokenizer"}
                break
    engines["transformers"] = None if arch in known else f"transformers' GGUF loader has no {arch!r} (use llama.cpp)"
    return engines
