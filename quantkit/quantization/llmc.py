"""What the llm-compressor methods (gptq, w8a8, fp8; awq for its checks and plumbing) share: the
checks before any weight is loaded, which layers ``ignore`` leaves, and ``oneshot`` with a recipe
on the model, saved as compressed-tensors with the settings every such artifact records."""

import contextlib
import importlib.util
import re
import sys
from pathlib import Path

from quantkit.core.errors import DependencyError, InputError, PreflightError, QuantizeError, missing_extra
from quantkit.core.modelinfo import config_dtype, text_config
from quantkit.quantization import calibration
from quantkit.quantization.base import FormatFacts, copy_support_files
from quantkit.quantization.options import SAVE_DTYPES

ALWAYS_IGNORED = ["lm_head"]
# What every llm-compressor method writes: transformers loads it (dequantized where it has no
# kernel) and vLLM runs it (its compressed-tensors loader; docs/vllm.md).
COMPRESSED_TENSORS = FormatFacts("transformers", ("compressed-tensors",), ("transformers", "vllm"), "compressed-tensors")
# w8a8's and fp8's per-channel schemes keep one 16-bit scale per output row: 16 / in_features
# bits per weight (>= 512 inputs in real models).
CHANNEL_SCALE_BITS = 0.03
FALLBACK_GROUPS = (128, 64, 32)  # awq's and gptq's group sizes, tried in order when none is given


# Architectures whose experts llm-compressor saves linearized under their old names
# (block_sparse_moe.experts.N.*_proj) and transformers 5 does not fuse back on load: the artifact
# loads with new, random experts (seen for Mixtral's FP8; GPTQ and W8A8 save the same way).
# Qwen3-MoE's GPTQ and FP8 experts load back (its W8A8: w8a8.W8A8_REFUSED).
UNLOADABLE_EXPERTS = ("MixtralForCausalLM",)


def experts_reason(config: dict, label: str) -> str | None:
    """Why ``label`` (GPTQ, W8A8, FP8) of this mixture-of-experts architecture would be unusable."""
    from quantkit.quantization.support import causal_lm_reason

    if (reason := causal_lm_reason(config)) is not None:
        return reason
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture in UNLOADABLE_EXPERTS:
        return (
            f"{label} of {architecture}'s mixture-of-experts layers is not supported: llm-compressor saves the "
            "experts linearized and transformers loads them back as new, random experts (use --method gguf or nf4)"
        )
    return None


def check_llmc(method, model_dir: Path, config: dict, options, calibrated: bool = True) -> None:
    """Everything before weights load: the architecture, remote code, what config.json decides,
    the calibration file (``calibrated`` methods), llm-compressor itself, and the memory."""
    from quantkit.core import preflight

    if (reason := method.supports(config)) is not None:
        raise PreflightError(reason)
    preflight.require_trusted_code(config, options.trust_remote_code)
    method.check_config(config, options)
    if calibrated:
        calibration.read_records(options.calib)  # a missing, empty or malformed file fails now
    if importlib.util.find_spec("llmcompressor") is None:
        raise missing_extra("llmcompressor", method.extra)
    preflight.check_quantize_memory(config, method.name, method.footprint(options), options)


