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
    target: str  # "module:Class"; the class declares its summary, tags, formats and runtimes


METHODS: dict[str, MethodEntry] = {
    "awq": MethodEntry("quantkit.quantization.awq.method:AwqMethod"),
    "gptq": MethodEntry("quantkit.quantization.gptq:GptqMethod"),
    "w8a8": MethodEntry("quantkit.quantization.w8a8:W8a8Method"),
    "fp8": MethodEntry("quantkit.quantization.fp8:Fp8Method"),
    "nf4": MethodEntry("quantkit.quantization.bnb:Nf4Method"),
    "int8": MethodEntry("quantkit.quantization.bnb:Int8Method"),
    "gguf": MethodEntry("quantkit.quantization.gguf.method:GgufMethod"),
}


def get_method(name: str) -> Method:
    try:
        entry = METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}", hint=f"choose one of {', '.join(METHODS)}") from None
    module, cls = entry.target.split(":")
    return getattr(import_module(module), cls)()


def summary(name: str) -> str:
    """The method's one line for --help and docs (its module imports nothing heavy)."""
    return get_method(name).summary


def format_facts(method: str | None, fmt: str | None):
    """The ``FormatFacts`` the method declares for ``fmt`` (its default format when None); None
    for a method or format no registered method declares."""
    if method not in METHODS:
        return None
    formats = get_method(method).formats
    return formats.get(fmt or next(iter(formats)))


def default_format(method: str | None) -> str | None:
    """The format the method writes unless told otherwise (None: not a registered method)."""
    return next(iter(get_method(method).formats)) if method in METHODS else None


def engine_formats() -> dict[str, set[str]]:
    """Each runtime -> the formats it loads, from every method's declarations (pick's table)."""
    table: dict[str, set[str]] = {}
    for name in METHODS:
        for fmt, facts in get_method(name).formats.items():
            for runtime in facts.runtimes:
                table.setdefault(runtime, set()).add(fmt)
    return table


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


__all__ = [
    "METHODS",
    "Method",
    "default_format",
    "engine_formats",
    "format_facts",
    "get_method",
    "summary",
    "make_options",
    "method_support",
    "options_class",
    "settings_table",
]
