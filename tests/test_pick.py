"""``quantkit pick``: the artifact to deploy in a memory budget, from a run's results.json
(written here in pipeline.finish()'s format, with the llama-3.1-8b config for the KV cache)."""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import GOOD  # noqa: E402

from quantkit.core.errors import InputError  # noqa: E402
from quantkit.pipeline.pick import parse_memory, pick  # noqa: E402

CONFIG = Path(__file__).parent / "fixtures" / "configs" / "llama-3.1-8b-instruct.json"
GiB = 2**30
KV_4K = 2 * 32 * 8 * 128 * 4096 * 2  # llama-3.1-8b, 16-bit K/V: 512 MiB


def result(name, size_gib, kld, top1, tg, engine="transformers", failures=(), runtime_gib=None):
    r = json.loads(json.dumps(GOOD))
    r.update(
        name=name,
        engine=engine,
        size_bytes=int(size_gib * GiB),
        weights_bytes=int(size_gib * GiB),
        decode_tokens_per_s=tg,
        failures=list(failures),
        passed=not failures,
        runtime_bytes=int(runtime_gib * GiB) if runtime_gib else None,
    )
    r["quality"].update(kld_mean=kld, top1_agreement=top1)
    return r


def outcome(name, method, results, status="passed", **extra):
    return {
        "name": name,
        "method": method,
        "status": status,
        "path": None,
        "failed_stage": None,
        "error": None,
        "gate_failures": [],
        "stages": {"quantize": "done", "bench": "done"},
        "results": results,
        "seconds": {},
        "pushed": None,
        **extra,
    }


@pytest.fixture
def run_dir(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(CONFIG, model / "config.json")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "model.json").write_text(json.dumps({"key": "k", "path": str(model)}))
    artifacts = [
        outcome("awq", "awq", [result("awq", 5.4, 0.030, 0.93, 9.0, runtime_gib=15.0)]),
        outcome("nf4", "nf4", [result("nf4", 5.6, 0.032, 0.92, 14.0)]),
        outcome("int8", "int8", [result("int8", 8.6, 0.004, 0.98, 8.0)]),
        outcome(
            "gguf",
            "gguf",
            [
                result("gguf/Q4_K_M", 4.6, 0.040, 0.91, 30.0, engine="llama.cpp"),
                result("gguf/Q8_0", 8.0, 0.003, 0.985, 20.0, engine="llama.cpp"),
                result("gguf/Q2_K", 2.9, 0.4, 0.7, 40.0, engine="llama.cpp", failures=["quality: KLD 0.4 > 0.1"]),
            ],
            status="gate_failed",
        ),
        outcome("broken", "awq", [], status="failed", failed_stage="quantize", error="QuantizeError: out of memory"),
    ]
    data = {
        "recipe": "llama",
        "recipe_file": None,
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "passed": False,
        "exit_code": 1,
        "error": None,
        "seconds": 1.0,
        "artifacts": artifacts,
    }
    (tmp_path / "results.json").write_text(json.dumps(data))
    return tmp_path


def reasons(p):
    return {c.name: c.reason for c in p.others}


def test_parse_memory():
    assert parse_memory("6GiB") == 6 * GiB and parse_memory("6GB") == 6 * 10**9
    assert parse_memory("6000MiB") == 6000 * 2**20 and parse_memory("6 g") == 6 * GiB
    with pytest.raises(InputError, match="6GiB"):
        parse_memory("six")


def test_large_budget_picks_fastest_near_equal(run_dir):
    p = pick(run_dir, "16GiB")
    # Q8_0 (KLD 0.003) and int8 (0.004) are near-equal (within 0.005): the faster Q8_0 wins.
    assert p.chosen.name == "gguf/Q8_0" and p.chosen.kv_bytes == KV_4K
    why = reasons(p)
    assert why["int8"] == "slower: tg 8.0 vs 20.0 tok/s (KLD near-equal)"
    assert why["nf4"] == "worse quality: KLD 0.0320 vs 0.0030"
    assert why["gguf/Q2_K"].startswith("failed gate: quality")
    assert why["broken"].startswith("failed build: quantize stage: QuantizeError")
    assert (run_dir / "pick.png").stat().st_size > 1000


def test_small_budget_and_engines(run_dir):
    p = pick(run_dir, "6GiB")
    assert p.chosen.name == "gguf/Q4_K_M"
    why = reasons(p)
    assert why["gguf/Q8_0"] == "too big: needs 8.50 GiB > 6.00 GiB"
    assert why["nf4"].startswith("too big: needs 6.10 GiB")
    # transformers: AWQ runs dequantized there (15 GiB measured); nf4 is the one that fits in 7 GiB.
    p = pick(run_dir, "7GiB", engine="transformers")
    assert p.chosen.name == "nf4" and p.chosen.weights_source == "file size"
    assert reasons(p)["awq"] == "too big: needs 15.50 GiB > 7.00 GiB"
    assert reasons(p)["gguf/Q4_K_M"] == "wrong engine: gguf is not served by transformers"
    # vLLM serves the compressed AWQ at its file size, and never bitsandbytes (vLLM 0.32 refuses it),
    # though nf4 would fit and decode faster.
    p = pick(run_dir, "7GiB", engine="vllm")
    assert p.chosen.name == "awq" and p.chosen.weights_source == "file size"
    assert reasons(p)["nf4"] == reasons(p)["int8"].replace("int8", "nf4") == "wrong engine: bitsandbytes is not served by vllm"
    p = pick(run_dir, "16GiB", engine="transformers", min_top1=0.925)
    assert p.chosen.name == "int8" and reasons(p)["nf4"] == "top-1 92.0% < 92.5%"


