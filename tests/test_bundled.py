import json
import subprocess
import sys

import pytest

from quantkit.core.errors import InputError
from quantkit.core.modelinfo import describe
from quantkit.hub.bundled import bundled_entry


def test_unknown_bundled_name_is_an_input_error():
    with pytest.raises(InputError, match="smollm2-135m-instruct"):
        bundled_entry("bundled:nope")


def test_smollm2_checkpoint_is_plain_hf_and_chats(smollm2):
    """The materialized checkpoint loads with plain transformers (no quantkit) and answers."""
    assert (smollm2 / "model.safetensors").is_file()
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config
    info = describe(smollm2)
    assert info.architecture == "LlamaForCausalLM"
    assert 120e6 < info.n_params < 150e6
    code = f"""
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(smollm2)!r})
model = AutoModelForCausalLM.from_pretrained({str(smollm2)!r})
ids = tok.apply_chat_template([{{"role": "user", "content": "What is the capital of France?"}}],
                              add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**ids, max_new_tokens=20, do_sample=False)
print("ANSWER:", tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Paris" in result.stdout


def test_smollm2_tokenizer_is_plain_byte_level_with_chat_eos(smollm2):
    """The GGUF-born tokenizer is restored to the original's form: byte-level BPE without
    SentencePiece byte fallback, end of turn <|im_end|> as EOS (what llama.cpp's converter needs)."""
    from transformers import AutoTokenizer

    data = json.loads((smollm2 / "tokenizer.json").read_text())
    assert data["model"]["byte_fallback"] is False and data["decoder"]["type"] == "ByteLevel"
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    text = "Hello world!\n  def f(x):\n\treturn 42  # 你好 😀"
    assert tok.decode(tok.encode(text)) == text
