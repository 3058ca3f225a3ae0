"""docs/methods.md, written from the methods' own settings declarations (``make docs``; a test
checks the file is current): one table per method, the flag, the recipe key, the default."""

from quantkit.core import settings as opts


def methods_markdown() -> str:
    from quantkit.core.card import RUNTIME_NAMES
    from quantkit.quantization.registry import METHODS, get_method, options_class

    lines = [
        "# Methods and their settings",
        "",
        "Written by `make docs` from each method's settings dataclass (quantkit/quantization/), the one",
        "declaration that `quantkit quantize`'s flags, a recipe's artifact keys and `qk.quantize(...)`'s",
        "parameters come from. A setting a method does not list is refused for it.",
        "",
    ]
    for name in METHODS:
        cls, method = options_class(name), get_method(name)
        lines += [f"## `{name}`: {method.summary}", "", f"`{cls.__module__}.{cls.__name__}`", ""]
        for fmt, facts in method.formats.items():  # which runtimes load what it writes
            runtimes = ", ".join(RUNTIME_NAMES.get(r, r) for r in facts.runtimes)
            lines += [f"- `{fmt}` artifacts load in {runtimes}; card tags {', '.join(method.tags + facts.tags)}"]
        lines += [
            "",
            "| parameter / recipe key | flag | default | meaning |",
            "|---|---|---|---|",
        ]
        for setting, f in opts.settings_of(cls).items():
            key = f"`{setting}`" + ("" if f.metadata.get("recipe", True) else " (not in recipes)")
            flag = opts.flag_of(f) if f.metadata.get("cli", True) else ""
            default = opts.default_of(f)
            choices = f.metadata.get("choices")
            meaning = f.metadata["help"] + (f" One of: {', '.join(map(str, choices))}." if choices and len(choices) < 8 else "")
            lines.append(f"| {key} | `{flag}` | `{default}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(methods_markdown(), end="")
