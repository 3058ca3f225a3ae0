"""Before the long conversion: refuse what llama.cpp's converter cannot do (an architecture it
lacks, a config or vocabulary it would mangle, a BPE pre-tokenizer it does not recognize)."""

import ast
import json
import re
from hashlib import sha256
from pathlib import Path

from quantkit.core.errors import PreflightError
from quantkit.quantization.gguf.checks import hf_tokenizer
from quantkit.quantization.gguf.tools import Converter, supported_architectures


def preflight(converter: Converter, model_dir: Path, config: dict) -> None:
    """Fail before the long conversion: an architecture the converter lacks, or a BPE tokenizer
    whose pre-tokenizer it cannot recognize (the converter's own probe text and hash list)."""
    archs = config.get("architectures") or []
    if not archs:
        raise PreflightError(f"{model_dir}/config.json names no architectures", hint="llama.cpp's converter needs one")
    if archs[0] not in supported_architectures(converter):
        commit = (converter.commit or "unknown")[:9]
        raise PreflightError(
            f"llama.cpp's converter (commit {commit}) does not support architecture {archs[0]}",
            hint="see convert_hf_to_gguf.py --print-supported-models, or use a newer checkout via `llama_cpp_dir`",
        )
    from quantkit.quantization.support import converter_config_reason, converter_vocab_reason

    if (reason := converter_vocab_reason(converter, model_dir, archs[0])) is not None:
        raise PreflightError(reason)
    if (reason := converter_config_reason(model_dir, config)) is not None:  # what its model classes assume
        raise PreflightError(reason)
    if needs_pre_tokenizer_hash(model_dir):
        known = known_pre_tokenizers(converter)
        if known:
            probe, hashes = known
            chkhsh = sha256(str(hf_tokenizer(model_dir).encode(probe)).encode()).hexdigest()
            if chkhsh not in hashes:
                raise PreflightError(
                    f"llama.cpp's converter does not recognize this tokenizer's pre-tokenizer (chkhsh {chkhsh[:16]}...): "
                    "BPE pre-tokenizer was not recognized",
                    hint="llama.cpp would split text differently than the model was trained on; use a tokenizer it "
                    "knows or a newer llama.cpp checkout via --llama-cpp-dir",
                )


def needs_pre_tokenizer_hash(model_dir: Path) -> bool:
    """Whether the converter will take the BPE (gpt2) path, where the pre-tokenizer must be known:
    a BPE tokenizer.json without a SentencePiece model (byte-fallback BPE without ByteLevel is
    read as a Llama-2 vocabulary instead)."""
    path = model_dir / "tokenizer.json"
    if (model_dir / "tokenizer.model").is_file() or not path.is_file():
        return False
    try:
        tok = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    model = tok.get("model") or {}
    byte_level = '"ByteLevel"' in json.dumps(tok.get("pre_tokenizer"))
    return model.get("type") == "BPE" and (byte_level or not model.get("byte_fallback"))


def known_pre_tokenizers(converter: Converter) -> tuple[str, set[str]] | None:
    """The converter's probe text and the hashes of the pre-tokenizers it knows (from its source)."""
    for path in (converter.root / "conversion" / "base.py", converter.script):
        text = path.read_text() if path.is_file() else ""
        probe = re.search(r"^\s*chktxt = (.+)$", text, re.MULTILINE)
        if probe:
            return ast.literal_eval(probe.group(1)), set(re.findall(r'chkhsh == "([0-9a-f]{64})"', text))
    return None
