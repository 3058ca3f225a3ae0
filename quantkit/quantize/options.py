"""Each method's settings, declared once as a dataclass beside the method (``AwqOptions``,
``GgufOptions``, ...). The CLI's flags, the recipe's keys and their strict checks, the Python
API's parameters, "method X does not use Y" errors, the dry-run estimate and docs/methods.md are
all derived from these declarations, as huggingface_hub's CLI reuses one annotated type per flag.

A setting is a dataclass field made with ``option()``; its metadata says what the derived
places need: help text, choices, lower bound, the flag's name where it differs, and whether a
recipe or the CLI offers it."""

import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from quantkit.core.errors import InputError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def option(default, help: str, *, choices=None, minimum=None, flag: str | None = None, recipe: bool = True,
           cli: bool = True, envvar: str | None = None, recipe_kind: str | None = None):
    """A method setting: the default and everything the CLI, recipes and docs derive from it."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum, "flag": flag,
            "recipe": recipe, "cli": cli, "envvar": envvar, "recipe_kind": recipe_kind}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


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
class CalibrationOptions:
    """Methods that see activations: one calibration set (text, chat formatting, sample count and
    length) for all of them, recorded by hash in the manifest."""

    calib: Path | None = option(None, "Calibration text (.txt or .jsonl; default: quantkit's own).")
    calib_samples: int = option(64, "Number of calibration samples.", minimum=1)
    calib_seq_len: int = option(256, "Tokens per calibration sample.", minimum=8)


# --- what the derived places read ---------------------------------------------------------------

def kind_of(f) -> str:
    """The field's value kind: bool, int, float, str, path or list[str], with '?' when None is allowed."""
    hint = f.type
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if typing.get_origin(hint) is list:
        return "list[str]"
    name = {bool: "bool", int: "int", float: "float", str: "str", Path: "path"}[hint]
    return name + ("?" if optional else "")


def settings_of(cls) -> dict:
    """name -> dataclass field of every setting ``cls`` declares."""
    return {f.name: f for f in fields(cls)}


def default_of(f):
    return f.default_factory() if f.default is MISSING else f.default


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


class SettingError(InputError):
    """A setting's value the method refuses; ``setting`` names it so the CLI can say its flag."""

    def __init__(self, method: str, setting: str, detail: str, hint: str | None = None):
        super().__init__(f"{method}: {setting} {detail}", hint=hint)
        self.method, self.setting, self.detail = method, setting, detail


def validate(options, method: str):
    """Choices and lower bounds, the same for CLI, recipe and API (one message, in parameter names)."""
    for name, f in settings_of(type(options)).items():
        value = getattr(options, name)
        if value is None:
            continue
        choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
        for item in value if isinstance(value, list) else [value]:
            if choices and item not in choices:
                raise SettingError(method, name, f"{item!r} is not one of {', '.join(map(str, choices))}")
            if minimum is not None and isinstance(item, (int, float)) and item < minimum:
                raise SettingError(method, name, f"must be at least {minimum}, not {item}")
    return options


def build(cls, method: str, settings: dict, used_by: dict[str, list[str]] | None = None):
    """``cls(**settings)``, refusing a setting the method does not declare, with who does."""
    known = settings_of(cls)
    for name in settings:
        if name not in known:
            others = (used_by or {}).get(name)
            hint = f"it is a setting of {', '.join(others)}" if others else f"{method} takes: {', '.join(known)}"
            raise InputError(f"method {method} does not use the setting {name!r}", hint=hint)
    values = dict(settings)
    for name, value in values.items():
        if kind_of(known[name]).startswith("path") and isinstance(value, str):
            values[name] = Path(value).expanduser()
        if kind_of(known[name]) == "list[str]" and isinstance(value, (str, tuple)):
            values[name] = [value] if isinstance(value, str) else list(value)
    return validate(cls(**values), method)