def test_vllm_never_picks_bitsandbytes_whatever_the_budget(run_dir):
    """The engine table comes from the methods' declarations: bitsandbytes is transformers' only."""
    for memory in ("7GiB", "64GiB"):
        p = pick(run_dir, memory, engine="vllm")
        assert p.chosen.method not in ("nf4", "int8")
        assert all(c.reason.startswith("wrong engine") for c in p.all if c.format == "bitsandbytes")
    with pytest.raises(InputError, match="fits"):  # nothing vLLM loads fits: bitsandbytes is not offered instead
        pick(run_dir, "5.5GiB", engine="vllm")


def test_unvalidated_results_are_never_picked(run_dir):
    """A result with no base (quality skipped) passed no gate that compares it: it is not a candidate."""
    data = json.loads((run_dir / "results.json").read_text())
    unchecked = result("int8-nobase", 1.0, None, None, 99.0) | {"quality": None, "failures": [], "passed": True}
    data["artifacts"].append(outcome("int8-nobase", "int8", [unchecked]))
    (run_dir / "results.json").write_text(json.dumps(data))
    p = pick(run_dir, "16GiB")
    assert p.chosen.name != "int8-nobase"
    assert reasons(p)["int8-nobase"] == "unvalidated: no base model: quality not compared"


def test_a_new_method_gets_pick_rows_from_its_declaration(run_dir, monkeypatch):
    """tests/plugins/fake_method.py declares its format and runtimes once; pick needs no other edit."""
    from quantkit.quantization.registry import METHODS, MethodEntry

    monkeypatch.setitem(METHODS, "sparse", MethodEntry("plugins.fake_method:SparseMethod"))
    data = json.loads((run_dir / "results.json").read_text())
    data["artifacts"].append(outcome("sparse", "sparse", [result("sparse", 1.0, 0.001, 0.99, 50.0)]))
    (run_dir / "results.json").write_text(json.dumps(data))
    p = pick(run_dir, "16GiB", engine="vllm")
    assert p.chosen.name == "sparse" and p.chosen.format == "dense"
    p = pick(run_dir, "16GiB", engine="llama.cpp")
    assert reasons(p)["sparse"] == "wrong engine: dense is not served by llama.cpp"


def test_errors(run_dir, tmp_path):
    with pytest.raises(InputError, match="no results.json"):
        pick(tmp_path / "nowhere", "6GiB")
    with pytest.raises(InputError, match=r"fits 2.00 GiB.*gguf/Q4_K_M, needs 5.10 GiB"):
        pick(run_dir, "2GiB")
    with pytest.raises(InputError, match="unknown engine"):
        pick(run_dir, "6GiB", engine="onnx")


def test_cli(run_dir):
    from click.testing import CliRunner

    from quantkit.cli import cli

    out = CliRunner().invoke(cli, ["pick", str(run_dir), "--memory", "6GiB", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["pick"]["name"] == "gguf/Q4_K_M" and data["memory_bytes"] == 6 * GiB
    assert {o["name"] for o in data["others"]} == {"awq", "nf4", "int8", "gguf/Q8_0", "gguf/Q2_K", "broken"}
    out = CliRunner().invoke(cli, ["pick", str(run_dir), "--memory", "6GiB", "--context", "8192"])
    assert out.exit_code == 0, out.output
    assert out.output.strip().splitlines()[-1] == "gguf/Q4_K_M"


def test_run_pick_prints_the_pick(tmp_path, tiny_llama, monkeypatch):
    """``quantkit run RECIPE --pick`` (the bench seam canned, as in test_pipeline)."""
    from click.testing import CliRunner
    from test_pipeline import write_recipe

    from quantkit.cli import cli
    from quantkit.pipeline import run as pipeline

    monkeypatch.setattr(pipeline, "bench_one", lambda target, base, recipe: json.loads(json.dumps(GOOD)))
    recipe = write_recipe(tmp_path, tiny_llama, "- name: int8\n  method: int8\n  device: cpu\n")
    out = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(tmp_path / "run"), "--pick", "1GiB"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert lines[-2] == "int8" and lines[-1].endswith("report.md")  # the pick, then the report's path last
    assert (tmp_path / "run" / "pick.png").is_file()
