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
