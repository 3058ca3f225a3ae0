"""Builders for the real small models the tests use, cached between runs under the test cache.

- SmolLM2-135M-Instruct: materialized from the bundled GGUF (a real chat model).
- Tiny random Llama and Qwen2 with SmolLM2's tokenizer and chat template (all widths multiples
  of 128 so every method's group sizes divide them; a real tokenizer so the GGUF converter works).
"""

import json
import os
import shutil
from pathlib import Path

TINY = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)


def fixture_cache() -> Path:
    """The folder of built fixture models and recorded results, kept between runs (QUANTKIT_TEST_CACHE)."""
    base = (
        os.environ.get("QUANTKIT_TEST_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quantkit-tests"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_dir() -> Path:
    from quantkit.hub.bundled import materialize

    return materialize("bundled:smollm2-135m-instruct")


def tiny_model_dir(kind: str) -> Path:
    """A tiny random model of ``kind`` ('llama' or 'qwen2'), built once per transformers version."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    final = fixture_cache() / f"tiny-{kind}-{transformers.__version__}"
    if (final / "model.safetensors").is_file():
        return final
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    config = AutoConfig.for_model(
        kind,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **TINY,
    )
    config.architectures = [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[kind]]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    model.generation_config.save_pretrained(staging)
    (staging / "quantkit-source.json").write_text(json.dumps({"source": "test-fixture", "repo_id": f"tiny-{kind}"}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


# The architecture matrix (tests/test_architectures.py, docs/architectures.md): model_type ->
# (architecture class, config overrides). Widths are multiples of 128 (AWQ groups); head_dim is
# set so that Gemma's default (256) does not blow the tiny model up; MoE ones have 4 experts.
ARCH_TINY = dict(TINY, head_dim=32)
MOE = dict(num_experts=4, num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=128)
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaForCausalLM", {}),
    "mistral": ("MistralForCausalLM", {}),
    "qwen2": ("Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3ForCausalLM", {}),
    "qwen3_moe": ("Qwen3MoeForCausalLM", MOE),
    "mixtral": ("MixtralForCausalLM", {**MOE, "moe_intermediate_size": None}),  # experts use intermediate_size
    "gemma": ("GemmaForCausalLM", {}),
    # Gemma 2/3 scale queries by query_pre_attn_scalar (256 by default, = head_dim in the real
    # models); llama.cpp takes it to be head_dim, so keep them equal as the real checkpoints do.
    "gemma2": ("Gemma2ForCausalLM", {"query_pre_attn_scalar": 32}),
    "gemma3_text": ("Gemma3ForCausalLM", {"query_pre_attn_scalar": 32}),
    "phi3": ("Phi3ForCausalLM", {}),
    "granite": ("GraniteForCausalLM", {}),
    "olmo2": ("Olmo2ForCausalLM", {}),
    "stablelm": ("StableLmForCausalLM", {}),
    "starcoder2": ("Starcoder2ForCausalLM", {}),
    "glm4": ("Glm4ForCausalLM", {}),
    "cohere": ("CohereForCausalLM", {}),
    "phi": ("PhiForCausalLM", {}),
    "falcon": ("FalconForCausalLM", {"head_dim": None}),  # FalconConfig derives head_dim
    "gpt_neox": ("GPTNeoXForCausalLM", {}),
}


def arch_config(model_type: str, vocab_size: int = 49152, sizes: dict | None = None, **special_ids):
    """The tiny ``model_type`` config (a transformers PretrainedConfig; no weights); ``sizes``
    overrides the tiny widths (set at construction: some configs derive per-layer lists)."""
    from transformers import AutoConfig

    architecture, overrides = ARCHITECTURES[model_type]
    settings = {k: v for k, v in {**ARCH_TINY, **overrides, **(sizes or {})}.items() if v is not None}
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, tie_word_embeddings=False, **settings)
    for key, value in special_ids.items():  # some configs default them to ids outside a small vocab
        setattr(config, key, value)
    config.architectures = [architecture]
    return config


def tiny_arch_dir(model_type: str) -> Path:
    """A tiny random checkpoint of ``model_type`` with SmolLM2's tokenizer and chat template,
    built once per transformers version (llama.cpp's converter recognizes that tokenizer's
    pre-tokenizer, so every converter that takes a BPE tokenizer.json can read it)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = fixture_cache() / f"arch-{model_type}-{transformers.__version__}"
    if (final / "model.safetensors").is_file():
        return final
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    config = arch_config(
        model_type,
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if model_type == "phi3":  # Phi-4 is a Phi3ForCausalLM with a GPT-2 BPE tokenizer: the converter's BPE path
        path = staging / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": "GPT2Tokenizer"}, indent=2))
    model.generation_config.save_pretrained(staging)
    (staging / "quantkit-source.json").write_text(json.dumps({"source": "test-fixture", "repo_id": f"tiny-{model_type}"}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def linked_copy(src: Path, dst: Path, skip=()) -> Path:
    """A model folder sharing ``src``'s weights (symlinked), its small files copied."""
    dst.mkdir(parents=True)
    for file in src.iterdir():
        if file.name in skip:
            continue
        if file.suffix == ".safetensors":
            os.symlink(file, dst / file.name)
        else:
            shutil.copy(file, dst / file.name)
    return dst
