"""The registry of quantization methods: one table, the single source for CLI choices, help,
docs and parametrized tests. Modules are imported only when a method is used."""

from dataclasses import dataclass
from importlib import import_module

from quantkit.core.errors import InputError
from quantkit.quantize.base import Method, MethodResult, QuantizeOptions


@dataclass(frozen=True)
class MethodEntry:
    target: str  # "module:Class"
    summary: str


METHODS: dict[str, MethodEntry] = {
    "awq": MethodEntry("quantkit.quantize.awq.method:AwqMethod", "4-bit AWQ via llm-compressor (vLLM/transformers)"),
    "nf4": MethodEntry("quantkit.quantize.bnb:Nf4Method", "bitsandbytes 4-bit NF4/FP4, double quant"),
    "int8": MethodEntry("quantkit.quantize.bnb:Int8Method", "bitsandbytes LLM.int8()"),
    "gguf": MethodEntry("quantkit.quantize.gguf.method:GgufMethod", "GGUF via llama.cpp (Q8_0, Q4_K_M, ...)"),
}


def get_method(name: str) -> Method:
    try:
        entry = METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}", hint=f"choose one of {', '.join(METHODS)}") from None
    module, cls = entry.target.split(":")
    return getattr(import_module(module), cls)()


def method_support(config: dict) -> dict[str, str | None]:
    """Each registered method's verdict on this architecture: None (supported) or why not."""
    verdicts = {}
    for name in METHODS:
        try:
            verdicts[name] = get_method(name).supports(config)
        except Exception as exc:  # a method whose module cannot even load says why
            verdicts[name] = f"unavailable: {exc}"
    return verdicts


__all__ = ["METHODS", "Method", "MethodResult", "QuantizeOptions", "get_method", "method_support"]
