"""Settings declared once, as dataclass fields made with ``option()``: the CLI's flags, a
recipe's keys and their strict checks, the Python API's parameters and the docs are derived from
them, as huggingface_hub's CLI reuses one annotated type per flag. Methods declare theirs in
quantkit/quantization/options.py; bench its ``BenchOptions`` and ``Gates``.

Metadata says what the derived places need: help text, choices, bounds, the flag's name where it
differs from the field's, and whether a recipe or the CLI offers it."""

import types
import typing
from dataclasses import MISSING, field, fields
from pathlib import Path

from quantkit.core.errors import InputError


def option(
    default,
    help: str,
    *,
    choices=None,
    minimum=None,
    maximum=None,
    flag: str | None = None,
    short: str | None = None,
    recipe: bool = True,
    cli: bool = True,
    envvar: str | None = None,
    recipe_kind: str | None = None,
):
    """A setting: the default and everything the CLI, recipes and docs derive from it."""
    meta = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "minimum": minimum,
        "maximum": maximum,
        "flag": flag,
        "short": short,
        "recipe": recipe,
        "cli": cli,
        "envvar": envvar,
        "recipe_kind": recipe_kind,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


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
            maximum = f.metadata.get("maximum")
            if maximum is not None and isinstance(item, (int, float)) and item > maximum:
                raise SettingError(method, name, f"must be at most {maximum}, not {item}")
    return options


def build(cls, method: str, settings: dict, used_by: dict[str, list[str]] | None = None):
    """``cls(**settings)``, refusing a setting the method does not declare, with who does."""
    import difflib

    known = settings_of(cls)
    for name in settings:
        if name not in known:
            others = (used_by or {}).get(name)
            if others:
                raise InputError(
                    f"method {method} does not use the setting {name!r}", hint=f"it is a setting of {', '.join(others)}"
                )
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"{method} takes: {', '.join(known)}"
            raise InputError(f"{method} has no setting {name!r}", hint=hint)
    values = dict(settings)
    for name, value in values.items():
        if kind_of(known[name]).startswith("path") and isinstance(value, str):
            values[name] = Path(value).expanduser()
        if kind_of(known[name]) == "list[str]" and isinstance(value, (str, tuple)):
            values[name] = [value] if isinstance(value, str) else list(value)
    return validate(cls(**values), method)
