"""``quantkit run``: stages, resuming, skipping, failures, --only, --dry-run.

The orchestration tests quantize for real (nf4/int8 on the tiny Llama take seconds) and replace
only the bench seam (``pipeline.bench_one``) with a canned result, so they test the pipeline's own
logic quickly; ``test_end_to_end_with_real_bench`` and the slow SmolLM2 test run every stage."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quantkit.core.errors import InputError
from quantkit.core.events import listen
from quantkit.core.manifest import MANIFEST, read_manifest
from quantkit.pipeline import run as pipeline
from quantkit.pipeline.recipe import load_recipe, shipped_recipes

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "fixtures" / "configs"
# The shape of quantkit.benchmark.bench's BenchResult.to_dict(), as much as the pipeline and report read.
GOOD = {
    "schema": 1,
    "kind": "bench",
    "engine": "transformers",
    "bits": 4,
    "size_bytes": 1000,
    "bits_per_weight": 4.5,
    "prompt_tokens": 8,
    "gen_tokens": 4,
    "repetitions": 1,
    "peak_rss_mb": 100.0,
    "ttft_ms": 2.0,
    "ttft_ms_std": 0.1,
    "decode_tokens_per_s": 50.0,
    "decode_tokens_per_s_std": 1.0,
    "prefill_tokens_per_s": 400.0,
    "prefill_tokens_per_s_std": 5.0,
    "environment": {"cpu": "test", "device": "cpu", "threads": 1},
    "smoke": {"passed": True, "failures": [], "transcript": "user: hi"},
    "quality": {
        "tokenizer_parity": True,
        "kld_mean": 0.01,
        "kld_p99": 0.1,
        "top1_agreement": 0.97,
        "ppl_ratio": 1.01,
        "failures": [],
    },
    "failures": [],
    "passed": True,
}
# A subprocess with the same canned bench, for the tests that kill a run.
FAKE_BENCH_MAIN = (
    "import sys, json; import quantkit.pipeline.run as p\n"
    f"p.bench_one = lambda target, base, recipe: json.loads({json.dumps(json.dumps(GOOD))})\n"
    "from quantkit.cli import main; main(sys.argv[1:])\n"
)


def write_recipe(
    folder: Path, model: Path, artifacts: str, bench: str = "gen_tokens: 4", gates: str = "smoke: true", name: str = "tiny"
) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nmodel:\n  id: {model}\nbench:\n  {bench}\n  device: cpu\ngates:\n  {gates}\n"
        f"artifacts:\n{textwrap.indent(textwrap.dedent(artifacts), '  ')}"
    )
    return path


TWO = """\
- name: nf4
  method: nf4
  device: cpu
- name: int8
  method: int8
  device: cpu
