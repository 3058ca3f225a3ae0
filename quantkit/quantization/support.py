"""Which method can quantize which architecture, answered by the libraries' own tables, from
config.json alone (no weight is loaded, no calibration sample is run):

- transformers: its model-type tables (``CONFIG_MAPPING_NAMES``, ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``).
  Importing ``transformers.models.auto`` imports torch (~10 s cold), so the tables are read from
  the installed sources with ``ast`` and cached per transformers version.
- llm-compressor's AWQ: quantkit/quantization/awq/support.py (its mapping registry, or its default resolved on
  a meta-device model, quantkit/core/meta_model.py).
- llama.cpp: the architectures its converter registers (``llamacpp_tools.supported_architectures``).
- bitsandbytes: any causal LM transformers loads (it replaces nn.Linear generically).

Every ``*_reason`` returns None (supported) or one line: the reason, then the fix.
"""

import ast
from pathlib import Path

from quantkit.core.library_tables import causal_lm_reason
from quantkit.core.meta_model import decoder_linear_types


def bnb_reason(config: dict) -> str | None:
    """bitsandbytes: any causal LM transformers loads, as long as its layers are the modules
    transformers' integration replaces (exactly torch.nn.Linear or Conv1D, not a subclass)."""
    if (reason := causal_lm_reason(config)) is not None:
        return reason
    if "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return None  # remote code: its module types are known only after running it
    architecture = config["architectures"][0]
    types = decoder_linear_types(config)
    if types and not types & {"Linear", "Conv1D"}:
        return (
            f"transformers' bitsandbytes integration replaces only torch.nn.Linear and Conv1D modules, and "
            f"{architecture}'s layers are {', '.join(sorted(types))}: nothing would be quantized "
            "(use --method gguf or awq)"
        )
    return None


def gguf_reason(config: dict) -> str | None:
    """llama.cpp's converter must register the architecture (judged when the converter is at hand:
    unpacked already, or a --llama-cpp-dir checkout; otherwise quantize's preflight judges it)."""
    from quantkit.quantization.gguf.tools import cached_converter, supported_architectures

    archs = config.get("architectures") or []
    if not archs:
        return 'config.json names no architecture (add "architectures" to config.json)'
    converter = cached_converter()
    if converter is not None and archs[0] not in supported_architectures(converter):
        return (
            f"llama.cpp's converter ({converter.origin}) does not support architecture {archs[0]} "
            "(use --method nf4 or int8, or a newer llama.cpp checkout via --llama-cpp-dir)"
        )
    return None


def sentencepiece_only(converter, architecture: str) -> bool:
    """Whether llama.cpp's converter class for ``architecture`` reads the vocabulary only from a
    SentencePiece ``tokenizer.model``: its ``set_vocab`` calls ``_set_vocab_sentencepiece()``
    unconditionally (Gemma 2 does; Llama and Gemma 3 fall back to tokenizer.json)."""
    sources = [converter.script, *sorted((converter.root / "conversion").glob("*.py"))]
    for path in sources:
        text = path.read_text() if path.is_file() else ""
        if f'"{architecture}"' not in text:
            continue
        for node in ast.parse(text).body:
            if not isinstance(node, ast.ClassDef) or not any(
                isinstance(d, ast.Call)
                and getattr(d.func, "attr", None) == "register"
                and any(isinstance(a, ast.Constant) and a.value == architecture for a in d.args)
                for d in node.decorator_list
            ):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "set_vocab":
                    return any(
                        isinstance(s, ast.Expr)
                        and isinstance(s.value, ast.Call)
                        and getattr(s.value.func, "attr", None) == "_set_vocab_sentencepiece"
                        for s in item.body
                    )
            return False
    return False


def converter_vocab_reason(converter, model_dir: Path, architecture: str) -> str | None:
    """Why llama.cpp's converter would fail on this folder's tokenizer files, found up front."""
    if sentencepiece_only(converter, architecture) and not (Path(model_dir) / "tokenizer.model").is_file():
        return (
            f"llama.cpp's converter reads {architecture}'s vocabulary only from a SentencePiece "
            f"tokenizer.model, and {Path(model_dir).name} has none (add the model's tokenizer.model, "
            "or use --method nf4 or int8)"
        )
    return None


