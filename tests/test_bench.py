"""bench() end to end on SmolLM2: the bundled GGUF (llama.cpp) against its HF base, and the HF
folder itself (transformers); every documented key present and sane; JSON from the CLI."""

import json
import os
from pathlib import Path

import pytest
from models import linked_copy

from quantkit.benchmark.bench import BenchOptions, bench
from quantkit.benchmark.quality import QualityOptions
from quantkit.benchmark.smoke import SmokeOptions
from quantkit.core.events import listen
from quantkit.hub.bundled import bundled_gguf

DOCUMENTED = (
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "ttft_ms",
    "peak_rss_mb",
    "size_bytes",
    "bits_per_weight",
    "passed",
    "verdict",
    "environment",
    "decode_latency_ms",
    "load_s",
    "bandwidth",
)


def options(**kw) -> BenchOptions:
    settings = dict(
        prompt_tokens=64,
        gen_tokens=16,
        repetitions=2,
        threads=1,
        smoke_options=SmokeOptions(max_tokens=160),
        eval_tokens=256,
        quality_options=QualityOptions(ctx=256),
    )
    return BenchOptions(**{**settings, **kw})


def assert_sane(data: dict) -> None:
    for key in DOCUMENTED:
        assert key in data, key
    assert data["prefill_tokens_per_s"] > 0 and data["decode_tokens_per_s"] > 0
    assert data["prefill_tokens_per_s"] > data["decode_tokens_per_s"]  # batched prompt beats one token at a time
    assert 0 < data["ttft_ms"] < 60_000 and data["ttft_ms_std"] >= 0
    lat = data["decode_latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert 50 < data["peak_rss_mb"] < 8000 and data["load_peak_rss_mb"] > 50 and data["load_s"] > 0
    assert data["environment"]["threads"] == 1 and data["environment"]["versions"]["quantkit"]
    bw = data["bandwidth"]
    assert bw["achieved_gbps"] > 0 and bw["copy_gbps"] > 0 and 0 < bw["fraction"] < 2


@pytest.mark.slow
def test_bench_gguf_against_hf_base(smollm2, tmp_path):
    gguf = bundled_gguf("bundled:smollm2-135m-instruct")
    steps = []
    with listen(lambda event: event.step and steps.append(event.step)):
        data = bench(gguf, base=smollm2, options=options()).to_dict()
    assert steps == ["base", "load", "speed", "smoke", "quality"]
    assert_sane(data)
    assert data["engine"] == "llama.cpp" and data["size_bytes"] == gguf.stat().st_size
    assert 5 < data["bits_per_weight"] < 7 and data["bits"] == 4  # Q4_1 plus its f32/q8 tensors
    assert data["smoke"]["passed"] and data["smoke"]["transcript"] and data["smoke"]["mode"] == "chat"
    assert data["smoke"]["against_base"] and data["smoke"]["base"]["transcript"].count("[user]") == 3
    assert data["quality"]["tokenizer_parity"] and data["quality"]["kld_mean"] < 0.02
    assert data["quality"]["top1_agreement"] > 0.9 and data["quality"]["ppl_ratio"] < 1.05
    assert data["passed"] is True and data["failures"] == []
    json.dumps(data)  # serializable as is


@pytest.mark.slow
def test_bench_hf_folder_cli_json(smollm2, tmp_path, capsys):
    from quantkit.cli import main

    out = tmp_path / "hf.json"
    main(
        [
            "bench",
            str(smollm2),
            "--base",
            str(smollm2),
            "--no-smoke",
            "-p",
            "64",
            "-n",
            "16",
            "--repetitions",
            "2",
            "--threads",
            "1",
            "--eval-tokens",
            "256",
            "--json",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    assert_sane(data)
    assert data["engine"] == "transformers" and data["bits"] == 16 and data["smoke"] is None
    # Itself: only the cache's uint16 storage of the base's log-probs (16 nats / 65535 levels) differs.
    assert data["quality"]["kld_mean"] < 1e-4 and data["quality"]["top1_agreement"] == 1.0
    # --no-smoke: no gate failed, but the smoke was skipped, so it is unvalidated (exit 0, not passed)
    assert data["failures"] == [] and data["verdict"] == "unvalidated" and data["passed"] is False
    assert data["unvalidated"] == ["smoke chat skipped"]
    captured = capsys.readouterr()
    assert captured.out.strip().endswith(str(out)) and "tg16" in captured.err


def test_bench_without_a_base_is_unvalidated_not_passed():
    """No base: quality is skipped and the smoke here too, so nothing checked it: "unvalidated"
    (push refuses it without --allow-unvalidated), with ``passed`` false for readers of that key."""
    result = bench(
        bundled_gguf("bundled:smollm2-135m-instruct"), options=options(smoke=False, bandwidth=False, repetitions=1, warmup=0)
    )
    assert result.quality is None and result.failures == [] and "no base" in result.notes[0]
    assert result.verdict == "unvalidated" and not result.passed
    data = result.to_dict()
    assert data["verdict"] == "unvalidated" and data["passed"] is False
    assert data["unvalidated"] == ["no base model: quality not compared", "smoke chat skipped"]


def test_bad_options_are_refused(smollm2):
    from quantkit.core.errors import InputError

    with pytest.raises(InputError):
        bench(smollm2, options=options(gen_tokens=0))
    with pytest.raises(InputError):
        bench(smollm2.parent / "does-not-exist")


@pytest.fixture
def engine_log(monkeypatch):
    """Every transformers/llama.cpp engine load and close, in order, with how many engines were
    open (loaded, not closed) and how many earlier ones were still in memory at each."""
    import weakref

    from quantkit.engines.hf import TransformersEngine
    from quantkit.engines.llamacpp import LlamaCppEngine

    log, open_now, loaded = [], set(), []
    for cls in (TransformersEngine, LlamaCppEngine):

        def init(self, path, options, _init=cls.__init__):
            alive = sum(ref() is not None for ref in loaded)
            log.append(("load", Path(path).name, len(open_now) + alive))
            _init(self, path, options)
            open_now.add(id(self))
            loaded.append(weakref.ref(self))

        def close(self, _close=cls.close):
            _close(self)
            if id(self) in open_now:
                open_now.discard(id(self))
                log.append(("close", Path(self.path).name, len(open_now)))

        monkeypatch.setattr(cls, "__init__", init)
        monkeypatch.setattr(cls, "close", close)
    return log


def test_base_side_first_one_model_at_a_time_and_base_from_manifest(tiny_llama, tmp_path, monkeypatch, engine_log):
    """No --base: the base comes from quantkit.json; its smoke and logits are computed (each with
    the base alone in memory, then freed) before the artifact is loaded, and cached for the next bench."""
    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))  # empty caches
    artifact = linked_copy(tiny_llama, tmp_path / "artifact")
    (artifact / "quantkit.json").write_text(json.dumps({"engine": "transformers", "source": {"path": str(tiny_llama)}}))
    fast = options(
        prompt_tokens=16, gen_tokens=4, repetitions=1, warmup=0, bandwidth=False, smoke_options=SmokeOptions(max_tokens=12)
    )
    steps = []
    with listen(lambda event: event.step and steps.append(event.step)):
        data = bench(artifact, options=fast).to_dict()
    base = tiny_llama.name
    assert data["base"] == str(tiny_llama) and steps == ["base", "load", "speed", "smoke", "quality"]
    assert engine_log == [
        ("load", base, 0),
        ("close", base, 0),  # the base's smoke
        ("load", base, 0),
        ("close", base, 0),  # the base's logits
        ("load", "artifact", 0),
        ("close", "artifact", 0),
    ]
    # The same weights: the artifact's replies are the base's, so its own rambling is excused.
    smoke = data["smoke"]
    assert smoke["against_base"] and smoke["base"]["transcript"] == smoke["transcript"] and smoke["passed"]
    assert data["quality"]["kld_mean"] < 1e-4 and data["passed"], data["failures"]
    engine_log.clear()
    again = bench(artifact, options=fast).to_dict()
    assert engine_log == [("load", "artifact", 0), ("close", "artifact", 0)]  # the base's side was cached
    assert again["smoke"]["base"] == smoke["base"] and again["quality"]["base_cached"]


@pytest.fixture(scope="module")
def tiny_base(tiny_llama, tmp_path_factory) -> Path:
    """A base model: the tiny Llama without any chat template."""
    folder = linked_copy(tiny_llama, tmp_path_factory.mktemp("base") / "tiny-base", skip=("chat_template.jinja",))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow
def test_base_model_recipe_exports_to_gguf_benches_and_reports(tiny_base, tmp_path):
    """A recipe on a base model (no chat template): GGUF export checks it with a completion smoke
    and writes the artifact; bench runs the completion smoke on it and on the base and judges it
    against the base; the report shows both side by side."""
    from quantkit.pipeline import run as pipeline
    from quantkit.pipeline.recipe import load_recipe

    recipe = tmp_path / "base.yaml"
    recipe.write_text(
        f"name: tiny-base\nmodel:\n  id: {tiny_base}\n"
        "bench:\n  prompt_tokens: 16\n  gen_tokens: 4\n  repetitions: 1\n  warmup: 0\n  threads: 1\n"
        "  device: cpu\n  eval_tokens: 256\ngates:\n  smoke: true\n"
        "artifacts:\n  - name: gguf\n    method: gguf\n    gguf_types: [F16]\n"
    )  # F16: no llama.cpp tools
    summary = pipeline.run(load_recipe(recipe), tmp_path / "run")
    outcome = summary.artifacts[0]
    assert outcome.status in ("passed", "gate_failed"), (outcome.error, outcome.gate_failures)
    assert not any("chat template" in f for f in outcome.gate_failures)
    check = json.loads((Path(outcome.path) / "quantkit.json").read_text())["checks"]["F16"]
    assert "smoke_chat" not in check and check["metadata"]["chat_template"] is False
    completion = check["smoke_completion"]
    assert completion["mode"] == "completion" and completion["reply"].strip() and completion["tokens"] > 0

    data = outcome.results[0]
    smoke = data["smoke"]
    assert data["engine"] == "llama.cpp" and data["base"] == str(tiny_base)
    assert smoke["mode"] == smoke["base"]["mode"] == "completion" and smoke["title"] == "completion smoke (no chat template)"
    assert smoke["transcript"].startswith("[prompt] ") and len(smoke["turns"]) == len(smoke["base"]["turns"]) == 3
    assert not any("did not stop" in f for f in smoke["failures"] + smoke["excused"])  # the limit is a fine end
    assert data["quality"]["tokenizer_parity"] and data["quality"]["kld_mean"] is not None
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Completion smoke (no chat template), the artifact's replies beside the base's" in report
    assert "| # | prompt | artifact | base |" in report


def test_base_model_benches_with_a_completion_smoke(tiny_base, tmp_path, monkeypatch):
    """The HF base folder itself (transformers) against itself: completion smoke, identical replies."""
    from quantkit.cli.bench_cmd import render

    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))
    data = bench(
        tiny_base,
        base=tiny_base,
        options=options(
            prompt_tokens=16,
            gen_tokens=4,
            repetitions=1,
            warmup=0,
            bandwidth=False,
            quality=False,
            smoke_options=SmokeOptions(completion_tokens=16),
        ),
    ).to_dict()
    smoke = data["smoke"]
    assert smoke["mode"] == "completion" and smoke["passed"] and smoke["base"]["turns"] == smoke["turns"]
    assert all(t["tokens"] > 0 for t in smoke["turns"])
    # quality was skipped: the smoke passed, but the artifact is unvalidated, not passed
    assert data["verdict"] == "unvalidated" and not data["passed"]
    render(data)  # the CLI's table and the side-by-side transcript render


