"""An engine is one module: tests/plugins/fake_engine.py registers a new engine ("fake") and a
method writing its format through the real registries, and the artifact is quantized and
verified in a fresh process with the engine's own load recipe, carded with the engine's library,
benched and picked, with no edit anywhere else (nothing outside the engines package compares
with an engine's name: tests/test_engine_names.py)."""

import json
import shutil

import pytest
from test_pick import outcome, result

from quantkit.engines import ENGINES


@pytest.fixture
def fake_engine(monkeypatch):
    from plugins.fake_engine import FAKE_ENGINE

    from quantkit.quantization.registry import METHODS, MethodEntry, settings_table

    monkeypatch.setitem(ENGINES, "fake", FAKE_ENGINE)
    monkeypatch.setitem(METHODS, "fakeq", MethodEntry("plugins.fake_engine:FakeFormatMethod"))
    settings_table.cache_clear()
    yield "fake"
    settings_table.cache_clear()


@pytest.fixture
def fake_artifact(fake_engine, tiny_llama, tmp_path):
    from quantkit.quantization.quantize import quantize

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    return quantize(base, "fakeq", tmp_path / "fake-artifact")


def test_a_new_engine_is_verified_carded_benched_and_picked(fake_artifact, tmp_path):
    from huggingface_hub import ModelCard

    from quantkit.benchmark.bench import BenchOptions, bench
    from quantkit.engines import engine_for
    from quantkit.pipeline.pick import pick

    manifest = json.loads((fake_artifact / "quantkit.json").read_text())
    check = manifest["verification"]
    # Verified by its own recipe (plugins/fake_engine_child.py) in a process without quantkit.
    assert manifest["engine"] == "fake" and check["runtime"] == "fake" and check["tokenizer_parity"]
    assert check["top1"] == 1.0  # the stand-in copies the weights: the base's own logits
    assert ModelCard.load(fake_artifact / "README.md").data.library_name == "fake-lib"  # the engine's library
    assert engine_for(fake_artifact) == "fake"

    options = BenchOptions(prompt_tokens=16, gen_tokens=4, repetitions=1, warmup=0, threads=2, eval_tokens=256, bandwidth=False)
    benched = bench(fake_artifact, options=options)
    row = benched.to_dict()
    assert row["engine"] == "fake" and row["quality"]["top1_agreement"] == 1.0 and not row["failures"], row["failures"]

    run = tmp_path / "run"
    run.mkdir()
    artifacts = [
        outcome("fakeq", "fakeq", [{**row, "name": "fakeq"}], path=str(fake_artifact)),
        outcome("nf4", "nf4", [result("nf4", 0.0001, 0.0, 1.0, 1000.0)]),  # better on paper, not on "fake"
    ]
    (run / "results.json").write_text(json.dumps({"artifacts": artifacts}))
    chosen = pick(run, "16GiB", engine="fake", plot=False)
    assert chosen.chosen.name == "fakeq" and chosen.chosen.format == "fake-format"
    assert {c.name: c.reason for c in chosen.others}["nf4"] == "wrong engine: bitsandbytes is not served by fake"