def layer_widths(config: dict) -> dict[str, int]:
    """Input width of each quantized Linear of a Llama-shaped block (what AWQ groups run along)."""
    cfg = text_config(config)
    hidden = cfg["hidden_size"]
    heads = cfg.get("num_attention_heads") or 1
    attn_out = heads * (cfg.get("head_dim") or hidden // heads)
    inter = (
        cfg.get("ffn_hidden_size") or cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden
    )  # Falcon: ffn_hidden_size
    return {
        "self_attn.q_proj": hidden,
        "self_attn.k_proj": hidden,
        "self_attn.v_proj": hidden,
        "self_attn.o_proj": attn_out,
        "mlp.gate_proj": hidden,
        "mlp.up_proj": hidden,
        "mlp.down_proj": inter,
    }


def group_size(config: dict, options) -> int:
    """The group size to use; refuse one that does not divide every quantized layer's input width.
    Without a group size, the default 128 falls back to 64/32 (SmolLM2's 576 needs 64)."""
    widths = quantized_widths(config, options.ignore)
    fits = [g for g in FALLBACK_GROUPS if all(w % g == 0 for w in widths.values())]
    if options.group_size is None:
        if not fits:
            raise PreflightError(
                f"no group size in {FALLBACK_GROUPS} divides the layer widths {sorted(set(widths.values()))}",
                hint="give a `group_size` that divides them",
            )
        return fits[0]
    bad = {name: w for name, w in widths.items() if w % options.group_size}
    if bad:
        name, width = next(iter(bad.items()))
        hint = f"use `group_size={fits[0]}`" if fits else "choose a size that divides every layer width"
        raise PreflightError(f"`group_size` {options.group_size} does not divide the input width {width} of {name}", hint=hint)
    return options.group_size


def quantized_widths(config: dict, ignore: list[str]) -> dict[str, int]:
    """``layer_widths`` of the layers ``ignore`` leaves to quantize; refused when it leaves none."""
    widths = {name: w for name, w in layer_widths(config).items() if not is_ignored(f"model.layers.0.{name}", ignore)}
    if not widths:
        raise InputError("`ignore` leaves no layer to quantize", hint="ignore fewer modules")
    return widths


def is_ignored(name: str, patterns: list[str]) -> bool:
    """Whether --ignore patterns ('re:REGEX' from the start, or a plain name's last parts) hit ``name``."""
    return any(matches(name, as_regex(p)) for p in patterns)


def matches(name: str, pattern: str) -> bool:
    return re.match(pattern[3:], name) is not None if pattern.startswith("re:") else name == pattern


def save_dtype(options, config: dict) -> str:
    """Non-quantized tensors are saved in 16 bits: the asked dtype, else the checkpoint's, else bf16."""
    for candidate in (options.dtype, config_dtype(config)):
        if candidate in SAVE_DTYPES:
            return candidate
    return "bfloat16"


def finish_folder(model_dir: Path, out_dir: Path) -> None:
    """Support files the libraries did not write (generation config, chat template), and normal
    permissions: safetensors writes weights through a private (0600) temp file."""
    copy_support_files(model_dir, out_dir)
    for path in Path(out_dir).iterdir():
        if path.is_file():
            path.chmod(0o644)


def quantize_compressed(model_dir: Path, out_dir: Path, options, build_recipe, label: str, calibrated: bool = True):
    """gptq's, w8a8's and fp8's whole quantization: the tokenizer, the calibration set (AWQ's: same
    samples and chat formatting; none when not ``calibrated``), ``oneshot`` with
    ``build_recipe(ignore, model)``, the support files. Returns the settings every such artifact records
    and the manifest's extra (the calibration record); each method adds its own keys."""
    from transformers import AutoTokenizer

    from quantkit.core.modelinfo import load_config
    from quantkit.core.preflight import resolve_device

    device = resolve_device(options.device)
    saved = save_dtype(options, load_config(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=options.trust_remote_code)
    calib = calibration.build(tokenizer, options.calib, options.calib_samples, options.calib_seq_len) if calibrated else None
    load_dtype = calibration_dtype(device) if calibrated else "auto"  # data-free: the checkpoint's own dtype
    with contextlib.redirect_stdout(sys.stderr):  # llm-compressor prints progress; stdout is the CLI's
        run_oneshot(model_dir, out_dir, options, build_recipe, label, tokenizer, calib, load_dtype, saved)
    finish_folder(model_dir, out_dir)
    settings = {
        "ignore": ALWAYS_IGNORED + list(options.ignore),
        "device": device,
        "save_dtype": saved,
        "format": "compressed-tensors",
    }
    if calib is None:
        return {**settings, "data_free": True}, {}
    settings.update(calib_samples=options.calib_samples, calib_seq_len=options.calib_seq_len, calibration_dtype=load_dtype)
    return settings, {"calibration": calib.record()}


def calibration_dtype(device: str) -> str:
    """fp32 on a CPU (fp16/bf16 matmuls there are ~100x slower); bf16 on a GPU (fp16's range
    overflows on some models' activations)."""
    return "float32" if device == "cpu" else "bfloat16"


def run_oneshot(
    model_dir: Path,
    out_dir: Path,
    options,
    build_recipe,
    label: str,
    tokenizer,
    calib=None,
    load_dtype: str = "float32",
    saved: str = "bfloat16",
    **oneshot_args,
) -> None:
    """llm-compressor's ``oneshot`` with ``build_recipe(ignore, model)`` (the model for recipes
    that read its layers: AWQ's mappings) on the model (held on the CPU; its pipeline onloads one
    layer at a time to a GPU when there is one), on ``calib`` (None: a data-free scheme), then the
    compressed-tensors folder into ``out_dir``. The one calibrate of awq, gptq, w8a8 and fp8;
    ``oneshot_args`` are a method's own (AWQ: its pipeline and batch size)."""
    try:
        import torch
        from datasets import Dataset
        from llmcompressor import oneshot
        from transformers import AutoModelForCausalLM
    except ImportError as exc:
        raise DependencyError(f"llm-compressor cannot be imported: {exc}", hint="pip install 'quantkit[awq]'") from exc
    trust = options.trust_remote_code
    dtype = load_dtype if load_dtype == "auto" else getattr(torch, load_dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust)
    data = (
        {}
        if calib is None
        else {
            "dataset": Dataset.from_dict({"text": calib.samples}),
            "max_seq_length": calib.seq_len,
            "num_calibration_samples": len(calib.samples),
            "shuffle_calibration_samples": False,
        }
    )
    try:
        recipe = build_recipe(ALWAYS_IGNORED + [as_regex(p) for p in options.ignore], model)
        with cpu_only_pin_memory_guard():
            oneshot(model=model, tokenizer=tokenizer, recipe=recipe, trust_remote_code_model=trust, **data, **oneshot_args)
        cast_for_saving(model, getattr(torch, saved))
        model.save_pretrained(out_dir, save_compressed=True)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise QuantizeError(f"llm-compressor {label} failed: {exc}") from exc
    finally:
        # The session keeps the model and its hooks after oneshot: clear it, free the GPU.
        from llmcompressor.core import reset_session

        reset_session()
        del model
        free_accelerator_memory()
    tokenizer.save_pretrained(out_dir)


def dequantized_runtime(kind: str, weights: str, capability: str, kernels: str) -> dict:
    """The manifest's runtime record of a weights + activations scheme (w8a8's int8, fp8's FP8)
    that transformers runs dequantized and vLLM with its ``kind`` kernels."""
    return {
        "transformers": "dequantized",
        "note": (
            f"transformers has no {kind} matmul here: it decompresses the {weights} weights to dense ones on "
            f"the first forward and quantizes-dequantizes each token's activations ({kind} results at dense "
            f"speed); vLLM runs the {kind} kernels (NVIDIA, compute capability {capability})"
        ),
        "kernels": kernels,
    }


def compressed_usage(what: str) -> str:
    """The card's "how to load it" for a compressed-tensors artifact of ``what`` ("4-bit GPTQ")."""
    return f"""\
Weights are {what} in the [compressed-tensors](https://github.com/neuralmagic/compressed-tensors)
`pack-quantized` format (`pip install compressed-tensors`).

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
```

vLLM: `vllm serve PATH`
"""


def as_regex(pattern: str) -> str:
    """A plain module name as the 're:' pattern that matches it anywhere (compressed-tensors
    matches plain names only against the full name)."""
    return pattern if pattern.startswith("re:") else rf"re:(.*\.)?{re.escape(pattern)}$"


@contextlib.contextmanager
def cpu_only_pin_memory_guard():
    """llm-compressor 0.14's AWQ pins cached activations for faster host-to-GPU copies; on a torch
    without any accelerator pin_memory raises "Cannot access accelerator device", so make it a
    no-op there (and only there: with a GPU, pinning is kept)."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def cast_for_saving(model, dtype) -> None:
    """``model.to(dtype)`` on the tensors themselves. After the sequential or data-free pipeline
    the model is offloaded (compressed-tensors' OffloadCache): a plain ``.to`` would cast the
    onloaded copies a GPU run hands out and drop them, saving the old dtype under the manifest's
    new one; with onloading disabled the cache hands out (and takes back) the stored tensors."""
    from compressed_tensors.offload import disable_onloading

    with disable_onloading():
        model.to(dtype)


def free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
