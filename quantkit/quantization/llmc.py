"""What the llm-compressor methods (gptq, w8a8, fp8; awq for its checks) share: the checks
before any weight is loaded, and ``oneshot`` with a recipe on the model, saved as compressed-tensors."""

import contextlib
import importlib.util
import re
from pathlib import Path

from quantkit.core.errors import DependencyError, PreflightError, QuantizeError, missing_extra
from quantkit.quantization import calibration

ALWAYS_IGNORED = ["lm_head"]


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
) -> None:
    """llm-compressor's ``oneshot`` with ``build_recipe(ignore)`` on the model (held on the CPU;
    its pipeline onloads one layer at a time to a GPU when there is one), on ``calib`` (None: a
    data-free scheme), then the compressed-tensors folder into ``out_dir``. Shared by gptq, w8a8, fp8."""
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
        recipe = build_recipe(ALWAYS_IGNORED + [as_regex(p) for p in options.ignore])
        with cpu_only_pin_memory_guard():
            oneshot(model=model, tokenizer=tokenizer, recipe=recipe, trust_remote_code_model=trust, **data)
        model.to(getattr(torch, saved))
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


def free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
