"""Each method owns its facts (issue 23 item 6, issue 26 item 4): card tags and library, the
runtimes that load its format, its bits per weight and its help line are declared once in its
module; cards, pick's engine table, estimates, --help and docs derive from them. Cards are built
here from manifests recorded the way ``quantize`` records them (``artifact_facts``)."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from quantkit.core import estimate
from quantkit.core.card import card_data, hub_usage, render
from quantkit.quantization.base import FormatFacts, MethodResult, artifact_facts
from quantkit.quantization.quantize import artifact_name
from quantkit.quantization.registry import METHODS, MethodEntry, engine_formats, get_method, make_options

RUNTIMES = {"transformers", "vllm", "llama.cpp", "ollama"}
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
# (method, format, settings["bits"]) as each method records them
ARTIFACTS = [
    ("awq", "compressed-tensors", 4),
    ("awq", "autoawq", 4),
    ("gptq", "compressed-tensors", 4),
    ("w8a8", "compressed-tensors", 8),
    ("fp8", "compressed-tensors", 8),
    ("nf4", "bitsandbytes", 4),
    ("int8", "bitsandbytes", 8),
    ("gguf", "gguf", 4),
]


def manifest_for(method: str, fmt: str, bits: int) -> dict:
    """A manifest as quantize() writes it, from the method's declaration."""
    facts = artifact_facts(get_method(method), MethodResult(fmt, "transformers", {"bits": bits}))
    source = {"repo_id": REPO, "license": "apache-2.0"}
    return {
        "kind": "artifact",
        "name": artifact_name("bundled:smollm2-135m-instruct", source, facts.pop("label")),
        "method": method,
        "format": fmt,
        "settings": {"bits": bits},
        "runtimes": facts.pop("runtimes"),
        "card": facts,
        "source": source,
    }


def test_every_method_declares_its_facts():
    for name in METHODS:
        method = get_method(name)
        assert method.summary and method.label and isinstance(method.tags, tuple)
        assert method.formats and all(isinstance(f, FormatFacts) for f in method.formats.values())
        for facts in method.formats.values():
            assert set(facts.runtimes) <= RUNTIMES and facts.library_name in ("transformers", "gguf")


def test_vllm_loads_compressed_tensors_and_autoawq_not_bitsandbytes():
    table = engine_formats()
    assert table["vllm"] == {"compressed-tensors", "autoawq"}
    assert table["llama.cpp"] == table["ollama"] == {"gguf"}
    assert "bitsandbytes" in table["transformers"] and "gguf" not in table["transformers"]


@pytest.mark.parametrize("method, fmt, bits", ARTIFACTS, ids=[f"{m}-{f}" for m, f, _ in ARTIFACTS])
def test_cards_carry_their_own_methods_tags(method, fmt, bits):
    manifest = manifest_for(method, fmt, bits)
    data = card_data(manifest, None, manifest["name"])
    tags = set(data.tags)
    assert {"quantkit", "quantized", method, *get_method(method).tags} <= tags
    if method != "awq":
        assert "awq" not in tags, tags  # compressed-tensors is not AWQ
    if fmt == "gguf":
        assert data.library_name == "gguf" and {"gguf", "llama.cpp"} <= tags and not any(t.endswith("-bit") for t in tags)
    else:
        assert data.library_name == "transformers" and f"{bits}-bit" in tags
        assert {"4-bit", "8-bit"} - {f"{bits}-bit"} & tags == set()
    assert data.model_name == f"SmolLM2-135M-Instruct-{get_method(method).label}"


def test_fp8_w8a8_gptq_cards_name_their_method():
    tags = {
        m: set(card_data(manifest_for(m, "compressed-tensors", b), None, "x").tags)
        for m, b in (("fp8", 8), ("w8a8", 8), ("gptq", 4))
    }
    assert {"fp8", "compressed-tensors", "8-bit"} <= tags["fp8"] and not {"awq", "4-bit"} & tags["fp8"]
    assert {"w8a8", "int8", "8-bit"} <= tags["w8a8"] and not {"awq", "4-bit"} & tags["w8a8"]
    assert {"gptq", "4-bit"} <= tags["gptq"] and "awq" not in tags["gptq"]
    assert card_data(manifest_for("fp8", "compressed-tensors", 8), None, "x").model_name == "x"


