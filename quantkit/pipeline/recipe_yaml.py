"""Strict, line-numbered reading of a recipe's YAML nodes: each mapping's keys against a table of
allowed ones, each value against its kind and choices, a declared setting's bounds; every failure
one ``RecipeError`` naming the file, the line and the key path (quantkit/pipeline/recipe.py)."""

from pathlib import Path

import yaml

from quantkit.pipeline.recipe_schema import RecipeError


class YamlCtx:
    """Where we are: the file and the key path, for error messages."""

    def __init__(self, file: Path, loader: yaml.SafeLoader):
        self.file, self.loader = file, loader

    def fail(self, node: yaml.Node, key: str, problem: str, hint: str | None = None) -> RecipeError:
        line = node.start_mark.line + 1
        return RecipeError(f"{self.file}:{line}: {key}: {problem}", hint=hint)

    def scalar(self, node: yaml.Node, key: str):
        if not isinstance(node, yaml.ScalarNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
            raise self.fail(node, key, f"expected a single value, got {kind}")
        return self.loader.construct_object(node)


def yaml_mapping(ctx: YamlCtx, node: yaml.Node, key: str, allowed) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """The mapping's entries as name -> (key node, value node); unknown or repeated keys fail."""
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, key or "recipe", "expected a mapping of settings")
    entries = {}
    for key_node, value_node in node.value:
        name = str(ctx.scalar(key_node, key or "recipe"))
        where = f"{key}.{name}" if key else name
        if name not in allowed:
            close = [a for a in allowed if a.replace("_", "") == name.replace("_", "").replace("-", "")]
            hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
            raise ctx.fail(key_node, where, "unknown key", hint=hint)
        if name in entries:
            raise ctx.fail(key_node, where, "key given twice")
        entries[name] = (key_node, value_node)
    return entries


def yaml_typed(ctx: YamlCtx, node: yaml.Node, key: str, kind: str, choices=None):
    """One value of ``kind`` (str, int, float, bool, path, str?, int?, float?, list[str])."""
    if kind == "str|list[str]":  # one value, or several (format: [compressed-tensors, autoawq])
        return yaml_typed(ctx, node, key, "list[str]" if isinstance(node, yaml.SequenceNode) else "str?", choices)
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if kind in ("list[str]", "list[int]"):
        item_kind = kind[5:-1]
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.fail(node, key, f"expected a list of {'strings' if item_kind == 'str' else 'integers'}")
        items = [yaml_typed(ctx, item, f"{key}[{i}]", item_kind, choices) for i, item in enumerate(node.value)]
        return items
    value = ctx.scalar(node, key)
    if value is None and optional:
        return None
    ok = {
        "str": isinstance(value, str),
        "path": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise ctx.fail(node, key, f"expected {kind}, got {type(value).__name__} {value!r}")
    if choices is not None and value not in choices:
        raise ctx.fail(node, key, f"{value!r} is not one of {', '.join(map(str, choices))}")
    if kind == "float":
        value = float(value)
    if kind == "path":
        value = (ctx.file.parent / Path(value).expanduser()).resolve()
    return value


def declared_bounds(ctx, node, key, f, value):
    """A declared setting's bounds (``option(minimum=, maximum=)``), reported at its line."""
    low, high = f.metadata.get("minimum"), f.metadata.get("maximum")
    if isinstance(value, list):  # each item of a list (bench.concurrency: [1, 4, 8])
        for i, item in enumerate(value):
            declared_bounds(ctx, node.value[i], f"{key}[{i}]", f, item)
        return
    if value is not None and low is not None and value < low:
        raise ctx.fail(node, key, f"must be at least {low}, got {value}")
    if value is not None and high is not None and value > high:
        raise ctx.fail(node, key, f"must be at most {high}, got {value}")
