"""Strict recipe parsing: every key, every kind of error (file, line and key in the message),
the shipped recipes and the CI matrix."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quantkit.core.errors import InputError
from quantkit.pipeline.recipe import (
    BENCH_KEYS,
    GATE_KEYS,
    MODEL_KEYS,
    RecipeError,
    artifact_keys,
    ci_matrix,
    load_recipe,
    parse_recipe,
    recipes_dir,
    shipped_recipes,
)
from quantkit.quantization.registry import settings_table

REPO = Path(__file__).resolve().parents[1]
# The artifact keys come from the methods' own settings declarations (quantkit/quantization/options.py).
ARTIFACT_KEYS = artifact_keys()
# A method that reads each artifact key (nf4 when it uses it), so a valid value of it is accepted.
METHOD_FOR = {name: "nf4" if "nf4" in users else users[0] for name, (_f, users) in settings_table().items()}
WRONG = {
    "str": "5",
    "str?": "[a, b]",
    "int": '"many"',
    "int?": '"many"',
    "float": '"high"',
    "float?": '"high"',
    "bool": '"maybe"',
    "bool?": '"maybe"',
    "path?": "7",
    "list[str]": "just-one",
    "list[int]": "just-one",
    "gates": "5",
    "str|list[str]": "5",
}
EXPECT = {
    "str": "expected str",
    "str?": "expected a single value",
    "int": "expected int",
    "int?": "expected int",
    "float": "expected float",
    "float?": "expected float",
    "bool": "expected bool",
    "bool?": "expected bool",
    "path?": "expected path",
    "list[str]": "expected a list of strings",
    "list[int]": "expected a list of integers",
    "gates": "expected a mapping",
    "str|list[str]": "expected str",
}


def recipe_text(top="", model="", bench="", gates="", artifact="", method="nf4", name="a", gguf=""):
    bench, gates = bench or "  gen_tokens: 8\n", gates or "  smoke: true\n"
    return (
        f"name: test\n{top}model:\n  id: some/model\n{model}bench:\n{bench}"
        f"gates:\n{gates}artifacts:\n  - name: {name}\n    method: {method}\n{gguf}{artifact}"
    )


def write(tmp_path, text, name="recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def assert_error(path: Path, text: str, fragment: str, key: str, problem: str):
    err = error_of(path)
    expected = f"{path.resolve()}:{line_of(text, fragment)}: {key}: "
    assert str(err).startswith(expected), (str(err), expected)
    assert problem in str(err)


def test_minimal_recipe_and_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, recipe_text()))
    assert recipe.name == "test" and recipe.runner == "cpu" and recipe.model.source == "hf"
    assert recipe.bench.gen_tokens == 8 and recipe.bench.repetitions == 5
    assert recipe.artifacts[0].method == "nf4" and recipe.artifacts[0].gates.smoke is True
    assert recipe.path == (tmp_path / "recipe.yaml").resolve()


def section_args(section: str, key: str, value: str) -> dict:
    if section == "artifact":
        method = METHOD_FOR.get(key, "nf4")
        args = {"method": method, "gguf": "    gguf_types: [Q8_0]\n" if method == "gguf" and key != "gguf_types" else ""}
        if key in ("name", "method"):  # replace rather than repeat
            return {**args, key: value}
        return {**args, "artifact": f"    {key}: {value}\n"}
    if section == "artifact_gates":
        return {"artifact": f"    gates:\n      {key}: {value}\n"}
    indent = "" if section == "top" else "  "
    return {section: f"{indent}{key}: {value}\n"}


KEYPATH = {
    "model": "model.{}",
    "bench": "bench.{}",
    "gates": "gates.{}",
    "artifact": "artifacts[0].{}",
    "artifact_gates": "artifacts[0].gates.{}",
    "top": "{}",
}
TABLES = {"model": MODEL_KEYS, "bench": BENCH_KEYS, "gates": GATE_KEYS, "artifact": ARTIFACT_KEYS, "artifact_gates": GATE_KEYS}
WRONG_CASES = [
    (section, key, kind)
    for section, table in TABLES.items()
    for key, (kind, _) in table.items()
    if not (section == "model" and key == "id")
]


@pytest.mark.parametrize("section", list(KEYPATH))
def test_unknown_key_names_file_line_and_key(tmp_path, section):
    text = recipe_text(**section_args(section, "bogus_setting", "1"))
    assert_error(write(tmp_path, text), text, "bogus_setting", KEYPATH[section].format("bogus_setting"), "unknown key")


def test_unknown_key_suggests_the_close_one(tmp_path):
    text = recipe_text(artifact="    group-size: 64\n", method="awq")
    err = error_of(write(tmp_path, text))
    assert "did you mean 'group_size'" in str(err)


@pytest.mark.parametrize("section,key,kind", WRONG_CASES, ids=[f"{s}.{k}" for s, k, _ in WRONG_CASES])
def test_wrong_type_for_every_key(tmp_path, section, key, kind):
    fragment_value = WRONG[kind]
    text = recipe_text(**section_args(section, key, fragment_value))
    fragment = f"{key}: {fragment_value}"
    assert_error(write(tmp_path, text), text, fragment, KEYPATH[section].format(key), EXPECT[kind])


@pytest.mark.parametrize(
    "text_args,fragment,key,problem",
    [
        ({"method": "magic"}, "method: magic", "artifacts[0].method", "unknown method 'magic'"),
        ({"name": "Bad Name"}, "name: Bad Name", "artifacts[0].name", "must be lower case"),
        (
            {"artifact": "    format: autoawq\n"},
            "format: autoawq",
            "artifacts[0].format",
            "the nf4 method does not use this setting (it is a setting of awq)",
        ),
        ({"artifact": "    imatrix: false\n"}, "imatrix: false", "artifacts[0].imatrix", "(it is a setting of gguf)"),
        (
            {"method": "int8", "artifact": "    calib_samples: 8\n"},
            "calib_samples",
            "artifacts[0].calib_samples",
            "the int8 method does not use this setting (it is a setting of awq, gptq, w8a8, gguf)",
        ),
        ({"method": "awq", "artifact": "    format: exl2\n"}, "format: exl2", "artifacts[0].format", "not one of"),
        ({"method": "awq", "artifact": "    bits: 8\n"}, "bits: 8", "artifacts[0].bits", "8 is not one of 4"),
        ({"method": "awq", "artifact": "    group_size: 0\n"}, "group_size: 0", "artifacts[0].group_size", "must be at least 1"),
        ({"method": "gptq", "artifact": "    calib_seq_len: 4\n"}, "calib_seq_len", "artifacts[0].calib_seq_len", "at least 8"),
        (
            {"method": "gguf", "artifact": "    gguf_types: [Q4_K_M, Q4_K_M]\n"},
            "gguf_types:",
            "artifacts[0].gguf_types",
            "listed twice",
        ),
        (
            {"method": "gguf", "artifact": "    gguf_types: [Q9_X]\n"},
            "gguf_types:",
            "artifacts[0].gguf_types[0]",
            "'Q9_X' is not one of",
        ),
        (
            {"method": "int8", "artifact": "    double_quant: false\n"},
            "double_quant",
            "artifacts[0].double_quant",
            "the int8 method does not use this setting (it is a setting of nf4)",
        ),
        ({"artifact": "    dtype: float8\n"}, "dtype: float8", "artifacts[0].dtype", "not one of"),
        ({"artifact": "    device: cuda\n"}, "device: cuda", "artifacts[0].device", "runner is cpu"),
        ({"bench": "  device: cuda\n"}, "device: cuda", "bench.device", "runner is cpu"),
        ({"bench": "  repetitions: -1\n"}, "repetitions", "bench.repetitions", "must be at least 1"),
        ({"gates": "  top1_min: 1.5\n"}, "top1_min", "gates.top1_min", "must be at most 1.0"),
        ({"gates": "  ppl_ratio_max: 0.5\n"}, "ppl_ratio_max", "gates.ppl_ratio_max", "must be at least 1.0"),
        (
            {"artifact": "    gates: {kld_mean_max: -1}\n"},
            "kld_mean_max",
            "artifacts[0].gates.kld_mean_max",
            "must be at least 0.0",
        ),
        ({"bench": "  smoke: false\n"}, "smoke: false", "bench.smoke", "gates on the smoke chat"),
        ({"bench": "  quality: false\n", "gates": "  kld_mean_max: 0.1\n"}, "quality: false", "bench.quality", "quality gates"),
        ({"model": "  source: modelscope\n", "top": "runner: gpu\n"}, None, None, None),  # valid: a hub id on ModelScope
        ({"model": "  source: github\n"}, "source: github", "model.source", "not one of hf, modelscope"),
        ({"top": "runner: tpu\n"}, "runner: tpu", "runner", "not one of cpu, gpu"),
        ({"model": "  id: x/y\n"}, "id: x/y", "model.id", "key given twice"),
    ],
)
def test_impossible_settings(tmp_path, text_args, fragment, key, problem):
    text = recipe_text(**text_args)
    path = write(tmp_path, text)
    if fragment is None:
        assert load_recipe(path).model.source == "modelscope"
        return
    assert_error(path, text, fragment, key, problem)


def test_duplicate_artifact_names(tmp_path):
    text = recipe_text() + "  - name: a\n    method: int8\n"
    path = write(tmp_path, text)
    err = error_of(path)
    assert str(err).startswith(f"{path.resolve()}:11: artifacts[1].name: ")
    assert "used twice" in str(err)


@pytest.mark.parametrize(
    "text,line,key,problem",
    [
        ("", 1, "recipe", "empty"),
        ("model:\n  id: x/y\nartifacts:\n  - {name: a, method: nf4}\n", 1, "name", "required key is missing"),
        ("name: t\nmodel:\n  source: hf\nartifacts:\n  - {name: a, method: nf4}\n", 3, "model.id", "required key is missing"),
        ("name: t\nmodel: {id: x/y}\nartifacts:\n  - {name: a}\n", 4, "artifacts[0].method", "required key is missing"),
        ("name: t\nmodel: {id: x/y}\nartifacts: []\n", 3, "artifacts", "non-empty list"),
        ("name: t\nmodel: [x]\nartifacts: []\n", 2, "model", "expected a mapping"),
        ("- just\n- a list\n", 1, "recipe", "expected a mapping"),
        ("name: t\nmodel: {id: x/y}\nmodel: {id: x/z}\nartifacts: [{name: a, method: nf4}]\n", 3, "model", "key given twice"),
        (
            "name: t\nmodel: {id: bundled:x, source: modelscope}\nartifacts: [{name: a, method: nf4}]\n",
            2,
            "model.source",
            "bundled",
        ),
    ],
)
def test_structural_errors(tmp_path, text, line, key, problem):
    path = write(tmp_path, text)
    err = error_of(path)
    assert str(err).startswith(f"{path.resolve()}:{line}: {key}: "), str(err)
    assert problem in str(err)


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "name: t\nmodel: {id: x\nartifacts: []\n")
    err = error_of(path)
    assert re.match(rf"{re.escape(str(path.resolve()))}:\d+: not valid YAML", str(err)), str(err)


def test_relative_paths_resolve_against_the_recipe_file(tmp_path):
    text = recipe_text(model="  local_config: configs/c.json\n", method="awq", artifact="    calib: data/calib.txt\n")
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.model.local_config == (tmp_path / "configs" / "c.json").resolve()
    assert recipe.artifacts[0].options.calib == (tmp_path / "data" / "calib.txt").resolve()


def test_gates_merge_recipe_defaults_with_artifact_overrides(tmp_path):
    text = recipe_text(gates="  top1_min: 0.7\n  kld_mean_max: 0.5\n", artifact="    gates: {kld_mean_max: 0.1}\n")
    gates = load_recipe(write(tmp_path, text)).artifacts[0].gates
    assert (gates.smoke, gates.top1_min, gates.kld_mean_max) == (True, 0.7, 0.1)


def test_unknown_recipe_name_is_an_input_error():
    with pytest.raises(InputError, match="quantkit recipes"):
        load_recipe("no-such-recipe")


def test_shipped_recipes_are_the_repo_folder_and_all_parse():
    shipped = shipped_recipes()
    assert set(shipped) == {p.stem for p in (REPO / "recipes").glob("*.yaml")}
    assert recipes_dir().resolve() == (REPO / "recipes").resolve()
    expected = {
        "smollm2-135m-instruct",
        "smollm2-awq-vs-gptq",
        "qwen2.5-7b-instruct",
        "qwen2.5-7b-instruct-modelscope",
        "llama-3.1-8b-instruct",
        "yi-34b-chat-awq",
        "baichuan2-13b-chat-nf4",
    }
    assert expected <= set(shipped)
    for name in shipped:
        recipe = load_recipe(name)
        assert recipe.name == name, "a recipe's name is its file name"
    smol = load_recipe("smollm2-135m-instruct")
    assert smol.runner == "cpu" and smol.model.id == "bundled:smollm2-135m-instruct"
    expected = {("awq", "compressed-tensors"), ("awq", "autoawq"), ("nf4", None), ("int8", None), ("gguf", None)}
    assert {(a.method, getattr(a.options, "format", None)) for a in smol.artifacts} >= expected
    assert next(a for a in smol.artifacts if a.method == "gguf").options.gguf_types == ["Q8_0", "Q4_K_M", "IQ3_M"]
    assert all(a.options.group_size == 64 for a in smol.artifacts if a.method == "awq")  # 576 = 9 x 64
    yi = load_recipe("yi-34b-chat-awq").artifacts[0]
    assert yi.method == "awq" and yi.options.ignore == ["re:.*down_proj"]
    baichuan = load_recipe("baichuan2-13b-chat-nf4")
    assert baichuan.artifacts[0].options.double_quant is True and baichuan.model.trust_remote_code is True
    ms = load_recipe("qwen2.5-7b-instruct-modelscope").model
    assert (ms.id, ms.source) == ("qwen/Qwen2.5-7B-Instruct", "modelscope")


def test_matrix_json_shape():
    result = subprocess.run([sys.executable, "-m", "quantkit", "recipes", "--matrix"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    matrix = json.loads(result.stdout)
    assert set(matrix) == {"include"} and matrix["include"]
    for job in matrix["include"]:
        assert set(job) == {"recipe", "artifact", "runner", "method"}
        assert job["runner"] in ("cpu", "gpu")
        load_recipe(job["recipe"]).artifact(job["artifact"])  # every job names a real artifact
    pairs = [(j["recipe"], j["artifact"]) for j in matrix["include"]]
    assert len(pairs) == len(set(pairs))
    assert sum(len(load_recipe(n).artifacts) for n in shipped_recipes()) == len(pairs)
    cpu = ci_matrix("cpu")["include"]
    assert cpu and all(j["runner"] == "cpu" for j in cpu)
    assert {j["recipe"] for j in cpu} == {"smollm2-135m-instruct", "smollm2-awq-vs-gptq"}


def test_recipes_lists_names_on_stdout():
    result = subprocess.run([sys.executable, "-m", "quantkit", "recipes"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == list(shipped_recipes())


def test_parse_recipe_from_text_uses_given_file_name():
    with pytest.raises(RecipeError, match=r"^inline\.yaml:1: bogus: unknown key"):
        parse_recipe("bogus: 1\n", "inline.yaml")


# The GPU each shipped GPU recipe names in its comments, in GiB: (quantize stage, bench stage).
# Qwen2.5-7B: "one 24 GB+ GPU"; Llama-3.1-8B: "one GPU" (a 24 GB card); Yi-34B: calibration
# "one 48 GB" (one layer at a time), the dense bf16 bench "one 80 GB GPU"; Baichuan2-13B nf4:
# "a 40 GB+ GPU" (the bench's base reference runs in bf16, 26 GiB).
GPU_HARDWARE_GIB = {
    "qwen2.5-7b-instruct": (24, 24),
    "qwen2.5-7b-instruct-modelscope": (24, 24),
    "llama-3.1-8b-instruct": (24, 24),
    "yi-34b-chat-awq": (80, 80),  # quantize: verification's bf16 base; calibration alone fits 48 GB
    "baichuan2-13b-chat-nf4": (40, 40),  # quantize: verification's bf16 base (~28 GB)
}
CONFIGS = Path(__file__).parent / "fixtures" / "configs"


@pytest.mark.parametrize("name", sorted(GPU_HARDWARE_GIB))
def test_gpu_recipe_dry_run_fits_the_hardware_it_names(name, monkeypatch, tmp_path):
    from quantkit.pipeline.plan import plan

    monkeypatch.setenv("QUANTKIT_CONFIG_DIR", str(CONFIGS))
    recipe = load_recipe(name)
    assert recipe.runner == "gpu"
    rows = plan(recipe, recipe.artifacts, tmp_path / "o", force=False)
    quantize_gib, bench_gib = GPU_HARDWARE_GIB[name]
    for row in rows:
        if row.stage == "model":
            continue
        assert row.cost is not None, row
        limit = {"quantize": quantize_gib, "bench": bench_gib}[row.stage]
        assert row.cost.gpu_bytes <= limit * 2**30, (row.stage, row.artifact, row.cost.gpu_bytes / 2**30)
        method = recipe.artifact(row.artifact).method
        if method != "gguf" or row.stage == "bench":  # llama.cpp's converter runs on the CPU
            assert row.cost.gpu_bytes > 2**30, row
    shipped = {n for n in shipped_recipes() if load_recipe(n).runner == "gpu"}
    assert shipped == set(GPU_HARDWARE_GIB), "a new GPU recipe needs its hardware here"


def test_yi_calibration_fits_one_48gb_card_but_verification_and_bench_need_80gb(monkeypatch, tmp_path):
    """The issue's case: AWQ layer by layer keeps Yi-34B's calibration far below one 48 GB card
    and the RAM holds the bf16 model, but the quantize stage ends with verification, which loads
    the bf16 base on the GPU (~65 GiB), and the dense bf16 bench does not fit 48 GB either: one
    80 GB card, unless verification falls back to the CPU (then quantizing needs ~8 GiB there)."""
    from quantkit.core.estimate import quantize_need
    from quantkit.pipeline.plan import plan
    from quantkit.quantization.registry import get_method

    monkeypatch.setenv("QUANTKIT_CONFIG_DIR", str(CONFIGS))
    recipe = load_recipe("yi-34b-chat-awq")
    rows = {row.stage: row for row in plan(recipe, recipe.artifacts, tmp_path / "o", force=False)}
    quantize = rows["quantize"].cost
    assert 48 * 2**30 < quantize.gpu_bytes < 80 * 2**30
    assert 64 * 2**30 < quantize.memory_bytes < 100 * 2**30
    assert 48 * 2**30 < rows["bench"].cost.gpu_bytes < 80 * 2**30
    assert "verification in RAM" in rows["quantize"].note
    spec = recipe.artifacts[0]
    config = json.loads((CONFIGS / "yi-34b-chat.json").read_text())
    alone = quantize_need(config, get_method("awq").footprint(spec.options), "cuda", verify_on="cpu")
    assert alone.gpu_bytes < 16 * 2**30 and alone.ram_bytes < 100 * 2**30


def test_force_is_an_artifact_key_that_does_not_change_the_artifact(tmp_path):
    plain = load_recipe(write(tmp_path, recipe_text(), "a.yaml")).artifacts[0]
    forced = load_recipe(write(tmp_path, recipe_text(artifact="    force: true\n"), "b.yaml")).artifacts[0]
    assert forced.force is True and plain.force is False
    assert forced.quantize_settings() == plain.quantize_settings()  # no rebuild for skipping a check
    from quantkit.pipeline.recipe_schema import ModelSpec, Recipe
    from quantkit.pipeline.run import quantize_options

    recipe = Recipe(name="t", model=ModelSpec(id="x/y"), artifacts=[forced])
    assert quantize_options(recipe, forced).force is True


def test_bench_names_deployment_engines_and_vllms_sizes(tmp_path):
    bench = "  serving: [llama-server, vllm]\n  concurrency: [1, 2]\n  tensor_parallel: 2\n  pipeline_parallel: 2\n"
    recipe = load_recipe(write(tmp_path, recipe_text(bench=bench)))
    s = recipe.serving
    assert s.serving == ["llama-server", "vllm"] and s.concurrency == [1, 2] and s.gpus == 4
    assert recipe.bench.gen_tokens == 128  # the in-process bench keeps its own defaults
    assert load_recipe(write(tmp_path, recipe_text(), "plain.yaml")).serving.serving == []


@pytest.mark.parametrize(
    "bench,fragment,key,problem",
    [
        ("  serving: [llama-server, sglang]\n", "serving:", "bench.serving[1]", "'sglang' is not one of llama-server, vllm"),
        ("  serving: [vllm, vllm]\n", "serving:", "bench.serving", "listed twice"),
        ("  serving: vllm\n", "serving:", "bench.serving", "expected a list of strings"),
        ("  serving: [vllm]\n  concurrency: [1, 0]\n", "concurrency:", "bench.concurrency[1]", "must be at least 1"),
        ("  serving: [vllm]\n  concurrency: []\n", "concurrency:", "bench.concurrency", "at least one level"),
        ("  concurrency: [1, 4]\n", "concurrency:", "bench.concurrency", "no deployment engine to use it"),
        ("  serving: [llama-server]\n  tensor_parallel: 2\n", "tensor_parallel:", "bench.tensor_parallel", "only vllm"),
        ("  serving: [vllm]\n  pipeline_parallel: 0\n", "pipeline_parallel:", "bench.pipeline_parallel", "at least 1"),
    ],
)
def test_bench_serving_errors_name_the_line(tmp_path, bench, fragment, key, problem):
    text = recipe_text(bench="  gen_tokens: 8\n" + bench)
    assert_error(write(tmp_path, text), text, fragment, key, problem)