@pytest.mark.parametrize("method, fmt, bits", ARTIFACTS, ids=[f"{m}-{f}" for m, f, _ in ARTIFACTS])
def test_cards_say_which_runtimes_load_the_artifact(method, fmt, bits):
    manifest = manifest_for(method, fmt, bits)
    card = str(render(manifest, None, hub_usage(manifest, ["model.safetensors"], "acme/x", "hf"), manifest["name"]))
    runtimes = get_method(method).formats[fmt].runtimes
    names = {"transformers": "transformers", "vllm": "vLLM", "llama.cpp": "llama.cpp", "ollama": "Ollama"}
    assert f"Loads without quantkit in: {', '.join(names[r] for r in runtimes)}." in card
    assert ("vllm serve" in card) == ("vllm" in runtimes)  # no vLLM recipe for bitsandbytes


def test_gguf_bits_cover_every_type_and_price_iq_types():
    from quantkit.quantization.gguf.method import BITS_PER_WEIGHT
    from quantkit.quantization.gguf.tools import FTYPES

    assert set(BITS_PER_WEIGHT) == set(FTYPES)
    assert all(FTYPES[t] <= BITS_PER_WEIGHT[t] < FTYPES[t] + 1.5 for t in FTYPES if t not in ("F16", "BF16"))
    gguf = get_method("gguf")
    fp = gguf.footprint(make_options("gguf", {"gguf_types": ["IQ3_M", "Q4_K_M", "Q8_0"]}))
    assert fp.bits == (3.66, 4.85, 8.5)  # IQ3_M was priced at 8 bits
    config = json.loads((Path(__file__).parent / "fixtures/configs/llama-3.1-8b-instruct.json").read_text())
    sizes = [estimate.artifact_bytes(config, fp, i) for i in range(3)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_help_lists_every_method():
    from quantkit.cli import cli

    out = CliRunner().invoke(cli, ["--help"]).output
    assert all(name in out for name in METHODS)
    out = CliRunner().invoke(cli, ["quantize", "--help"]).output.replace("\n", " ")
    for name in METHODS:
        assert f"{name}:" in out


@pytest.fixture
def sparse_method(monkeypatch):
    from quantkit.quantization.registry import settings_table

    monkeypatch.setitem(METHODS, "sparse", MethodEntry("plugins.fake_method:SparseMethod"))
    settings_table.cache_clear()
    yield "sparse"
    settings_table.cache_clear()


def test_a_new_method_gets_its_card_from_its_declaration(sparse_method, tiny_llama, tmp_path):
    """tests/plugins/fake_method.py, quantized for real: its card's tags, library and runtimes come
    from its own declaration, with no edit anywhere else."""
    from huggingface_hub import ModelCard

    from quantkit.quantization.quantize import quantize

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    (base / "quantkit-source.json").write_text(json.dumps({"source": "hf", "repo_id": "acme/Tiny-Llama"}))
    folder = quantize(base, "sparse", tmp_path / "out")
    manifest = json.loads((folder / "quantkit.json").read_text())
    assert manifest["runtimes"] == ["transformers", "vllm"] and manifest["name"] == "Tiny-Llama-Sparse"
    card = ModelCard.load(folder / "README.md")
    assert {"sparse", "dense-sparse"} <= set(card.data.tags) and "awq" not in card.data.tags
    assert card.data.library_name == "transformers" and card.data.model_name == "Tiny-Llama-Sparse"
    assert "Loads without quantkit in: transformers, vLLM." in card.text


def test_report_renames_an_old_card_after_its_artifact(tmp_path):
    """A card written when model_name was the folder's name ("fp8" in a run) takes the artifact's
    name from its manifest when results are filled in."""
    from huggingface_hub import ModelCard

    from quantkit.core.card import refill, write_model_card

    manifest = manifest_for("fp8", "compressed-tensors", 8)
    folder = tmp_path / "fp8"
    folder.mkdir()
    write_model_card(folder, manifest, "use it", title="fp8")
    refill(folder, manifest, [])
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "SmolLM2-135M-Instruct-FP8" and "fp8" in card.data.tags and "awq" not in card.data.tags


def test_quantize_help_reads_every_declaration_without_heavy_imports():
    """`quantkit quantize --help` imports every method module for its summary: they stay light."""
    import subprocess
    import sys

    code = (
        "import sys; from quantkit.cli import main\n"
        "try:\n    main(['quantize', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'bitsandbytes', 'llmcompressor') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and all(f"{name}:" in out.replace("\n", " ") for name in METHODS)
