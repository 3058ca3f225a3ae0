"""GPTQ: 4-bit weight-only (W4A16) symmetric group quantization via llm-compressor's GPTQModifier,
written as compressed-tensors (what vLLM and transformers load). AWQ's calibration set and chat
formatting and its group size with the 128 -> 64 -> 32 fallback; the rest of the path (oneshot,
save dtype, support files, recorded settings) is llmc.quantize_compressed, shared with w8a8 and fp8."""

from dataclasses import dataclass
from pathlib import Path

from quantkit.core.estimate import Footprint
from quantkit.quantization.base import MethodResult
from quantkit.quantization.llmc import COMPRESSED_TENSORS, compressed_usage, group_size, quantize_compressed
from quantkit.quantization.options import CalibrationOptions, CompressedOptions, option

# compressed-tensors 0.19 removed "group" (dynamic) ordering; "static" is its alias of "weight".
ACTORDERS = ("static", "weight", "none")


@dataclass
class GptqOptions(CalibrationOptions, CompressedOptions):
    bits: int = option(4, "Weight bits.", choices=(4,))
    group_size: int | None = option(
        None,
        "Quantization group size; must divide every layer width (default: 128, else 64 or 32 where 128 does not divide them).",
        minimum=1,
    )
    actorder: str = option(
        "static",
        "GPTQ activation ordering: static (columns quantized in order of activation "
        "size, groups kept contiguous: no runtime cost; 'weight' is the same), or none.",
        choices=ACTORDERS,
    )
    dampening_frac: float = option(0.01, "GPTQ: fraction of the Hessian's mean diagonal added for stability.", minimum=0.0)


class GptqMethod:
    name = "gptq"
    extra = "awq"  # the same libraries as awq (llm-compressor)
    Options = GptqOptions
    summary = "4-bit GPTQ via llm-compressor (compressed-tensors; transformers, vLLM)"
    label = "GPTQ"
    tags = ("gptq",)
    formats = {"compressed-tensors": COMPRESSED_TENSORS}

    def supports(self, config: dict) -> str | None:
        """GPTQ needs no layer mappings: any causal LM transformers loads (llmc.experts_reason: but Mixtral)."""
        from quantkit.quantization.llmc import experts_reason

        return experts_reason(config, "GPTQ")

    def check_config(self, config: dict, options: GptqOptions) -> None:
        group_size(config, options)

    def footprint(self, options: GptqOptions) -> Footprint:
        # The Hessian pass is one forward per layer (AWQ's grid search is ~20): a fraction of the time.
        return Footprint(
            "calibrate",
            (options.bits + 16 / (options.group_size or 128),),
            dense_runtime=True,
            calib_samples=options.calib_samples,
            calib_seq_len=options.calib_seq_len,
            ignore=tuple(options.ignore),
            calib_s_factor=0.3,
            hessians=True,
        )

    def check(self, model_dir: Path, config: dict, options: GptqOptions) -> None:
        from quantkit.quantization.llmc import check_llmc

        check_llmc(self, model_dir, config, options)

    def quantize(self, model_dir: Path, out_dir: Path, options: GptqOptions) -> MethodResult:
        from quantkit.core.modelinfo import load_config

        group = group_size(load_config(model_dir), options)
        common, extra = quantize_compressed(
            model_dir, out_dir, options, lambda ignore, model: gptq_recipe(options, group, ignore), "GPTQ"
        )
        settings = {
            "bits": options.bits,
            "group_size": group,
            "symmetric": True,
            **common,
            "gptq": {"dampening_frac": options.dampening_frac, "actorder": options.actorder},
        }
        return MethodResult(
            format="compressed-tensors",
            engine="transformers",
            settings=settings,
            usage=compressed_usage("4-bit GPTQ"),
            extra=extra,
        )


def gptq_recipe(options: GptqOptions, group: int, ignore: list[str]):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.gptq import GPTQModifier

    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(
            num_bits=options.bits, type="int", symmetric=True, strategy="group", group_size=group, dynamic=False
        ),
    )
    # The ordering goes on the modifier: on the scheme, None would be overridden by its default "static".
    return GPTQModifier(
        config_groups={"group_0": scheme},
        ignore=ignore,
        dampening_frac=options.dampening_frac,
        actorder=None if options.actorder == "none" else options.actorder,
    )
