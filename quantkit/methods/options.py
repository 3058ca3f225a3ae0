"""Which QuantizeOptions fields each method reads, so the CLI, recipes and the Python API can refuse a
setting the chosen method would silently ignore. The per-method lists live in the registry (METHODS)."""

# Every method takes these; the others are declared per method in quantkit.methods.METHODS.
COMMON = ("device", "dtype", "trust_remote_code", "force", "ignore")


def method_options(method: str) -> tuple[str, ...]:
    """The QuantizeOptions fields ``method`` reads."""
    from quantkit.methods import METHODS

    return COMMON + METHODS[method].options


def users(option: str) -> list[str]:
    """The methods that read ``option``, in registry order."""
    from quantkit.methods import METHODS

    return [name for name in METHODS if option in method_options(name)]


def unused_message(option: str, method: str) -> str:
    """'only the awq and gguf methods use this setting, not nf4'."""
    who = users(option)
    plural = len(who) > 1
    return f"only the {' and '.join(who)} method{'s' if plural else ''} use{'' if plural else 's'} this setting, not {method}"


def unused(method: str, given: list[str]) -> list[str]:
    """The names in ``given`` that ``method`` does not read."""
    used = method_options(method)
    return [name for name in given if name not in used]
