"""Each method's settings, declared once as a dataclass beside the method (``AwqOptions``,
``GgufOptions``, ...) from the shared parts below, with ``option()`` (quantkit/core/settings.py).
The CLI's flags, the recipe's keys and their strict checks, the Python API's parameters, "method
X does not use Y" errors, the dry-run estimate and docs/methods.md all derive from them."""

from dataclasses import dataclass
from pathlib import Path

from quantkit.core.settings import option

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SAVE_DTYPES = ("bfloat16", "float16")  # what llm-compressor writes the unquantized tensors in


@dataclass
class CommonOptions:
    """What every method takes."""

    trust_remote_code: bool = option(False, "Allow the model's own Python code to run.", recipe=False)
    force: bool = option(False, "Skip the memory preflight.")


@dataclass
class TransformersOptions(CommonOptions):
    """Methods that load the model in transformers (on a device) and may leave modules unquantized."""

    device: str = option("auto", "Where to quantize (auto: a GPU when torch sees one).", choices=DEVICES)
    ignore: list[str] = option([], "Module name or 're:PATTERN' to leave unquantized (repeatable).")
    dtype: str | None = option(None, "dtype of the tensors left unquantized (and of the computation).", choices=DTYPES)


@dataclass
class CompressedOptions(TransformersOptions):
    """Methods that write a compressed-tensors checkpoint through llm-compressor (awq, gptq, w8a8,
    fp8): the tensors they leave unquantized are saved in 16 bits."""

    dtype: str | None = option(None, "dtype of the tensors left unquantized.", choices=("auto", *SAVE_DTYPES))


@dataclass
class CalibrationOptions:
    """Methods that see activations: one calibration set (text, chat formatting, sample count and
    length) for all of them, recorded by hash in the manifest."""

    calib: Path | None = option(None, "Calibration text (.txt or .jsonl; default: quantkit's own).")
    calib_samples: int = option(64, "Number of calibration samples.", minimum=1)
    calib_seq_len: int = option(256, "Tokens per calibration sample.", minimum=8)