def test_default_base_is_the_recorded_source(tiny_llama, tmp_path):
    from quantkit.benchmark.bench import default_base

    assert default_base({"source": {"path": str(tiny_llama), "model": "someone/else"}}) == tiny_llama
    assert default_base({"source": {"path": str(tmp_path / "gone"), "model": str(tiny_llama)}}) == tiny_llama
    # Without quality the smoke alone does not download a base from the hub.
    assert default_base({"source": {"model": "someone/not-here"}}, download=False) is None
    assert default_base(None) is None and default_base({"source": {}}) is None


# Peak RSS of a fresh process: SmolLM2 loaded once (the larger of base and artifact, here the same)...
ONE_MODEL = """
import sys
from quantkit.core.memory import own_peak_rss
from quantkit.engines import EngineOptions, load_engine
engine = load_engine(sys.argv[1], EngineOptions(threads=1))
engine.logits(list(range(100, 164)))
engine.close()
print(own_peak_rss() // 2**20)
"""
# ... and a bench of it against itself, base side (smoke and logits) computed first, nothing cached.
BENCH_BOTH = """
import sys
from quantkit.core.memory import own_peak_rss
from quantkit.benchmark.bench import BenchOptions, bench
from quantkit.benchmark.quality import QualityOptions
from quantkit.benchmark.smoke import SmokeOptions
result = bench(sys.argv[1], base=sys.argv[1], options=BenchOptions(
    prompt_tokens=8, gen_tokens=2, repetitions=1, warmup=0, threads=1, bandwidth=False,
    smoke_options=SmokeOptions(max_tokens=4), eval_tokens=64, quality_options=QualityOptions(ctx=64)))
assert result.quality["base_cached"] and result.smoke["against_base"], result
print(own_peak_rss() // 2**20, result.n_params)
"""


@pytest.mark.slow
def test_bench_peak_rss_is_one_model_not_two(smollm2, tmp_path):
    """Base then artifact, each freed before the next loads: the bench's peak is about one model's
    (SmolLM2 in fp32, ~540 MB), not two (measured: +~110 MB over one model; +~430 MB when the freed
    base's heap was not trimmed)."""
    import subprocess
    import sys

    def peak(code: str) -> list[int]:
        env = {**os.environ, "QUANTKIT_HOME": str(tmp_path / "home")}
        proc = subprocess.run([sys.executable, "-c", code, str(smollm2)], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return [int(x) for x in proc.stdout.strip().splitlines()[-1].split()]

    (one,) = peak(ONE_MODEL)
    both, n_params = peak(BENCH_BOTH)
    model_mb = n_params * 4 / 2**20
    assert both < one + 0.5 * model_mb, (one, both, model_mb)
