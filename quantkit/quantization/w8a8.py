"""W8A8-INT8: 8-bit integer weights (static, one scale per output channel, GPTQ) and 8-bit integer
activations (dynamic, one scale per token) via llm-compressor - SmoothQuant first moves activation
outliers into the weights, then GPTQModifier with the "W8A8" scheme - written as compressed-tensors
``int-quantized`` (what vLLM runs with its int8 kernels). The calibration set is AWQ's and GPTQ's,
recorded by hash.

transformers (5.17, compressed-tensors 0.19) loads the artifact on the CPU or a GPU but has no int8
matmul: it decompresses the weights to dense ones on the first forward and quantizes-dequantizes
each token's activations, so it computes what the int8 kernels compute, at dense speed."""

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
from quantkit.quantization.options import CalibrationOptions, CompressedOptions, option

SCHEME = "W8A8"  # compressed-tensors' preset: int8 per-channel weights, int8 dynamic per-token activations
# What llm-compressor 0.14's SmoothQuant cannot do, seen in the architecture matrix
# (docs/architectures.md): refused from config.json before any weight is loaded.
NO_SMOOTHING = (
    "SmoothQuant cannot resolve its mappings for {arch}'s layers (it needs Llama's input_layernorm -> "
    "q/k/v_proj and post_attention_layernorm -> gate/up_proj; llm-compressor stops with 'Error resolving mappings')"
)
BROKEN = (
    "SmoothQuant + GPTQ on {arch} writes an artifact whose top token matches its base's at 0-5% of "
    "positions (quantkit's verification refuses it)"
)
UNLOADABLE = "the W8A8 checkpoint llm-compressor writes for {arch}'s experts does not load back in transformers"
W8A8_REFUSED = {
    **dict.fromkeys(
        ("FalconForCausalLM", "Glm4ForCausalLM", "GPTNeoXForCausalLM", "Olmo2ForCausalLM", "Starcoder2ForCausalLM"),
        NO_SMOOTHING,
    ),
    **dict.fromkeys(("Gemma2ForCausalLM", "Gemma3ForCausalLM", "PhiForCausalLM"), BROKEN),
    "Qwen3MoeForCausalLM": UNLOADABLE,
}


@dataclass
class W8a8Options(CalibrationOptions, CompressedOptions):
    bits: int = option(8, "Weight (and activation) bits.", choices=(8,))
    smoothing_strength: float = option(
        0.8,
        "SmoothQuant alpha: how much of the activations' outlier range moves into the weights (0: none, 1: all).",
        minimum=0.0,
        maximum=1.0,
    )
    dampening_frac: float = option(0.01, "GPTQ: fraction of the Hessian's mean diagonal added for stability.", minimum=0.0)


class W8a8Method:
    name = "w8a8"
    extra = "awq"  # llm-compressor, as awq and gptq
    Options = W8a8Options
    summary = "8-bit int weights + activations (SmoothQuant + GPTQ; compressed-tensors; vLLM, transformers)"
    label = "W8A8"
    tags = ("w8a8", "int8")
    formats = {"compressed-tensors": COMPRESSED_TENSORS}

    def supports(self, config: dict) -> str | None:
        """A causal LM transformers loads whose layers SmoothQuant can smooth into a working
        artifact (W8A8_REFUSED: the architectures where it cannot)."""
        from quantkit.quantization.llmc import experts_reason

        if (reason := experts_reason(config, "W8A8")) is not None:
            return reason
        arch = config["architectures"][0]
        if arch in W8A8_REFUSED:
            return f"W8A8 is not supported for {arch}: {W8A8_REFUSED[arch].format(arch=arch)} (use --method gptq, fp8 or nf4)"
        return None

    def check_config(self, config: dict, options: W8a8Options) -> None:
        """Per-channel scales need no width to divide; only an ignore list that leaves nothing."""
        quantized_widths(config, options.ignore)

    def footprint(self, options: W8a8Options) -> Footprint:
        # SmoothQuant's pass and GPTQ's Hessians: one forward per layer each (AWQ's grid search ~20).
        return Footprint(
            "calibrate",
            (options.bits + CHANNEL_SCALE_BITS,),
            dense_runtime=True,
            calib_samples=options.calib_samples,
            calib_seq_len=options.calib_seq_len,
            ignore=tuple(options.ignore),
            calib_s_factor=0.4,
            hessians=True,  # SmoothQuant's pass holds per-channel statistics only
        )

    def check(self, model_dir: Path, config: dict, options: W8a8Options) -> None:
        from quantkit.quantization.llmc import check_llmc

        check_llmc(self, model_dir, config, options)

    def quantize(self, model_dir: Path, out_dir: Path, options: W8a8Options) -> MethodResult:
        common, extra = quantize_compressed(model_dir, out_dir, options, lambda ignore, model: recipe(options, ignore), "W8A8")
        settings = {
            "bits": options.bits,
            "activation_bits": 8,
            "scheme": SCHEME,
            "weights": "int8 per channel, static",
            "activations": "int8 per token, dynamic",
            "symmetric": True,
            **common,
            "smoothquant": {"smoothing_strength": options.smoothing_strength},
            "gptq": {"dampening_frac": options.dampening_frac},
        }
        return MethodResult(
            format="compressed-tensors",
            engine="transformers",
            settings=settings,
            usage=USAGE,
            extra={
                **extra,
                "runtime": dequantized_runtime("int8", "int8", "7.5+", "vLLM int8 on NVIDIA compute capability 7.5+"),
            },
        )


def recipe(options: W8a8Options, ignore: list[str]):
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    return [
        SmoothQuantModifier(smoothing_strength=options.smoothing_strength, ignore=ignore),
        GPTQModifier(targets=["Linear"], scheme=SCHEME, ignore=ignore, dampening_frac=options.dampening_frac),
    ]


USAGE = """\
Weights are 8-bit integers (one scale per output channel) and activations are quantized to 8-bit
integers per token at run time (W8A8-INT8, SmoothQuant + GPTQ), in the
[compressed-tensors](https://github.com/neuralmagic/compressed-tensors) `int-quantized` format.

vLLM runs it with its int8 kernels (NVIDIA GPUs, compute capability 7.5+): `vllm serve PATH`

transformers loads it too (`pip install compressed-tensors`), but runs it **dequantized**: the int8
weights become dense ones on the first forward and the activations are quantized and dequantized
in float, so it gives the int8 results at dense speed and memory.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
```
"""
