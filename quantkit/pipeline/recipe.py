"""Recipes: what to build from one model, how to bench it and which gates it must pass, as data.

Loading is strict, like llm-compressor's recipes: an unknown key, a wrong type or an impossible
setting is one ``RecipeError`` naming the file, the line and the key (``recipe.yaml:12:
artifacts[1].group_size: ...``). Line numbers come from the YAML node marks, so the YAML is
composed into nodes and each value is checked against a small schema table below.
"""

from dataclasses import MISSING, asdict
from pathlib import Path

import yaml

from quantkit.benchmark.bench import BenchOptions
from quantkit.benchmark.gates import Gates
from quantkit.benchmark.serving import ServingOptions
from quantkit.core.errors import InputError
from quantkit.pipeline.recipe_schema import (
    NAME_RE,
    RECIPE_SUFFIXES,
    RUNNERS,
    SOURCES,
    ArtifactSpec,
    ModelSpec,
    PushSettings,
    Recipe,
    RecipeError,
)
from quantkit.pipeline.recipe_yaml import YamlCtx, declared_bounds, yaml_mapping, yaml_typed

# --- the schema tables ----------------------------------------------------------------------

# key -> (type, choices); the dataclasses above hold the defaults
MODEL_KEYS = {
    "id": ("str", None),
    "source": ("str", SOURCES),
    "revision": ("str?", None),
    "trust_remote_code": ("bool", None),
    "local_config": ("path?", None),
}


def derived_keys(cls) -> dict:
    """A section's keys from a settings dataclass (quantkit/core/settings.py): the ones a recipe may set."""
    from quantkit.core.settings import kind_of, settings_of

    return {
        name: (f.metadata.get("recipe_kind") or kind_of(f), f.metadata.get("choices"))
        for name, f in settings_of(cls).items()
        if f.metadata.get("recipe", True)
    }


GATE_KEYS = derived_keys(Gates)
SERVING_KEYS = derived_keys(ServingOptions)  # bench's keys for the deployment engines
BENCH_KEYS = {**derived_keys(BenchOptions), **SERVING_KEYS}
PUSH_KEYS = {
    "repo": ("str", None),
    "source": ("str", SOURCES),
    "private": ("bool", None),
    "revision": ("str?", None),
    "allow_failed": ("bool", None),
    "allow_unvalidated": ("bool", None),
    "artifacts": ("list[str]", None),
}
TOP_KEYS = ("name", "description", "runner", "model", "artifacts", "bench", "gates", "push")


def artifact_keys() -> dict:
    """An artifact's keys: its name, method and gates, and every method setting a recipe may
    hold (quantkit/quantization/options.py: the one declaration the CLI's flags come from too)."""
    from quantkit.core.settings import kind_of
    from quantkit.quantization.registry import settings_table

    keys = {"name": ("str", None), "method": ("str", None)}
    for name, (f, _users) in settings_table().items():
        if f.metadata.get("recipe", True):
            keys[name] = (f.metadata.get("recipe_kind") or kind_of(f), f.metadata.get("choices"))
    return {**keys, "gates": ("gates", None)}


def _section(ctx, node, key, table, cls, defaults=None):
    """Build dataclass ``cls`` from a mapping node using the ``table`` of allowed keys."""
    values = dict(defaults or {})
    nodes = {}
    for name, (_key_node, value_node) in yaml_mapping(ctx, node, key, table).items():
        kind, choices = table[name]
        where = f"{key}.{name}"
        if kind == "gates":
            values[name] = _gates(ctx, value_node, where, values.get("gates") or Gates())
            continue
        value = yaml_typed(ctx, value_node, where, kind, choices)
        declared_bounds(ctx, value_node, where, cls.__dataclass_fields__[name], value)
        values[name] = value
        nodes[name] = value_node
    missing = [n for n, f in cls.__dataclass_fields__.items() if n not in values and f.default is f.default_factory is MISSING]
    if missing:
        raise ctx.fail(node, f"{key}.{missing[0]}", "required key is missing")
    return cls(**values), nodes


