"""The tables installed libraries keep in their sources (transformers' model-type mappings, ...),
read with ``ast`` without importing them (importing ``transformers.models.auto`` imports torch,
~10 s cold) and cached per library version under the quantkit cache."""

import ast
from functools import lru_cache
from importlib import metadata, util
from pathlib import Path

from quantkit.core.atomic import read_json, write_json


def package_root(name: str) -> Path | None:
    """The installed package's folder, found without importing it."""
    spec = util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cached_tables(name: str, version: str, build) -> dict:
    """``build()``'s JSON-able tables, cached under the quantkit cache per library version."""
    from quantkit.core.paths import cache_dir

    path = cache_dir("support") / f"{name}-{version}.json"
    if (cached := read_json(path, default=None)) is not None:
        return cached
    tables = build()
    write_json(path, tables, indent=1, sort_keys=True)
    return tables


def literal_assignments(path: Path, names: tuple[str, ...], found: dict | None = None) -> dict[str, dict]:
    """Module-level ``NAME = OrderedDict([...])`` / ``NAME = {...}`` literals of a source file,
    ``NAME.update({...})`` calls and ``NAME = OrderedDict(**{...}, **NAME)`` merges, evaluated
    without running the module. ``found`` carries tables imported from another file."""
    found = {k: dict(v) for k, v in (found or {}).items()}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", None) in names:
            name, value = node.targets[0].id, node.value
            if isinstance(value, ast.Call):  # OrderedDict([...]) or OrderedDict(**{...}, **NAME)
                merged = dict(found.get(name, {}))
                for kw in value.keywords:
                    if kw.arg is None and isinstance(kw.value, ast.Dict):
                        merged.update(ast.literal_eval(kw.value))
                if value.args:
                    try:
                        merged = dict(ast.literal_eval(value.args[0]))
                    except ValueError:
                        continue
                found[name] = merged
            else:
                try:
                    found[name] = dict(ast.literal_eval(value))
                except ValueError:
                    continue
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            target = getattr(getattr(func, "value", None), "id", None)
            if getattr(func, "attr", None) == "update" and target in names and node.value.args:
                try:
                    found.setdefault(target, {}).update(ast.literal_eval(node.value.args[0]))
                except ValueError:
                    continue
    return found


@lru_cache(maxsize=1)
def transformers_tables() -> dict:
    """{"version", "config": model_type -> config class, "causal_lm": model_type -> [classes]}."""
    root, version = package_root("transformers"), version_of("transformers")
    if root is None or version is None:
        return {"version": None, "config": {}, "causal_lm": {}}

    def build() -> dict:
        auto = root / "models" / "auto"
        tables: dict = {}
        for name in ("auto_mappings.py", "configuration_auto.py"):  # the second extends the first's
            if (auto / name).is_file():
                tables = literal_assignments(auto / name, ("CONFIG_MAPPING_NAMES",), tables)
        config = tables.get("CONFIG_MAPPING_NAMES", {})
        causal = literal_assignments(auto / "modeling_auto.py", ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",))
        causal_lm = {
            k: [v] if isinstance(v, str) else list(v) for k, v in causal.get("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", {}).items()
        }
        return {"version": version, "config": config, "causal_lm": causal_lm}

    return cached_tables("transformers", version, build)


def transformers_knows(model_type: str) -> bool:
    """Whether transformers itself implements ``model_type`` (no remote code needed)."""
    return model_type in transformers_tables()["config"]


def causal_lm_reason(config: dict) -> str | None:
    """None when AutoModelForCausalLM loads this config (with transformers' own code, or the
    model's when it ships some); else why not, and the fix."""
    archs = config.get("architectures") or []
    model_type = str(config.get("model_type") or "")
    if not archs:
        return 'config.json names no architecture (add "architectures" to config.json)'
    if "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return None  # the model's own code; require_trusted_code asks for --trust-remote-code
    tables = transformers_tables()
    version = tables["version"] or "(not installed)"
    if not transformers_knows(model_type):
        return (
            f"transformers {version} has no implementation of model type {model_type!r} and the model ships "
            "no code (upgrade transformers, or use a checkpoint with its own modeling code)"
        )
    causal_classes = {c for classes in tables["causal_lm"].values() for c in classes}
    if model_type not in tables["causal_lm"] or not (archs[0] in causal_classes or archs[0].endswith("ForCausalLM")):
        return (
            f"{archs[0]} is not a causal language model (transformers {version} loads model type "
            f"{model_type!r} with no AutoModelForCausalLM class); only decoder-only causal LMs are supported"
        )
    return None
