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


def estimate_params(config: dict) -> int:
    """Parameter count of a decoder-only transformer from its config (within a few percent)."""
    cfg = text_config(config)
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model") or 0
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0
    vocab = cfg.get("vocab_size") or 0
    inter = cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden
    heads = cfg.get("num_attention_heads") or cfg.get("n_head") or 1
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or (hidden // heads if heads else 0)
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 1
    moe_inter = cfg.get("moe_intermediate_size") or inter
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * (moe_inter if experts > 1 else inter) * experts
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings", config.get("tie_word_embeddings")) else 2)
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
