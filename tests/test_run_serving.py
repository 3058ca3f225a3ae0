"""A recipe's bench names deployment engines (``serving: [llama-server, vllm]``): ``quantkit run``
serves each artifact in each engine that runs it (llama-server for real on the bundled GGUF, vLLM
as the stand-in tests/fake_vllm.py on a folder declaring vLLM) and the run report shows the rows
beside the in-process numbers; an artifact an engine does not run is skipped with the reason; a
server that fails on one it should run fails that artifact at the serving stage. The quantize stage
and the in-process bench are replaced (tests/test_pipeline.py covers them) to keep this fast."""

import json
from pathlib import Path

import pytest
from test_pipeline import GOOD
from test_vllm_server import artifact_like, fake_vllm  # noqa: F401  (the fixture)

from quantkit.pipeline import run as pipeline
from quantkit.pipeline.recipe import load_recipe


def gguf() -> Path:
    from quantkit.hub.bundled import bundled_gguf

    return bundled_gguf("bundled:smollm2-135m-instruct")


def recipe_file(tmp_path: Path, model: Path, extra: str = "") -> Path:
    path = tmp_path / "serving.yaml"
    path.write_text(
        f"name: serving\nmodel:\n  id: {model}\n"
        "bench:\n  device: cpu\n  threads: 1\n  serving: [llama-server, vllm]\n  concurrency: [2]\n"
        f"  num_requests: 2\n  max_tokens: 8\n{extra}"
        "artifacts:\n  - name: gguf\n    method: gguf\n    gguf_types: [Q4_K_M]\n  - name: awq\n    method: awq\n"
    )
    return path


@pytest.fixture
def built(smollm2, tmp_path, monkeypatch) -> dict:
    """The artifacts as if quantized: the bundled GGUF, and SmolLM2's weights declared as a vLLM format."""
    folders = {"gguf": gguf(), "awq": artifact_like(tmp_path, smollm2, "awq", "compressed-tensors", ["transformers", "vllm"])}

    def quantized(recipe, spec, model_dir, out_dir, stages, force):
        stages.record(f"{spec.name}.quantize", spec.name, {}, seconds=0)
        return folders[spec.name], False

    monkeypatch.setattr(pipeline, "stage_quantize", quantized)
    monkeypatch.setattr(pipeline, "bench_one", lambda target, base, recipe: json.loads(json.dumps(GOOD)))
    return folders