# Tokens llama.cpp's loader looks up by name for a model whose general.name says Phi-3 (it sets
# their strip attributes with unordered_map::at, so a missing one makes the file unloadable).
PHI3_NAMED_TOKENS = ("</s>", "<unk>", "<s>", "<|endoftext|>")
GLM4_TOKENS = ("<|endoftext|>", "<|user|>")  # Glm4Model.set_vocab reads both from the added vocab


def converter_config_reason(model_dir: Path, config: dict) -> str | None:
    """Why llama.cpp's converter (or loading what it writes) would fail on this config.json and
    tokenizer, from what its model classes assume of the real checkpoints: one line, or None."""
    arch = (config.get("architectures") or [""])[0]
    fix = "use --method nf4 or int8"
    if arch == "GPTNeoXForCausalLM" and "rotary_pct" not in config:
        factor = (config.get("rope_parameters") or {}).get("partial_rotary_factor", config.get("partial_rotary_factor"))
        return (
            f"llama.cpp's converter reads {arch}'s rotary_pct from config.json, which has none (transformers 5 "
            f'writes it as rope_parameters.partial_rotary_factor; add "rotary_pct": {factor} to config.json, or {fix})'
        )
    if arch in ("FalconForCausalLM", "RWForCausalLM") and not config.get("new_decoder_architecture"):
        kv = config.get("num_kv_heads", config.get("n_head_kv"))
        if config.get("multi_query", True) and kv not in (None, 1):
            return (
                f"llama.cpp's converter splits {arch}'s fused query_key_value into num_kv_heads={kv} groups, but a "
                f'multi_query model has one (set "num_kv_heads": 1 in config.json, or {fix})'
            )
    if arch == "CohereForCausalLM" and config.get("tie_word_embeddings") is False:
        return (
            f"llama.cpp's converter has no tensor for {arch}'s separate lm_head.weight (Command-R ties its output to "
            f"the embeddings; this config.json says tie_word_embeddings: false; {fix})"
        )
    hidden, inter = config.get("hidden_size"), config.get("intermediate_size")
    if arch == "PhiForCausalLM" and hidden and inter and inter != 4 * hidden:
        return (
            f"llama.cpp's converter writes {arch}'s feed-forward width as 4 x hidden_size ({4 * hidden}), and this "
            f"model's intermediate_size is {inter}: llama.cpp could not load the file ({fix})"
        )
    if arch in ("Glm4ForCausalLM", "Phi3ForCausalLM"):
        return vocab_token_reason(Path(model_dir), arch, fix)
    return None


def vocab_token_reason(model_dir: Path, arch: str, fix: str) -> str | None:
    """GLM-4's converter and a Phi-3-named file's loader look special tokens up by their text."""
    import json

    try:
        tok = json.loads((model_dir / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return None  # a SentencePiece-only folder: the converter's own vocabulary path
    added = {t.get("content") for t in tok.get("added_tokens") or []}
    if arch == "Glm4ForCausalLM":
        missing = [t for t in GLM4_TOKENS if t not in added]
        what = "llama.cpp's converter reads GLM-4's special tokens"
    else:
        vocab = set((tok.get("model") or {}).get("vocab") or {}) | added
        names = [model_dir.name, str(read_source_repo(model_dir))]
        if not any(n in name.lower() for name in names for n in ("phi3", "phi-3")):
            return None  # llama.cpp applies its Phi-3 token rules only to a file named Phi-3
        missing = [t for t in PHI3_NAMED_TOKENS if t not in vocab]
        what = "llama.cpp's loader looks up Phi-3's tokens by name in a file named Phi-3"
    if not missing:
        return None
    return f"{what}, and this tokenizer has no {', '.join(missing)}: llama.cpp would fail on it (use the model's own tokenizer, or {fix})"


def read_source_repo(model_dir: Path) -> str:
    """The repo id quantkit recorded for a downloaded folder (the converter names the file after it)."""
    import json

    try:
        return json.loads((model_dir / "quantkit-source.json").read_text()).get("repo_id") or ""
    except (OSError, ValueError):
        return ""
