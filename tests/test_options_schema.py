"""One declaration per setting: each method's options dataclass drives the CLI's flags, the
recipe's keys, the API's parameters, the refusals and the dry-run estimate. Shown end to end by
registering a hypothetical method (tests/plugins/fake_method.py) through the real registry."""

import importlib
import json

import pytest
from click.testing import CliRunner

from quantkit.core import estimate
from quantkit.core.errors import InputError
from quantkit.core.settings import kind_of
from quantkit.pipeline import plan as plan_module
from quantkit.pipeline.recipe import parse_recipe
from quantkit.quantization import registry
from quantkit.quantization.registry import METHODS, MethodEntry, get_method, make_options, settings_table

# SmolLM2-135M's shape: every width a multiple of 64, not of 128.
SMOL = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}


@pytest.fixture
def sparse_method(monkeypatch):
    """The hypothetical method, registered the way a real one is: one line in METHODS."""
    monkeypatch.setitem(METHODS, "sparse", MethodEntry("plugins.fake_method:SparseMethod"))
    settings_table.cache_clear()
    yield "sparse"
    settings_table.cache_clear()


def test_one_name_means_one_kind_across_methods():
    kinds = {}
    for method in METHODS:
        for name, f in get_method(method).Options.__dataclass_fields__.items():
            kinds.setdefault(name, set()).add(kind_of(f))
            assert f.metadata.get("help"), f"{method}.{name} has no help text"
    assert {name: k for name, k in kinds.items() if len(k) > 1} == {}


def test_every_method_records_its_bits_and_declares_its_cost():
    for method in METHODS:
        impl = get_method(method)
        options = make_options(method)
        footprint = impl.footprint(options)
        assert footprint.kind in ("calibrate", "load", "datafree", "convert") and footprint.bits
        assert estimate.quantize_cost(SMOL, footprint, "cpu").seconds > 0
        if method != "gguf":  # GGUF's width is each file's type
            assert isinstance(options.bits, int)


def test_dry_run_asks_the_same_check_as_quantize():
    """AWQ with no group size falls back from 128 to 64 on SmolLM2's 576 (quantize does); the
    dry run used to block it with its own copy of the rule."""
    recipe = parse_recipe(
        "name: t\nmodel: {id: x/smol}\nartifacts:\n  - {name: a, method: awq}\n  - {name: b, method: awq, group_size: 128}\n"
    )
    assert plan_module.preflight(recipe, recipe.artifacts[0], SMOL) is None
    assert "use `group_size=64`" in plan_module.preflight(recipe, recipe.artifacts[1], SMOL)


def test_estimate_prices_the_methods_own_calibration_defaults():
    """The estimate reads AWQ's defaults (64 x 256), not a copy (it assumed 128 x 512: 4x)."""
    default = get_method("awq").footprint(make_options("awq"))
    assert (default.calib_samples, default.calib_seq_len) == (64, 256)
    bigger = get_method("awq").footprint(make_options("awq", {"calib_samples": 128, "calib_seq_len": 512}))
    extra = estimate.quantize_cost(SMOL, bigger, "cpu").seconds - estimate.quantize_cost(SMOL, default, "cpu").seconds
    calib = estimate.quantize_cost(SMOL, default, "cpu").seconds - estimate.checkpoint_bytes(SMOL) / estimate.DISK_BYTES_PER_S * 2
    assert extra == pytest.approx(3 * calib)


def test_a_new_method_is_one_module(sparse_method, tmp_path):
    # The API and its checks
    options = make_options("sparse", {"sparsity": 0.25})
    assert options.sparsity == 0.25 and options.bits == 16
    with pytest.raises(InputError, match="sparse: sparsity must be at most 0.9"):
        make_options("sparse", {"sparsity": 0.95})
    with pytest.raises(InputError, match="method awq does not use the setting 'sparsity'"):
        make_options("awq", {"sparsity": 0.5})
    # A recipe: its key accepted for this method, refused for another, checked at its line
    text = "name: t\nmodel: {id: x/smol}\nartifacts:\n  - {name: a, method: sparse, sparsity: 0.3}\n"
    assert parse_recipe(text).artifacts[0].options.sparsity == 0.3
    with pytest.raises(InputError, match=r":4: artifacts\[0\].sparsity: the nf4 method does not use this setting"):
        parse_recipe(text.replace("method: sparse", "method: nf4"))
    # The dry run: its own check and its own cost
    recipe = parse_recipe(text)
    assert plan_module.preflight(recipe, recipe.artifacts[0], {**SMOL, "hidden_size": 577}) == "sparse needs an even hidden size"
    footprint = get_method("sparse").footprint(recipe.artifacts[0].options)
    assert estimate.artifact_bytes(SMOL, footprint) > 0
    # The CLI: a flag derived from the declaration, refused for the other methods
    from quantkit.cli import quantize_cmd

    command = importlib.reload(quantize_cmd).command
    help_text = CliRunner().invoke(command, ["--help"]).output
    assert "--sparsity" in help_text and "Share of weights set to zero. [sparse" in help_text
    refused = CliRunner().invoke(command, ["some/model", "--method", "nf4", "--sparsity", "0.5"])
    assert refused.exit_code != 0 and "--sparsity is not used by --method nf4" in str(refused.exception)


def test_inspect_lists_the_new_method(sparse_method, tmp_path):
    from quantkit.cli.inspect_cmd import command

    (tmp_path / "config.json").write_text(json.dumps(SMOL))
    result = CliRunner().invoke(command, [str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model"]["support"]["sparse"] is None


def test_registry_settings_table_lists_users():
    table = settings_table()
    assert table["group_size"][1] == ["awq", "gptq"]
    assert table["gguf_types"][1] == ["gguf"]
    assert set(table["force"][1]) == set(METHODS)


def test_bench_flags_split_between_the_bench_and_its_gates():
    from quantkit.cli.bench_cmd import bench_options

    options = bench_options({"smoke": False, "prompt_tokens": 8, "kld_mean_max": 0.1, "top1_min": 0.8})
    assert options.smoke is False and options.prompt_tokens == 8
    assert options.gates.smoke is True and options.gates.overrides() == {"kld_mean_max": 0.1, "top1_min": 0.8}
    with pytest.raises(InputError, match="bench: top1_min must be at most 1.0"):
        bench_options({"top1_min": 1.5})


def test_docs_methods_md_is_current():
    from pathlib import Path

    from quantkit.cli.methods_doc import methods_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
    assert doc.read_text() == methods_markdown(), "run `make docs`"


def teardown_module():
    importlib.reload(importlib.import_module("quantkit.cli.quantize_cmd"))  # back to the real table
    registry.settings_table.cache_clear()
