"""The registry of quantization methods: one table, the single source for CLI choices, help,
docs and parametrized tests. Modules are imported only when a method is used."""

from dataclasses import dataclass
from importlib import import_module

from quantkit.errors import InputError
from quantkit.methods.base import Method, MethodResult, QuantizeOptions


@dataclass(frozen=True)
class MethodEntry:
    target: str  # "module:Class"
    summary: str


METHODS: dict[str, MethodEntry] = {
    "awq": MethodEntry("quantkit.methods.awq:AwqMethod", "4-bit AWQ via llm-compressor (vLLM/transformers)"),
    "nf4": MethodEntry("quantkit.methods.bnb:Nf4Method", "bitsandbytes 4-bit NF4/FP4, double quant"),
    "int8": MethodEntry("quantkit.methods.bnb:Int8Method", "bitsandbytes LLM.int8()"),
    "gguf": MethodEntry("quantkit.methods.gguf:GgufMethod", "GGUF via llama.cpp (Q8_0, Q4_K_M, ...)"),
}


def get_method(name: str) -> Method:
    try:
        entry = METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}", hint=f"choose one of {', '.join(METHODS)}") from None
    module, cls = entry.target.split(":")
    return getattr(import_module(module), cls)()


__all__ = ["METHODS", "Method", "MethodResult", "QuantizeOptions", "get_method"]
