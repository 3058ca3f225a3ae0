"""The protocol every quantization method implements, and the options they share.

A method module imports nothing heavy at top level (torch, transformers, ... are imported inside
``quantize``), so the registry can ask every method about a config.json cheaply.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class QuantizeOptions:
    """Every setting a method may read; each method documents which ones it uses."""

    bits: int | None = None
    group_size: int | None = None
    ignore: list[str] = field(default_factory=list)
    calib: Path | None = None
    calib_samples: int | None = None
    calib_seq_len: int | None = None
    dtype: str | None = None
    device: str = "auto"
    trust_remote_code: bool = False
    format: str | None = None
    quant_type: str | None = None  # nf4 | fp4 (bnb 4-bit)
    double_quant: bool = True  # bnb 4-bit
    int8_threshold: float = 6.0  # LLM.int8 outlier threshold
    gguf_types: list[str] = field(default_factory=list)
    imatrix: bool | None = None  # gguf: importance matrix (None: on at 4 bits and below)
    llama_cpp_dir: Path | None = None
    ollama: bool = False
    force: bool = False  # skip the RAM preflight


@dataclass
class MethodResult:
    """What a method reports back for the manifest."""

    format: str  # compressed-tensors | autoawq | bitsandbytes | gguf
    engine: str  # transformers | llama.cpp
    settings: dict
    extra: dict = field(default_factory=dict)  # method-specific manifest keys (calibration, ...)
    usage: str = ""  # markdown: how to load the artifact without quantkit


class Method(Protocol):
    name: str
    summary: str
    extra: str  # the pip extra that brings its libraries

    def supports(self, config: dict) -> str | None:
        """None when the architecture in ``config`` can be handled, else the reason why not."""

    def check(self, model_dir: Path, config: dict, options: QuantizeOptions) -> None:
        """Raise PreflightError/InputError/DependencyError with a fix, before loading weights."""

    def quantize(self, model_dir: Path, out_dir: Path, options: QuantizeOptions) -> MethodResult:
        """Write the artifact's weights, tokenizer and configs into ``out_dir``."""
