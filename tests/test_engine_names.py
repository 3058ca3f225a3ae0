"""Engines own their facts (quantkit/engines/__init__.py's registry): no code outside the engines
package compares anything with an engine's name; it asks ``engine_entry(name)`` instead. Checked
on the syntax tree, so a comparison is found however it is written (==, !=, in, not in a tuple).
The deployment servers (llama-server, vLLM) count too: serve and bench ask engines/servers.py."""

import ast
from pathlib import Path

from quantkit.engines import ENGINES

PACKAGE = Path(__file__).resolve().parents[1] / "quantkit"
NAMES = set(ENGINES) | {"vllm", "llama-server"}  # the in-process engines and the servers
EXEMPT = ("engines/",)


def strings(node) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {s for item in node.elts for s in strings(item)}
    return set()


def name_comparisons(path: Path, source: str | None = None) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Compare):
            named = set().union(*(strings(side) for side in [node.left, *node.comparators])) & NAMES
            if named:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} compares with {sorted(named)}")
    return found


def test_no_code_outside_engines_compares_with_an_engine_name():
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if not str(path.relative_to(PACKAGE)).startswith(EXEMPT)
        for hit in name_comparisons(path)
    ]
    assert not found, "ask the engine registry (quantkit.engines.engine_entry) instead:\n" + "\n".join(found)


def test_the_check_sees_a_comparison(tmp_path):
    sample = PACKAGE / "core" / "sample.py"
    tree = 'if name == "llama.cpp" or engine in ("transformers", "x") or kind == "load":\n    pass\n'
    assert len(name_comparisons(sample, tree)) == 2
