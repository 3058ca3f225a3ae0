"""AWQ: 4-bit weight-only, activation-aware, asymmetric group quantization.

Default format ``compressed-tensors`` (llm-compressor's AWQModifier + a W4A16 asymmetric group
scheme, ``oneshot`` on local calibration text): what vLLM and transformers load natively.
``--format autoawq`` writes the classic AutoAWQ GEMM layout by repacking that same result
(awq_repack.py). One calibration serves both: its compressed-tensors result is kept in quantkit's
cache (awq_cache.py), so a second format or a second call with the same inputs takes seconds.

On a GPU the model stays on the CPU: llm-compressor's sequential pipeline onloads one decoder
layer at a time to the GPU, so a model bigger than the GPU calibrates too.
"""

import contextlib
import functools
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from quantkit.core import events
from quantkit.core.errors import DependencyError
from quantkit.core.estimate import Footprint
from quantkit.quantization import calibration
from quantkit.quantization.base import FormatFacts, MethodResult
from quantkit.quantization.llmc import (
    ALWAYS_IGNORED,
    COMPRESSED_TENSORS,
    calibration_dtype,
    compressed_usage,
    finish_folder,
    group_size,
    is_ignored,
    matches,
    run_oneshot,
    save_dtype,
)
from quantkit.quantization.options import CalibrationOptions, CompressedOptions, option

FORMATS = ("compressed-tensors", "autoawq")
QUANTIZERS = ("rtn", "gptq")
BITS = (4,)  # W4A16 is what AWQ kernels (vLLM, classic GEMM) exist for
CALIB_BATCH = 8


@dataclass(frozen=True)
class AwqTuning:
    """llm-compressor's AWQ knobs (benchmarks/awq_settings.md measures them on SmolLM2)."""

    duo_scaling: bool | str = True  # scales from activations and weights; "both" searches each
    n_grid: int = 20  # grid points of the scale search
    observer: str = "minmax"  # weight range: "minmax", or "mse" (a clipping search)
    # "independent": AWQ's calibration pass, then the quantizer on its own; "sequential": both in one
    # pass, so an activation-aware observer ("imatrix_mse") sees the calibration activations
    pipeline: str = "independent"


TUNING = AwqTuning()


@dataclass
class AwqOptions(CalibrationOptions, CompressedOptions):
    """AWQ's settings (calibration: 64 samples x 256 tokens by default, ~15 min for SmolLM2-135M
    on 2 CPU cores; the demo uses 16 x 64)."""

    bits: int = option(4, "Weight bits.", choices=BITS)
    group_size: int | None = option(
        None,
        "Quantization group size; must divide every layer width (default: 128, else 64 or 32 where 128 does not divide them).",
        minimum=1,
    )
    format: str = option(
        FORMATS[0],
        "Output layout: compressed-tensors (vLLM, transformers) or autoawq (the classic "
        "GEMM layout, repacked from the same calibration); a recipe may list both.",
        choices=FORMATS,
        recipe_kind="str|list[str]",
    )
    quantizer: str = option(
        QUANTIZERS[0],
        "How the weights are rounded after AWQ's scaling: rtn (to nearest) or gptq (llm-compressor's "
        "GPTQModifier, compensating each rounding error; helps from ~32x128 calibration up, ~1.3-2.5x the time).",
        choices=QUANTIZERS,
    )