@pytest.mark.slow
def test_run_records_each_engines_serving_row_beside_the_in_process_bench(smollm2, tmp_path, built, fake_vllm):  # noqa: F811
    out = tmp_path / "out"
    summary = pipeline.run(load_recipe(recipe_file(tmp_path, smollm2)), out)
    assert summary.exit_code == 0, [(a.name, a.error) for a in summary.artifacts]
    serving = {a.name: a.results[0]["serving"] for a in summary.artifacts}
    (ls, vllm_skip), (ls_skip, vllm) = serving["gguf"], serving["awq"]
    assert ls["engine"] == "llama-server" and ls["command"].startswith("llama-server -m ")
    assert vllm["engine"] == "vllm" and vllm["command"].startswith("python -m vllm.entrypoints.openai.api_server --model ")
    for record in (ls, vllm):
        (level,) = record["results"]
        assert level["concurrency"] == 2 and level["completed"] == 2 and level["total_output_tokens"] == 16
    assert "vllm does not run" in vllm_skip["skipped"] and "llama-server does not run smol-awq" in ls_skip["skipped"]
    report = (out / "report.md").read_text()
    assert "## In the deployment engine" in report and "| gguf | llama-server | 2 |" in report and "| awq | vllm | 2 |" in report
    assert "- vllm skipped gguf: vllm does not run" in report and "- llama-server skipped awq:" in report
    assert "| gguf | transformers |" in report  # the in-process row of the same artifact
    assert all(a.stages["serving"] == "done" for a in summary.artifacts)
    saved = json.loads((out / "results.json").read_text())
    assert saved["artifacts"][0]["results"][0]["serving"][0]["engine"] == "llama-server"
    # A rerun with the same settings serves nothing again, and the report still has the rows.
    again = pipeline.run(load_recipe(recipe_file(tmp_path, smollm2)), out)
    assert all(a.stages["serving"] == "skipped" for a in again.artifacts)
    assert "| awq | vllm | 2 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_server_failing_on_an_artifact_it_runs_fails_it_at_the_serving_stage(smollm2, tmp_path, built, fake_vllm):  # noqa: F811
    recipe = load_recipe(recipe_file(tmp_path, smollm2, "  tensor_parallel: 2\n"))
    summary = pipeline.run(recipe, tmp_path / "out", only="awq")
    (awq,) = summary.artifacts
    assert awq.status == "failed" and awq.failed_stage == "serving" and "no GPUs" in awq.error
    assert awq.results and "| awq | transformers |" in (tmp_path / "out" / "report.md").read_text()
    argv = json.loads(fake_vllm.read_text())["argv"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"


def test_an_engine_not_installed_here_is_a_skip_with_the_fix(smollm2, tmp_path, monkeypatch):
    from quantkit.pipeline.serving import serve_one

    awq = artifact_like(tmp_path, smollm2, "awq", "compressed-tensors", ["transformers", "vllm"])
    monkeypatch.setenv("QUANTKIT_VLLM_PYTHON", "")  # vLLM turned off
    record = serve_one(awq, "vllm", load_recipe(recipe_file(tmp_path, smollm2)))
    assert record["engine"] == "vllm" and "QUANTKIT_VLLM_PYTHON" in record["skipped"]


def test_dry_run_prices_vllm_per_gpu_for_tensor_parallel_2(tmp_path, monkeypatch):
    """Each of tp x pp GPUs holds 1/(tp x pp) of the weights and of the load test's KV cache."""
    from quantkit.core.estimate import artifact_bytes, kv_cache_bytes
    from quantkit.core.estimate_gpu import CUDA_OVERHEAD_BYTES
    from quantkit.pipeline.plan import plan
    from quantkit.quantization.registry import get_method

    monkeypatch.setenv("QUANTKIT_CONFIG_DIR", str(Path(__file__).parent / "fixtures" / "configs"))
    text = (
        "name: tp\nrunner: gpu\nmodel:\n  id: meta-llama/Llama-3.1-8B-Instruct\n"
        "bench:\n  device: cuda\n  serving: [vllm, llama-server]\n  concurrency: [1, 8]\n  max_tokens: 256\n{sizes}"
        "artifacts:\n  - name: awq\n    method: awq\n"
    )
    rows = {}
    for tp in (1, 2):
        path = tmp_path / f"tp{tp}.yaml"
        path.write_text(text.format(sizes=f"  tensor_parallel: {tp}\n"))
        recipe = load_recipe(path)
        rows[tp] = [r for r in plan(recipe, recipe.artifacts, tmp_path / "o", force=False) if r.stage == "serving"]
    (vllm, llama), (vllm1, _) = rows[2], rows[1]
    assert llama.action == "n/a" and "llama-server does not run it" in llama.note
    config = json.loads((Path(__file__).parent / "fixtures" / "configs" / "llama-3.1-8b-instruct.json").read_text())
    weights = artifact_bytes(config, get_method("awq").footprint(recipe.artifacts[0].options))
    kv = kv_cache_bytes(config, 8 * 512)  # 8 sequences of the prompt set plus a 256-token reply
    assert vllm.action == "run" and vllm.cost.gpu_bytes == -(-weights // 2) + -(-kv // 2) + CUDA_OVERHEAD_BYTES
    assert vllm1.cost.gpu_bytes == weights + kv + CUDA_OVERHEAD_BYTES
    assert 4 * 2**30 < weights < 7 * 2**30 and vllm.cost.gpu_bytes < vllm1.cost.gpu_bytes
    assert "tp2 x pp1 = 2 GPUs, each" in vllm.note and "/2 + KV cache" in vllm.note
    assert "GPUs" not in vllm1.note
