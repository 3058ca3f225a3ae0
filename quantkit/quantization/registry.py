"""The registry of quantization methods: one table, the single source for CLI choices, help,
docs and parametrized tests. A method module is imported when it is used, or when its settings
are listed (method modules import nothing heavy at top level)."""

from dataclasses import dataclass
from functools import cache
from importlib import import_module

from quantkit.core import settings as opts
from quantkit.core.errors import InputError
from quantkit.quantization.base import Method


@dataclass(frozen=True)
class MethodEntry:
    target: str  # "module:Class"
    summary: str


METHODS: dict[str, MethodEntry] = {
    "awq": MethodEntry("quantkit.quantization.awq.method:AwqMethod", "4-bit AWQ via llm-compressor (vLLM/transformers)"),
    "gptq": MethodEntry("quantkit.quantization.gptq:GptqMethod", "4-bit GPTQ via llm-compressor (vLLM/transformers)"),
    "w8a8": MethodEntry("quantkit.quantization.w8a8:W8a8Method", "8-bit int weights + activations (SmoothQuant + GPTQ, vLLM)"),
    "fp8": MethodEntry("quantkit.quantization.fp8:Fp8Method", "FP8-dynamic weights + activations, data-free (vLLM, recent GPUs)"),
    "nf4": MethodEntry("quantkit.quantization.bnb:Nf4Method", "bitsandbytes 4-bit NF4/FP4, double quant"),
    "int8": MethodEntry("quantkit.quantization.bnb:Int8Method", "bitsandbytes LLM.int8()"),
    "gguf": MethodEntry("quantkit.quantization.gguf.method:GgufMethod", "GGUF via llama.cpp (Q8_0, Q4_K_M, ...)"),
}


def get_method(name: str) -> Method:
    try:
        entry = METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}", hint=f"choose one of {', '.join(METHODS)}") from None
    module, cls = entry.target.split(":")
    return getattr(import_module(module), cls)()


def options_class(name: str) -> type:
    return get_method(name).Options


@cache
def settings_table() -> dict[str, tuple]:
    """Every setting any method declares: name -> (its field, the methods that use it), in
    declaration order. One name means one thing: a test checks that kinds agree across methods."""
    table: dict[str, tuple] = {}
    for method in METHODS:
        for name, f in opts.settings_of(options_class(method)).items():
            table.setdefault(name, (f, []))[1].append(method)
    return table


def make_options(method: str, settings: dict | None = None):
    """The method's options from ``settings`` (parameter names), checked: a setting the method
    does not use is an error naming who does, a value outside its choices or bounds too."""
    used_by = {name: users for name, (_f, users) in settings_table().items()}
    return opts.build(options_class(method), method, dict(settings or {}), used_by)


def method_support(config: dict) -> dict[str, str | None]:
    """Each registered method's verdict on this architecture: None (supported) or why not."""
    verdicts = {}
    for name in METHODS:
        try:
            verdicts[name] = get_method(name).supports(config)
        except Exception as exc:  # a method whose module cannot even load says why
            verdicts[name] = f"unavailable: {exc}"
    return verdicts


__all__ = ["METHODS", "Method", "get_method", "make_options", "method_support", "options_class", "settings_table"]
