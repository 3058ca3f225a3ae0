"""The package tree's one rule: imports run one way, cli -> pipeline -> {quantization, benchmark, serve}
-> {engines, hub} -> core, with no cycles. Every import counts, those inside functions too
(they are how heavy or optional modules load late, not a way around the rule)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "quantkit"
# A package may import its own modules and those of lower layers only.
LAYERS = {
    "core": 0,
    "hub": 1,
    "engines": 1,
    "quantization": 2,
    "benchmark": 2,
    "serve": 2,
    "pipeline": 3,
    "doctor": 3,
    "cli": 4,
    "api": 4,
    "__init__": 5,
    "__main__": 5,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The quantkit modules ``path`` imports (``from quantkit.x import y`` counts y when y is a module)."""
    found = set()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("quantkit")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("quantkit"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else "__init__"
    return top, LAYERS[top]


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_every_package_has_a_layer():
    assert {layer(m)[0] for m in all_modules()} <= set(LAYERS)


def test_imports_run_one_way():
    wrong = []
    for module, deps in graph().items():
        top, rank = layer(module)
        for dep in deps:
            dep_top, dep_rank = layer(dep)
            if dep == "quantkit" or dep_top == top:
                continue
            if dep_rank >= rank:
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = graph()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(edges[node]):
            if dep == "quantkit":
                continue
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", ["core", "hub", "engines", "quantization", "benchmark", "serve", "pipeline", "cli"])
def test_package_files_stay_small(name):
    big = {module_name(p): n for p in (PACKAGE / name).rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not big, f"split these by job: {big}"