class AwqMethod:
    name = "awq"
    extra = "awq"
    Options = AwqOptions
    summary = "4-bit AWQ via llm-compressor (compressed-tensors or AutoAWQ layout; transformers, vLLM)"
    label = "AWQ"
    tags = ("awq",)
    formats = {
        "compressed-tensors": COMPRESSED_TENSORS,
        # The classic GEMM layout: transformers with gptqmodel, vLLM's awq loader (issue 26).
        "autoawq": FormatFacts("transformers", ("autoawq",), ("transformers", "vllm"), "gptqmodel (or autoawq)"),
    }

    def supports(self, config: dict) -> str | None:
        """llm-compressor's AWQ mappings must cover the architecture (see quantkit.quantization.awq.support)."""
        from quantkit.quantization.awq.support import awq_reason

        return awq_reason(config)

    def check_config(self, config: dict, options: AwqOptions) -> None:
        group_size(config, options)  # raises with a working size when the asked one does not divide

    def footprint(self, options: AwqOptions) -> Footprint:
        return Footprint(
            "calibrate",
            (options.bits + 32 / (options.group_size or 128),),
            dense_runtime=options.format == "compressed-tensors",
            calib_samples=options.calib_samples,
            calib_seq_len=options.calib_seq_len,
            ignore=tuple(options.ignore),
            calib_s_factor=1.5 if options.quantizer == "gptq" else 1.0,  # measured 1.3x at 32x128 on SmolLM2
            calib_batch=CALIB_BATCH,
            awq=True,
            hessians=options.quantizer == "gptq",  # a second pass (the "independent" pipeline)
        )

    def check(self, model_dir: Path, config: dict, options: AwqOptions) -> None:
        # Both formats come from llm-compressor's calibration (autoawq is a repack of it); fp32 model
        # in RAM on a CPU; with a GPU, bf16 in RAM and one layer + activations on the GPU.
        from quantkit.quantization.llmc import check_llmc

        check_llmc(self, model_dir, config, options)

    def quantize(self, model_dir: Path, out_dir: Path, options: AwqOptions) -> MethodResult:
        from quantkit.core.modelinfo import load_config

        config = load_config(model_dir)
        group = group_size(config, options)
        fmt = options.format
        # The libraries print progress to stdout; the CLI's stdout is kept for the artifact path.
        with contextlib.redirect_stdout(sys.stderr):
            folder, record, reused = calibrated(model_dir, options, group, config)
            if fmt == "autoawq":
                from quantkit.quantization.awq.repack import USAGE_AUTOAWQ, repack

                repack(folder, out_dir)  # weights and config.json
                copy_result(folder, out_dir, weights=False)
                settings, usage = {**record["settings"], "format": fmt, "version": "gemm"}, USAGE_AUTOAWQ
            else:
                copy_result(folder, out_dir)
                settings, usage = {**record["settings"], "format": fmt}, USAGE_COMPRESSED
        finish_folder(model_dir, out_dir)
        return MethodResult(
            format=fmt,
            engine="transformers",
            settings=settings,
            usage=usage,
            extra={
                "calibration": record["calibration"],
                "calibration_cache": {"key": record["key"], "reused": reused, "calibration_wall_s": record["calibration_wall_s"]},
            },
        )


def awq_mappings(model, ignore: list[str]):
    """llm-compressor's AWQ mappings for this model minus those whose balance layers are all
    ignored: 0.14.0.1 divides by zero smoothing into a layer left unquantized (e.g. up_proj ->
    down_proj with down_proj ignored, the seed use case); such a mapping has nothing to balance."""
    from quantkit.quantization.awq.support import awq_layer_mappings  # llm-compressor's, or quantkit's for the few it lacks

    names = [name for name, _ in model.named_modules()]
    kept = []
    for mapping in awq_layer_mappings(model):
        balanced = [n for n in names if any(matches(n, p) for p in mapping.balance_layers)]
        if not balanced or not all(is_ignored(n, ignore) for n in balanced):
            kept.append(mapping)
    return kept


def calib_batch_size(calib) -> int:
    """Samples per forward pass. AWQ's grid search runs every cached batch through each block
    ~80 times; on CPU one call per short sample is overhead-bound, batches of 8 cut that several
    fold. Samples are packed to at least seq_len tokens, so the truncating collator cuts nothing."""
    return max(1, min(CALIB_BATCH, len(calib.samples)))


