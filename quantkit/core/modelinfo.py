"""What a model is, from its config.json alone (no weights loaded): architecture, parameter
estimate, dtype (which methods can quantize it: ``quantkit.quantization.registry.method_support``). Used by download's preflight,
``quantkit inspect`` and quantize's preflight."""

import re
from dataclasses import dataclass, field
from pathlib import Path

from quantkit.core.atomic import read_json
from quantkit.core.errors import InputError

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name on a hub
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
    support: dict[str, str | None] = field(default_factory=dict)  # method -> None or reason (quantize's registry fills it)
    config: dict = field(default_factory=dict, repr=False)  # the config.json it was read from

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "config"}


def load_config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise InputError(f"{model_dir} has no config.json", hint="is it a Hugging Face model folder?")
    return read_json(path)


def text_config(config: dict) -> dict:
    """Multimodal configs nest the language model's settings under text_config."""
    return config.get("text_config") or config


# Model types whose MLP is two matrices (up, down) rather than three (gate, up, down).
UNGATED_MLP = {
    "starcoder2",
    "phi",
    "falcon",
    "gpt_neox",
    "gpt2",
    "gpt_bigcode",
    "bloom",
    "opt",
    "mpt",
    "gptj",
    "codegen",
    "gpt_neo",
    "stablelm_epoch",
}


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


def describe(model_dir: Path | None = None, config: dict | None = None) -> ModelInfo:
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
    info.config = config
    return info


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