def _gates(ctx, node, key, base: Gates) -> Gates:
    gates, _nodes = _section(ctx, node, key, GATE_KEYS, Gates, asdict(base))
    return gates


def _bench(ctx, node) -> tuple[BenchOptions, ServingOptions, dict]:
    """``bench:``: BenchOptions' keys for the in-process bench, ServingOptions' for the deployment
    engines it names (each known to the servers table; the sizes only for a server that takes them)."""
    from quantkit.engines.servers import SERVERS

    values, nodes = {BenchOptions: {}, ServingOptions: {}}, {}
    for name, (_key_node, value_node) in yaml_mapping(ctx, node, "bench", BENCH_KEYS).items():
        cls = ServingOptions if name in SERVING_KEYS else BenchOptions
        kind, choices = BENCH_KEYS[name]
        value = yaml_typed(ctx, value_node, f"bench.{name}", kind, choices)
        declared_bounds(ctx, value_node, f"bench.{name}", cls.__dataclass_fields__[name], value)
        values[cls][name], nodes[name] = value, value_node
    serving = ServingOptions(**values[ServingOptions])
    if len(set(serving.serving)) != len(serving.serving):
        raise ctx.fail(nodes["serving"], "bench.serving", "an engine is listed twice")
    if "concurrency" in nodes and not serving.concurrency:
        raise ctx.fail(nodes["concurrency"], "bench.concurrency", "expected at least one level", hint="e.g. [1, 4, 8]")
    for name in SERVING_KEYS:  # a setting nothing would use is a lie: say so
        if name != "serving" and name in nodes and not serving.serving:
            raise ctx.fail(
                nodes[name], f"bench.{name}", "no deployment engine to use it", hint="name them: serving: [llama-server]"
            )
    takers = [e for e in SERVERS if SERVERS[e].parallel_sizes]
    for name in ("tensor_parallel", "pipeline_parallel"):
        if getattr(serving, name) > 1 and not any(SERVERS[e].parallel_sizes for e in serving.serving):
            raise ctx.fail(
                nodes[name],
                f"bench.{name}",
                f"only {', '.join(takers)} takes this size",
                hint=f"add {takers[0]} to bench.serving",
            )
    return BenchOptions(**values[BenchOptions]), serving, nodes


def _artifact(ctx, node, key, gates: Gates) -> tuple[list[ArtifactSpec], dict]:
    """One entry of ``artifacts:``: the method's settings checked by its own declaration (a
    setting the method does not use is an error: a silently ignored setting is a lie). An entry
    listing several formats of one calibration yields one artifact per format."""
    from quantkit.quantization.registry import METHODS, make_options, settings_table

    table = artifact_keys()
    values, nodes = {"gates": gates}, {}
    for name, (_key_node, value_node) in yaml_mapping(ctx, node, key, table).items():
        kind, choices = table[name]
        where = f"{key}.{name}"
        if kind == "gates":
            values[name] = _gates(ctx, value_node, where, gates)
            continue
        value = yaml_typed(ctx, value_node, where, kind, choices)
        if name in settings_table():
            declared_bounds(ctx, value_node, where, settings_table()[name][0], value)
        values[name], nodes[name] = value, value_node
    for required in ("name", "method"):
        if required not in values:
            raise ctx.fail(node, f"{key}.{required}", "required key is missing")
    where = lambda name: (nodes.get(name, node), f"{key}.{name}")  # noqa: E731
    name, method, gates = values.pop("name"), values.pop("method"), values.pop("gates")
    if method not in METHODS:
        raise ctx.fail(*where("method"), f"unknown method {method!r}", hint=f"choose one of {', '.join(METHODS)}")
    if not NAME_RE.match(name):
        raise ctx.fail(*where("name"), f"{name!r} must be lower case letters, digits, '.', '_' or '-'")
    for setting in values:
        users = settings_table()[setting][1]
        if method not in users:
            raise ctx.fail(
                *where(setting), f"the {method} method does not use this setting (it is a setting of {', '.join(users)})"
            )
    formats = values.pop("format", None)
    if isinstance(formats, list) and (not formats or len(set(formats)) != len(formats)):
        raise ctx.fail(
            *where("format"), "a list of formats needs at least one, each once", hint="e.g. format: [compressed-tensors, autoawq]"
        )
    if len(set(values.get("gguf_types") or [])) != len(values.get("gguf_types") or []):
        raise ctx.fail(*where("gguf_types"), "a type is listed twice")
    specs = []
    for i, fmt in enumerate(formats if isinstance(formats, list) else [formats]):
        settings = {**values, **({"format": fmt} if fmt is not None else {})}
        try:
            options = make_options(method, settings)
        except InputError as exc:
            raise ctx.fail(node, key, exc.message, hint=exc.hint) from None
        # Several formats of one calibration: the first keeps the entry's name, each other is
        # NAME-FORMAT (awq, awq-autoawq); the AWQ cache makes the second a repack in seconds.
        specs.append(ArtifactSpec(name if i == 0 else f"{name}-{fmt}", method, options, gates))
    return specs, nodes


