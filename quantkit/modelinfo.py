"""What a model is, from its config.json alone (no weights loaded): architecture, parameter
estimate, dtype, and which registered methods can quantize it. Used by download's preflight,
``quantkit inspect`` and quantize's preflight."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from quantkit.errors import InputError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}


@dataclass
class ModelInfo:
    architecture: str
    model_type: str
    n_params: int
    dtype: str
    hidden_size: int | None
    num_layers: int | None
    vocab_size: int | None
    support: dict[str, str | None] = field(default_factory=dict)  # method -> None or reason

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def load_config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise InputError(f"{model_dir} has no config.json", hint="is it a Hugging Face model folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc


def text_config(config: dict) -> dict:
    """Multimodal configs nest the language model's settings under text_config."""
    return config.get("text_config") or config


# Model types whose MLP is two matrices (up, down) rather than three (gate, up, down).
UNGATED_MLP = {"starcoder2", "phi", "falcon", "gpt_neox", "gpt2", "gpt_bigcode", "bloom", "opt", "mpt",
               "gptj", "codegen", "gpt_neo", "stablelm_epoch"}


def estimate_params(config: dict) -> int:
    """Parameter count of a decoder-only transformer from its config (within a few percent;
    tests/test_architectures.py checks it against meta-device models of every architecture there)."""
    cfg = text_config(config)
    model_type = str(cfg.get("model_type") or config.get("model_type") or "")
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model") or 0
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0
    vocab = cfg.get("vocab_size") or 0
    inter = cfg.get("ffn_hidden_size") or cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden
    heads = cfg.get("num_attention_heads") or cfg.get("n_head") or 1
    kv_heads = cfg.get("num_key_value_heads") or cfg.get("num_kv_heads") or heads
    if cfg.get("multi_query") and not cfg.get("new_decoder_architecture"):
        kv_heads = 1  # Falcon-7B's layout
    head_dim = cfg.get("head_dim") or (hidden // heads if heads else 0)
    experts = max(int(cfg.get(k) or 0) for k in ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "_"))
    moe_inter = cfg.get("moe_intermediate_size") or inter
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    matrices = 2 if model_type in UNGATED_MLP else 3
    if experts > 1:
        mlp = matrices * hidden * moe_inter * experts + hidden * experts  # experts + router
    else:
        mlp = matrices * hidden * inter
    tied = cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", True))
    embed = vocab * hidden * (1 if tied else 2)
    return int(layers * (attn + mlp + 2 * hidden) + embed + hidden)


def config_dtype(config: dict) -> str:
    cfg = text_config(config)
    return str(cfg.get("dtype") or cfg.get("torch_dtype") or config.get("torch_dtype") or "float32")


def describe(model_dir: Path | None = None, config: dict | None = None, with_support: bool = True) -> ModelInfo:
    """ModelInfo from a folder's config.json (or a config dict already read)."""
    config = config if config is not None else load_config(model_dir)
    cfg = text_config(config)
    archs = config.get("architectures") or ["unknown"]
    info = ModelInfo(
        architecture=archs[0],
        model_type=config.get("model_type", "unknown"),
        n_params=estimate_params(config),
        dtype=config_dtype(config),
        hidden_size=cfg.get("hidden_size"),
        num_layers=cfg.get("num_hidden_layers"),
        vocab_size=cfg.get("vocab_size"),
    )
    if with_support:
        info.support = method_support(config)
    return info


def method_support(config: dict) -> dict[str, str | None]:
    """Each registered method's verdict on this architecture: None (supported) or why not."""
    from quantkit.methods import METHODS, get_method

    verdicts = {}
    for name in METHODS:
        try:
            verdicts[name] = get_method(name).supports(config)
        except Exception as exc:  # a method whose module cannot even load says why
            verdicts[name] = f"unavailable: {exc}"
    return verdicts


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


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
        "path": str(path), "name": field("general.name"), "architecture": arch, "n_params": n_params,
        "file_type": type_name, "size_bytes": size,
        "bits_per_weight": round(size * 8 / n_params, 3) if n_params else None,
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors).most_common()),
        "context_length": field(f"{arch}.context_length"), "num_layers": field(f"{arch}.block_count"),
        "hidden_size": field(f"{arch}.embedding_length"),
        "tokenizer": field("tokenizer.ggml.model"), "chat_template": field("tokenizer.chat_template") is not None,
        "engines": gguf_engines(arch),
    }


def gguf_engines(arch: str) -> dict[str, str | None]:
    """Engine -> None (runs it) or why not. llama.cpp's architecture list is read from the gguf-py
    vendored with the installed llama-cpp-python (same commit as its runtime) when unpacked, else
    from the PyPI gguf package; transformers' from its GGUF loader's table (read, not imported)."""
    import ast
    import re

    from quantkit.library_tables import package_root, version_of
    from quantkit.llamacpp_tools import cached_converter

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
    engines["transformers"] = (None if arch in known else
                               f"transformers' GGUF loader has no {arch!r} (use llama.cpp)")
    return engines
