"""GPTQ: 4-bit weight-only (W4A16) symmetric group quantization via llm-compressor's GPTQModifier,
written as compressed-tensors. Reuses AWQ's plumbing (calibration set with chat formatting, group
size with its 128 -> 64 -> 32 fallback, CPU pin-memory guard, save dtype, support files)."""

import contextlib
import sys
from pathlib import Path

from quantkit.core.errors import DependencyError, QuantizeError
from quantkit.quantize.base import MethodResult, QuantizeOptions
from quantkit.quantize.awq import method as awq

DAMPENING_FRAC = 0.01  # llm-compressor's default
ACTORDER = "static"  # llm-compressor's default: group order fixed up front (no runtime permutation)


class GptqMethod:
    name = "gptq"
    summary = "4-bit GPTQ (W4A16) via llm-compressor, compressed-tensors"
    extra = "awq"  # same libraries as awq (llm-compressor)

    def supports(self, config: dict) -> str | None:
        """GPTQ needs no layer mappings: any causal LM transformers loads."""
        from quantkit.quantize.support import causal_lm_reason

        return causal_lm_reason(config)

    def check(self, model_dir: Path, config: dict, options: QuantizeOptions) -> None:
        # AWQ's checks (format, bits, group size, calibration file, dtype, llm-compressor, memory)
        # minus its mapping support; the memory estimate is AWQ's (fp32 model + activations).
        proxy = type("AsAwq", (), {"name": "awq", "extra": self.extra, "supports": lambda _, c: self.supports(c)})()
        awq.AwqMethod.check(proxy, model_dir, config, options)

    def quantize(self, model_dir: Path, out_dir: Path, options: QuantizeOptions) -> MethodResult:
        from transformers import AutoTokenizer

        from quantkit.core.modelinfo import load_config

        config = load_config(model_dir)
        group = awq.group_size(config, options)
        device = awq.resolve_device(options)
        calib_dtype = "float32" if device == "cpu" else "bfloat16"
        saved = awq.save_dtype(options, config)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=options.trust_remote_code)
        calib = awq.calibration_set(model_dir, options, tokenizer)
        with contextlib.redirect_stdout(sys.stderr):
            calibrate(model_dir, out_dir, options, group, calib, tokenizer, calib_dtype, saved)
        awq.finish_folder(model_dir, out_dir)
        settings = {**awq.settings_record(options, group, device, calib_dtype, saved), "symmetric": True,
                    "format": "compressed-tensors", "gptq": {"dampening_frac": DAMPENING_FRAC, "actorder": ACTORDER}}
        settings.pop("awq")
        return MethodResult(format="compressed-tensors", engine="transformers", settings=settings,
                            usage=awq.USAGE_COMPRESSED.replace("4-bit AWQ", "4-bit GPTQ"),
                            extra={"calibration": calib.record()})


def calibrate(model_dir, out_dir, options, group, calib, tokenizer, calib_dtype, saved) -> None:
    try:
        import torch
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.gptq import GPTQModifier
        from transformers import AutoModelForCausalLM
    except ImportError as exc:
        raise DependencyError(f"llm-compressor cannot be imported: {exc}", hint="pip install 'quantkit[awq]'") from exc
    trust = options.trust_remote_code
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, calib_dtype), trust_remote_code=trust)
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=group, dynamic=False))
    ignore = awq.ALWAYS_IGNORED + [awq.as_regex(p) for p in options.ignore]
    recipe = GPTQModifier(config_groups={"group_0": scheme}, ignore=ignore, dampening_frac=DAMPENING_FRAC)
    try:
        with awq.cpu_only_pin_memory_guard():
            oneshot(model=model, tokenizer=tokenizer, dataset=Dataset.from_dict({"text": calib.samples}), recipe=recipe,
                    max_seq_length=calib.seq_len, num_calibration_samples=len(calib.samples),
                    shuffle_calibration_samples=False, trust_remote_code_model=trust)
        model.to(getattr(torch, saved))
        model.save_pretrained(out_dir, save_compressed=True)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise QuantizeError(f"llm-compressor GPTQ failed: {exc}") from exc
    finally:
        from llmcompressor.core import reset_session

        reset_session()
        del model
        awq.free_accelerator_memory()
    tokenizer.save_pretrained(out_dir)