"""


class Calls:
    """The fake bench: counts calls and returns GOOD (or what a test sets)."""

    def __init__(self):
        self.targets, self.result = [], dict(GOOD)

    def __call__(self, target, base, recipe):
        self.targets.append(Path(target))
        return json.loads(json.dumps(self.result))


@pytest.fixture
def fake_bench(monkeypatch):
    calls = Calls()
    monkeypatch.setattr(pipeline, "bench_one", calls)
    return calls


def run(recipe_path, out, **kwargs):
    lines = []
    with listen(lambda event: event.stage == "run" and lines.append(event.message)):
        summary = pipeline.run(load_recipe(recipe_path), out, **kwargs)
    return summary, "\n".join(lines)


def test_run_resume_and_changed_settings(tmp_path, tiny_llama, fake_bench):
    recipe = write_recipe(tmp_path, tiny_llama, TWO)
    out = tmp_path / "out"
    summary, log = run(recipe, out)
    assert summary.exit_code == 0, log
    assert [a.status for a in summary.artifacts] == ["passed", "passed"]
    assert all(a.stages == {"quantize": "done", "bench": "done"} for a in summary.artifacts)
    for name, method in (("nf4", "nf4"), ("int8", "int8")):
        assert read_manifest(out / "artifacts" / name)["method"] == method
        card = (out / "artifacts" / name / "README.md").read_text()
        assert "tg tok/s" in card and "Not benchmarked yet" not in card  # the card's results were filled
    results = json.loads((out / "results.json").read_text())
    assert results["passed"] is True and [a["name"] for a in results["artifacts"]] == ["nf4", "int8"]
    assert results["artifacts"][0]["results"][0]["quality"]["kld_mean"] == 0.01
    assert "nf4" in (out / "report.md").read_text()
    assert len(fake_bench.targets) == 2

    # A second run does nothing and says so.
    before = (out / "artifacts" / "nf4" / MANIFEST).stat().st_mtime_ns
    summary, log = run(recipe, out)
    assert summary.exit_code == 0
    assert all(a.stages == {"quantize": "skipped", "bench": "skipped"} for a in summary.artifacts)
    assert log.count("skipped (up to date") == 5, log  # model + 2 x (quantize, bench)
    assert len(fake_bench.targets) == 2
    assert (out / "artifacts" / "nf4" / MANIFEST).stat().st_mtime_ns == before

    # A bench setting redoes the benches only.
    recipe = write_recipe(tmp_path, tiny_llama, TWO, bench="gen_tokens: 6")
    summary, log = run(recipe, out)
    assert [a.stages for a in summary.artifacts] == [{"quantize": "skipped", "bench": "done"}] * 2
    assert len(fake_bench.targets) == 4

    # One artifact's setting redoes that artifact only.
    changed = TWO.replace("method: nf4\n", "method: nf4\n  double_quant: false\n")
    recipe = write_recipe(tmp_path, tiny_llama, changed, bench="gen_tokens: 6")
    summary, log = run(recipe, out)
    assert [a.stages for a in summary.artifacts] == [
        {"quantize": "done", "bench": "done"},
        {"quantize": "skipped", "bench": "skipped"},
    ]
    assert read_manifest(out / "artifacts" / "nf4")["settings"].get("double_quant") in (False, None)

    # Gates are recomputed from the stored results without redoing anything; a failed gate exits 3.
    recipe = write_recipe(tmp_path, tiny_llama, changed, bench="gen_tokens: 6", gates="top1_min: 0.99")
    summary, log = run(recipe, out)
    assert summary.exit_code == 3
    assert all(a.status == "gate_failed" for a in summary.artifacts)
    assert all(a.stages == {"quantize": "skipped", "bench": "skipped"} for a in summary.artifacts)
    assert "top1_agreement 0.97 < 0.99" in summary.artifacts[0].gate_failures[0]
    # --force redoes every stage.
    fake_bench.result = {**GOOD, "quality": {**GOOD["quality"], "top1_agreement": 0.5}}
    summary, _ = run(recipe, out, force=True)
    assert all(a.stages == {"quantize": "done", "bench": "done"} for a in summary.artifacts)
    assert "top1_agreement 0.5 < 0.99" in summary.artifacts[0].gate_failures[0]
    assert "FAILED gates" in (out / "report.md").read_text()


def test_one_failing_artifact_does_not_stop_the_others(tmp_path, tiny_llama, fake_bench):
    # The tiny Llama's hidden size is 128: AWQ with group size 96 cannot work.
    artifacts = """\
    - name: awq-bad
      method: awq
      group_size: 96
      device: cpu
    - name: nf4
      method: nf4
      device: cpu
    """
    recipe = write_recipe(tmp_path, tiny_llama, artifacts)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", FAKE_BENCH_MAIN, "run", str(recipe), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    data = json.loads((out / "results.json").read_text())
    bad, good = data["artifacts"]
    assert bad["status"] == "failed" and bad["failed_stage"] == "quantize" and bad["error"]
    assert good["status"] == "passed" and (out / "artifacts" / "nf4" / MANIFEST).is_file()
    assert not (out / "artifacts" / "awq-bad").exists()
    report = (out / "report.md").read_text()
    assert "awq-bad" in report and "FAILED" in report and bad["error"][:30].replace("|", "/") in report
    assert result.stdout.strip().splitlines()[-1] == str(out / "report.md")


def test_only_runs_one_artifact(tmp_path, tiny_llama, fake_bench):
    recipe = write_recipe(tmp_path, tiny_llama, TWO)
    out = tmp_path / "out"
    summary, _ = run(recipe, out, only="int8")
    assert [a.name for a in summary.artifacts] == ["int8"]
    assert (out / "artifacts" / "int8").is_dir() and not (out / "artifacts" / "nf4").exists()
    with pytest.raises(InputError, match="no artifact 'nope'"):
        run(recipe, out, only="nope")


def test_killed_run_resumes(tmp_path, tiny_llama):
    recipe = write_recipe(tmp_path, tiny_llama, TWO)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", FAKE_BENCH_MAIN, "run", str(recipe), "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    for line in proc.stderr:  # kill it while it quantizes the second artifact
        seen.append(line)
        if line.startswith("[quantize int8] int8"):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert (out / "artifacts" / "nf4" / MANIFEST).is_file()
    assert not (out / "artifacts" / "int8").exists()  # never a half-written artifact
    assert not (out / "results.json").exists()

    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "[quantize nf4] skipped (up to date" in result.stderr
    assert "[bench nf4] skipped (up to date" in result.stderr
    assert "[quantize int8] done" in result.stderr
    assert not list((out / "artifacts").glob(".int8.partial-*"))  # the killed run's staging was cleaned
    assert json.loads((out / "results.json").read_text())["passed"] is True


@pytest.mark.parametrize("name", [n for n in shipped_recipes() if load_recipe(n).runner == "gpu"])
def test_gpu_recipes_plan_offline(tmp_path, name):
    env = {**os.environ, "QUANTKIT_CONFIG_DIR": str(CONFIGS), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "quantkit", "run", name, "--dry-run", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    recipe = load_recipe(name)
    for spec in recipe.artifacts:
        assert spec.name in result.stderr
    assert "GB" in result.stderr and "?" not in result.stderr.split("plan")[1]  # every stage has an estimate
    assert not (tmp_path / "o").exists(), "a dry run writes nothing"


def test_dry_run_refuses_what_cannot_work(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTKIT_CONFIG_DIR", str(CONFIGS))
    bad = (REPO / "recipes" / "yi-34b-chat-awq.yaml").read_text().replace("group_size: 128", "group_size: 96")
    no_trust = (
        (REPO / "recipes" / "baichuan2-13b-chat-nf4.yaml")
        .read_text()
        .replace("trust_remote_code: true", "trust_remote_code: false")
    )
    for text, problem in ((bad, "`group_size` 96 does not divide the input width 7168"), (no_trust, "trust_remote_code")):
        path = tmp_path / "r.yaml"
        path.write_text(text)
        summary = pipeline.run(load_recipe(path), tmp_path / "o", dry_run=True)
        assert summary.exit_code == 1 and problem in summary.error
        assert [row.action for row in summary.plan if row.stage == "quantize"] == ["blocked"]


def test_dry_run_shows_what_a_rerun_would_skip(tmp_path, tiny_llama, fake_bench):
    recipe = write_recipe(tmp_path, tiny_llama, TWO)
    out = tmp_path / "out"
    plan = pipeline.run(load_recipe(recipe), out, dry_run=True).plan
    assert [r.action for r in plan] == ["run"] * 5 and all(r.cost for r in plan)
    run(recipe, out, only="nf4")
    plan = pipeline.run(load_recipe(recipe), out, dry_run=True).plan
    assert [(r.stage, r.artifact, r.action) for r in plan] == [
        ("model", None, "skip"),
        ("quantize", "nf4", "skip"),
        ("bench", "nf4", "skip"),
        ("quantize", "int8", "run"),
        ("bench", "int8", "run"),
    ]


@pytest.mark.slow
def test_end_to_end_with_real_bench(tmp_path, tiny_llama):
    """Every stage for real on the tiny Llama (random weights: its smoke chat is not gated)."""
    recipe = write_recipe(
        tmp_path,
        tiny_llama,
        "- name: nf4\n  method: nf4\n  device: cpu\n",
        bench="gen_tokens: 4\n  prompt_tokens: 8\n  repetitions: 1\n  threads: 1\n  eval_tokens: 64",
        gates="smoke: false",
    )
    out = tmp_path / "out"
    summary, log = run(recipe, out)
    assert summary.exit_code == 0, log + json.dumps([a.error for a in summary.artifacts])
    result = summary.artifacts[0].results[0]
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s", "size_bytes"):
        assert result[key], key
    assert result["quality"]["kld_mean"] is not None
    # The smoke chat ran, but this recipe does not gate on it (random weights babble): no gate
    # failed, yet nothing judged its chat, so it is unvalidated, not passed (exit 0 all the same).
    assert result["smoke"]["turns"] and result["gates"]["smoke"] is False and result["failures"] == []
    assert result["verdict"] == "unvalidated" and result["passed"] is False
    assert summary.artifacts[0].status == "unvalidated" and summary.artifacts[0].unvalidated == ["nf4: smoke chat not gated"]
    report = (out / "report.md").read_text()
    assert "## Benchmarks" in report and "(bench-report/size_vs_decode.png)" in report
    assert "| nf4 | nf4 | unvalidated |" in report and "*unvalidated*" in report
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "unvalidated" and results["passed"] is False and results["exit_code"] == 0
    assert (out / "bench-report" / "size_vs_decode.png").stat().st_size > 1000


@pytest.mark.slow
def test_smollm2_recipe_end_to_end(tmp_path, smollm2):
    """The shipped default recipe (what `make demo` runs) on the CPU, every artifact it builds:
    the awq-autoawq layout is a repack of the awq calibration, so it costs seconds, not a second
    calibration. Each artifact must pass its gates, as the demo's exit code requires."""
    started = time.time()
    recipe = load_recipe("smollm2-135m-instruct")
    summary = pipeline.run(recipe, tmp_path / "run")
    detail = {a.name: (a.status, a.error, a.gate_failures) for a in summary.artifacts}
    assert summary.exit_code == 0, detail
    assert {a.name for a in summary.artifacts} == {a.name for a in recipe.artifacts}
    assert {a.name for a in summary.artifacts} == {"awq", "awq-autoawq", "nf4", "int8", "gguf"}
    rows = [r["name"] for a in summary.artifacts for r in a.results]
    assert len(rows) == 7  # the gguf entry is benched once per type (Q8_0, Q4_K_M, IQ3_M)
    report = (tmp_path / "run" / "report.md").read_text()
    assert all(name in report for name in rows)
    print(f"smollm2 recipe end to end: {time.time() - started:.0f}s")


def test_one_gguf_entry_is_benched_once_per_type(tmp_path):
    spec = load_recipe("smollm2-135m-instruct").artifact("gguf")
    for name in ("smollm2-Q8_0.gguf", "smollm2-Q4_K_M.gguf"):
        (tmp_path / name).write_bytes(b"")
    assert [label for label, _ in pipeline.bench_targets(spec, tmp_path)] == ["gguf/Q4_K_M", "gguf/Q8_0"]
    (tmp_path / "smollm2-Q4_K_M.gguf").unlink()
    assert pipeline.bench_targets(spec, tmp_path) == [("gguf", tmp_path)]
