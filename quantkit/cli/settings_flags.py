"""Click options derived from settings dataclasses (quantkit/quantization/options.py): one flag per
setting, its help saying which methods use it, and the check that a flag given on the command
line is one the chosen method uses. The CLI speaks in flags; the library in parameter names."""

from pathlib import Path

import click
from click.core import ParameterSource


def setting_flags(table_of):
    """Decorate a command with a flag per setting in ``table_of()`` (name -> (field, users));
    users None: settings of one job (bench's), whose help names no method."""
    from quantkit.core import settings as opts

    def decorate(func):
        everyone = {u for _f, users in table_of().values() for u in users or ()}
        for name, (f, users) in reversed(list(table_of().items())):
            users = None if users and set(users) == everyone else users  # "every method" goes without saying
            if not f.metadata.get("cli", True):
                continue
            kind, flag = opts.kind_of(f), opts.flag_of(f)
            default = opts.default_of(f)
            # Choices differ by method (bits: awq 4, int8 8): the method's own check says which
            # fit, in one line, so the flag lists them all but click does not enforce them.
            if users is None or len(users) == 1:
                choices = list(f.metadata.get("choices") or ())
            else:
                choices = list(dict.fromkeys(c for g in table_of_choices(table_of(), name) for c in g))
            notes = ([", ".join(users)] if users else []) + ([f"one of {', '.join(map(str, choices))}"] if choices else [])
            notes += [] if default in (None, [], False) else [f"default {default}"]
            used = f" [{'; '.join(notes)}]" if notes else ""
            kwargs = {"default": None, "help": f.metadata["help"] + used, "envvar": f.metadata.get("envvar")}
            base = kind.rstrip("?")
            if base == "bool":
                decls = [flag] if default is False else [f"{flag}/--no-{flag[2:]}"]
                if f.metadata.get("short"):
                    decls.insert(0, f.metadata["short"])
                if default is False:
                    kwargs.update(is_flag=True, default=False)
            else:
                decls = [f.metadata["short"], flag] if f.metadata.get("short") else [flag]
                types = {"int": int, "float": float, "str": str, "path": click.Path(path_type=Path)}
                kwargs.update(type=types.get(base, str), multiple=base == "list[str]")
            func = click.option(*decls, name, **kwargs)(func)
        return func

    return decorate


def table_of_choices(table: dict, name: str) -> list[tuple]:
    """The choices of setting ``name`` as each method that uses it declares them."""
    from quantkit.core import settings as opts
    from quantkit.quantization.registry import options_class

    _field, users = table[name]
    return [opts.settings_of(options_class(m))[name].metadata.get("choices") or () for m in users]


def settings_given(ctx: click.Context, values: dict, table: dict, method: str, method_flag: str) -> dict:
    """The settings typed on the command line (or set by their environment variable when the
    method uses them), as parameter names -> values; a typed flag the method does not use fails."""
    from quantkit.core import settings as opts
    from quantkit.core.errors import InputError

    given = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        field, users = table[name]
        if source not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        if method not in users:
            if source == ParameterSource.ENVIRONMENT:
                continue  # e.g. LLAMA_CPP_DIR set for other runs
            raise InputError(
                f"{opts.flag_of(field)} is not used by {method_flag} {method}", hint=f"it is a setting of {', '.join(users)}"
            )
        given[name] = list(value) if isinstance(value, tuple) else value
    return given


def options_from_flags(method: str, given: dict):
    """``make_options`` with a refused value reported by its flag (the library names parameters)."""
    from quantkit.core import settings as opts
    from quantkit.core.errors import InputError
    from quantkit.quantization.registry import make_options, settings_table

    try:
        return make_options(method, given)
    except opts.SettingError as exc:
        flag = opts.flag_of(settings_table()[exc.setting][0])
        raise InputError(f"--method {method}: {flag} {exc.detail}", hint=exc.hint) from None


def typed_settings(ctx: click.Context, values: dict) -> dict:
    """The settings given on the command line or by their environment variable, by name."""
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in values.items()
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
