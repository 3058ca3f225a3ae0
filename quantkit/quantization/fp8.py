"""FP8-dynamic: float8 (e4m3) weights with one scale per output channel and float8 activations
quantized per token at run time, via llm-compressor's QuantizationModifier with the "FP8_DYNAMIC"
scheme - data-free (no calibration set) - written as compressed-tensors ``float-quantized``.

Its runtime is vLLM's FP8 kernels, which need a recent NVIDIA GPU (compute capability 8.9+: Ada,
Hopper; on Ampere vLLM runs the FP8 weights with 16-bit activations through Marlin). transformers
(5.17, compressed-tensors 0.19) loads the artifact on the CPU too, but runs it dequantized: float8
weights become dense ones on the first forward and each token's activations are quantized and
dequantized in float, so it computes what the FP8 kernels compute, at dense speed."""

from dataclasses import dataclass
from pathlib import Path

from quantkit.core.estimate import Footprint
from quantkit.quantization.base import MethodResult
from quantkit.quantization.llmc import (
    CHANNEL_SCALE_BITS,
    COMPRESSED_TENSORS,
    dequantized_runtime,
    quantize_compressed,
    quantized_widths,
)
from quantkit.quantization.options import CompressedOptions, option

SCHEME = "FP8_DYNAMIC"  # compressed-tensors' preset: fp8 e4m3 per-channel weights, fp8 dynamic per-token activations


@dataclass
class Fp8Options(CompressedOptions):
    bits: int = option(8, "Weight (and activation) bits: float8 e4m3.", choices=(8,))


class Fp8Method:
    name = "fp8"
    extra = "awq"  # llm-compressor, as awq and gptq
    Options = Fp8Options
    summary = "FP8-dynamic weights + activations, data-free (compressed-tensors; vLLM on recent GPUs, transformers)"
    label = "FP8"
    tags = ("fp8",)
    formats = {"compressed-tensors": COMPRESSED_TENSORS}

    def supports(self, config: dict) -> str | None:
        """Any causal LM transformers loads (llmc.experts_reason: but Mixtral): every Linear but lm_head is
        quantized on its own."""
        from quantkit.quantization.llmc import experts_reason

        return experts_reason(config, "FP8")

    def check_config(self, config: dict, options: Fp8Options) -> None:
        quantized_widths(config, options.ignore)

    def footprint(self, options: Fp8Options) -> Footprint:
        # Data-free: the whole checkpoint is loaded in its own dtype on the CPU (not quantized at
        # load as bitsandbytes is) and each weight quantized in place.
        return Footprint("datafree", (options.bits + CHANNEL_SCALE_BITS,), dense_runtime=True, ignore=tuple(options.ignore))

    def check(self, model_dir: Path, config: dict, options: Fp8Options) -> None:
        from quantkit.quantization.llmc import check_llmc

        check_llmc(self, model_dir, config, options, calibrated=False)

    def quantize(self, model_dir: Path, out_dir: Path, options: Fp8Options) -> MethodResult:
        common, _ = quantize_compressed(model_dir, out_dir, options, recipe, "FP8", calibrated=False)
        settings = {
            "bits": options.bits,
            "activation_bits": 8,
            "scheme": SCHEME,
            "float8": "e4m3fn",
            "weights": "fp8 per channel, static",
            "activations": "fp8 per token, dynamic",
            **common,
        }
        return MethodResult(
            format="compressed-tensors",
            engine="transformers",
            settings=settings,
            usage=USAGE,
            extra={
                "runtime": dequantized_runtime(
                    "FP8", "float8", "8.9+", "vLLM FP8 on NVIDIA compute capability 8.9+ (Ada, Hopper)"
                )
            },
        )


def recipe(ignore: list[str], model=None):
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return QuantizationModifier(targets=["Linear"], scheme=SCHEME, ignore=ignore)


USAGE = """\
Weights are float8 (e4m3, one scale per output channel) and activations are quantized to float8
per token at run time (FP8-dynamic), in the
[compressed-tensors](https://github.com/neuralmagic/compressed-tensors) `float-quantized` format.

vLLM runs it with its FP8 kernels on NVIDIA GPUs of compute capability 8.9+ (Ada, Hopper; Ampere
runs the FP8 weights with 16-bit activations): `vllm serve PATH`

transformers loads it too (`pip install compressed-tensors`), also on a CPU, but runs it
**dequantized**: the float8 weights become dense ones on the first forward and the activations are
quantized and dequantized in float, so it gives the FP8 results at dense speed and memory.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
```
"""