def _push(ctx, node, artifacts: list[ArtifactSpec]) -> PushSettings:
    """The ``push:`` section: every artifact it names exists, and each gets a repo of its own."""
    from quantkit.core.modelinfo import REPO_ID

    push, nodes = _section(ctx, node, "push", PUSH_KEYS, PushSettings)
    names = [a.name for a in artifacts]
    for i, name in enumerate(push.artifacts):
        if name not in names:
            raise ctx.fail(
                nodes["artifacts"].value[i],
                f"push.artifacts[{i}]",
                f"the recipe has no artifact {name!r}",
                hint=f"choose from {', '.join(names)}",
            )
    chosen = push.artifacts or names
    if len(chosen) > 1 and "{name}" not in push.repo:
        raise ctx.fail(
            nodes["repo"],
            "push.repo",
            f"{len(chosen)} artifacts would be pushed to one repo",
            hint="put {name} in it, e.g. acme/smollm2-{name}",
        )
    for name in chosen:
        if not REPO_ID.fullmatch(push.repo_for(name)) or ".." in push.repo_for(name):
            raise ctx.fail(
                nodes["repo"],
                "push.repo",
                f"{push.repo_for(name)!r} is not a hub repo id",
                hint="owner/name, e.g. acme/smollm2-{name}",
            )
    return push


