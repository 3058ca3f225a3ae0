"""Load a checkpoint for quantize-at-load without memory-mapping its files.

transformers maps every safetensors file and, on the CPU, keeps the unquantized tensors (embeddings,
norms, lm_head) as views into the mapping: every page the quantizer read stays resident until the
model is freed, so bitsandbytes' quantize-at-load peaked at the whole bf16 file + the quantized
model (1B: 3.4 GB for a 2.35 GB checkpoint). Read with ``pread`` instead, each tensor is a private
copy made when it is needed and freed once quantized (1B: 1.9 GB); the saved files are identical.
"""

from pathlib import Path


class _SliceDict(dict):
    """The lazy state dict: AutoModel.from_pretrained deep-copies its kwargs, slices cannot be."""

    def __deepcopy__(self, memo):
        return self


def from_pretrained_pread(model_dir: Path, trust_remote_code: bool = False, **kwargs):
    """``AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)`` reading its safetensors with
    pread; the plain (mapped) load where that does not apply (pickle weights, remote code)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files or trust_remote_code:
        return AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust_remote_code, **kwargs)
    from safetensors import safe_open
    from transformers.models.auto.auto_factory import _get_model_class

    config = AutoConfig.from_pretrained(model_dir)
    model_class = _get_model_class(config, AutoModelForCausalLM._model_mapping)
    handles = [safe_open(str(f), framework="pt", device="cpu", backend="pread") for f in files]
    state = _SliceDict({name: h.get_slice(name) for h in handles for name in h.keys()})
    model = model_class.from_pretrained(None, config=config, state_dict=state, **kwargs)
    model.name_or_path = str(model_dir)
    if (Path(model_dir) / "generation_config.json").is_file():  # what from_pretrained(folder) reads too
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(model_dir)
    return model