def settings_record(options: AwqOptions, group: int, device: str, calib_dtype: str, saved_dtype: str) -> dict:
    """What the calibration was made with (the format is added per artifact)."""
    return {
        "bits": 4,
        "group_size": group,
        "symmetric": False,
        "ignore": ALWAYS_IGNORED + list(options.ignore),
        "calib_samples": options.calib_samples,
        "calib_seq_len": options.calib_seq_len,
        "device": device,
        "calibration_dtype": calib_dtype,
        "save_dtype": saved_dtype,
        "quantizer": options.quantizer,
        "awq": asdict(TUNING),
    }


def calibrated(model_dir: Path, options: AwqOptions, group: int, config: dict) -> tuple[Path, dict, bool]:
    """The compressed-tensors AWQ result for these inputs - the cache's folder, its record, and
    whether it was reused - calibrating (and caching) it first when no earlier run made it."""
    from quantkit.core import preflight
    from quantkit.quantization.awq import cache as awq_cache

    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise DependencyError(f"transformers cannot be imported: {exc}", hint="pip install 'quantkit[awq]'") from exc
    device = preflight.resolve_device(options.device)
    calib_dtype = calibration_dtype(device)
    saved = save_dtype(options, config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=options.trust_remote_code)
    calib = calibration.build(tokenizer, options.calib, options.calib_samples, options.calib_seq_len)
    settings = settings_record(options, group, device, calib_dtype, saved)
    keyed = {**settings, "trust_remote_code": options.trust_remote_code, "batch": calib_batch_size(calib)}
    key = awq_cache.cache_key(model_dir, keyed, calib.sha256)
    if (hit := awq_cache.lookup(key)) is not None:
        events.logger(__name__).info(f"reusing the AWQ calibration cached as {key} (same model, settings and data)")
        return *hit, True

    def build(staging: Path) -> None:
        calibrate(model_dir, staging, options, group, calib, tokenizer, calib_dtype, saved)

    folder, record = awq_cache.store(key, build, {"settings": settings, "calibration": calib.record()})
    return folder, record, False


def copy_result(folder: Path, out_dir: Path, weights: bool = True) -> None:
    """The cached compressed-tensors folder into the artifact (all of it, or all but the weights
    and config.json, which the autoawq repack writes)."""
    from quantkit.quantization.awq.cache import RECORD
    from quantkit.quantization.awq.repack import INDEX

    for path in Path(folder).iterdir():
        skip = path.suffix == ".safetensors" or path.name in ("config.json", INDEX)
        if path.is_file() and path.name != RECORD and (weights or not skip):
            shutil.copyfile(path, Path(out_dir) / path.name)


def calibrate(
    model_dir: Path, out_dir: Path, options: AwqOptions, group: int, calib, tokenizer, calib_dtype: str, saved: str
) -> None:
    """llm-compressor's AWQ + W4A16 asymmetric groups on ``calib`` through llmc.run_oneshot; the
    compressed-tensors folder goes to ``out_dir``. The model stays on the CPU: the sequential
    pipeline (which the default "independent" pipeline picks for AWQ) onloads one layer at a time
    to llm-compressor's main device (cuda:0 when there is a GPU)."""
    recipe = functools.partial(awq_recipe, options, group)
    tuned = {"pipeline": TUNING.pipeline, "batch_size": calib_batch_size(calib)}
    run_oneshot(model_dir, out_dir, options, recipe, "AWQ", tokenizer, calib, calib_dtype, saved, **tuned)


def awq_recipe(options: AwqOptions, group: int, ignore: list[str], model) -> list:
    """AWQ's smoothing (mappings read from ``model``), then the W4A16 asymmetric group quantizer."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(
            num_bits=4, type="int", symmetric=False, strategy="group", group_size=group, dynamic=False, observer=TUNING.observer
        ),
    )
    return [
        AWQModifier(duo_scaling=TUNING.duo_scaling, n_grid=TUNING.n_grid, mappings=awq_mappings(model, ignore)),
        (GPTQModifier if options.quantizer == "gptq" else QuantizationModifier)(
            config_groups={"group_0": scheme}, targets=["Linear"], ignore=ignore
        ),
    ]


USAGE_COMPRESSED = compressed_usage("4-bit AWQ")