def parse_recipe(text: str, file: Path | str = "<recipe>") -> Recipe:
    """A Recipe from YAML text; ``file`` is used for messages and relative paths."""
    file = Path(file)
    loader = yaml.SafeLoader(text)
    ctx = YamlCtx(file, loader)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{file}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    finally:
        loader.dispose()
    if root is None:
        raise RecipeError(f"{file}:1: recipe: the file is empty")
    top = yaml_mapping(ctx, root, "", TOP_KEYS)
    for required in ("name", "model", "artifacts"):
        if required not in top:
            raise ctx.fail(root, required, "required key is missing")
    name_node = top["name"][1]
    name = yaml_typed(ctx, name_node, "name", "str")
    if not NAME_RE.match(name):
        raise ctx.fail(name_node, "name", f"{name!r} must be lower case letters, digits, '.', '_' or '-'")
    model, _ = _section(ctx, top["model"][1], "model", MODEL_KEYS, ModelSpec)
    if model.source == "modelscope" and model.id.startswith("bundled:"):
        raise ctx.fail(top["model"][1], "model.source", "a bundled model comes from no hub")
    gates = _gates(ctx, top["gates"][1], "gates", Gates()) if "gates" in top else Gates()
    bench, serving, bench_nodes = BenchOptions(), ServingOptions(), {}
    if "bench" in top:
        bench, serving, bench_nodes = _bench(ctx, top["bench"][1])
    art_node = top["artifacts"][1]
    if not isinstance(art_node, yaml.SequenceNode) or not art_node.value:
        raise ctx.fail(art_node, "artifacts", "expected a non-empty list of artifacts")
    artifacts, device_nodes, seen = [], [], set()
    for i, item in enumerate(art_node.value):
        entries, nodes = _artifact(ctx, item, f"artifacts[{i}]", gates)
        for spec in entries:
            device_nodes.append((i, nodes.get("device", item)))
            if spec.name in seen:
                raise ctx.fail(item, f"artifacts[{i}].name", f"artifact name {spec.name!r} is used twice")
            seen.add(spec.name)
            artifacts.append(spec)
    runner = yaml_typed(ctx, top["runner"][1], "runner", "str", RUNNERS) if "runner" in top else "cpu"
    if runner == "cpu":
        for spec, (i, device_node) in zip(artifacts, device_nodes):
            if getattr(spec.options, "device", "auto") == "cuda":
                raise ctx.fail(
                    device_node, f"artifacts[{i}].device", "device cuda in a recipe whose runner is cpu", hint="set runner: gpu"
                )
        if bench.device == "cuda":
            raise ctx.fail(
                bench_nodes["device"], "bench.device", "device cuda in a recipe whose runner is cpu", hint="set runner: gpu"
            )
    # A gate on something the bench is told not to measure could never pass.
    for spec in artifacts:
        if spec.gates.smoke and not bench.smoke:
            raise ctx.fail(
                bench_nodes["smoke"],
                "bench.smoke",
                f"artifact {spec.name} gates on the smoke chat",
                hint="set gates: {smoke: false} or measure it",
            )
        if not bench.quality and spec.gates.overrides():
            raise ctx.fail(
                bench_nodes["quality"],
                "bench.quality",
                f"artifact {spec.name} has quality gates",
                hint="drop its quality thresholds or measure quality",
            )
    description = yaml_typed(ctx, top["description"][1], "description", "str") if "description" in top else ""
    push = _push(ctx, top["push"][1], artifacts) if "push" in top else None
    return Recipe(
        name=name,
        model=model,
        artifacts=artifacts,
        description=description,
        runner=runner,
        bench=bench,
        path=file,
        push=push,
        serving=serving,
    )


def load_recipe(spec: str | Path) -> Recipe:
    """A recipe from a file path or the name of a shipped recipe (``smollm2-135m-instruct``)."""
    path = Path(spec).expanduser()
    if not path.is_file():
        shipped = shipped_recipes().get(str(spec))
        if shipped is None:
            raise InputError(f"no recipe file or shipped recipe named {spec}", hint="`quantkit recipes` lists the shipped ones")
        path = shipped
    return parse_recipe(path.read_text(), path.resolve())


def recipes_dir() -> Path:
    """The shipped recipes: ``quantkit/data/recipes`` is a link to the repo's ``recipes/`` folder,
    so one copy serves a source checkout, an editable install and a wheel (which copies the files)."""
    return Path(__file__).resolve().parents[1] / "data" / "recipes"


def shipped_recipes() -> dict[str, Path]:
    folder = recipes_dir()
    files = sorted(p for p in folder.glob("*") if p.suffix in RECIPE_SUFFIXES) if folder.is_dir() else []
    return {p.stem: p for p in files}


def ci_matrix(runner: str | None = None) -> dict:
    """``{"include": [{"recipe", "artifact", "runner", "method"}...]}``: one CI job per recipe x
    artifact (``quantkit run RECIPE --only ARTIFACT``), optionally for one kind of runner."""
    include = []
    for name, path in shipped_recipes().items():
        recipe = load_recipe(path)
        if runner and recipe.runner != runner:
            continue
        include += [{"recipe": name, "artifact": a.name, "runner": recipe.runner, "method": a.method} for a in recipe.artifacts]
    return {"include": include}
