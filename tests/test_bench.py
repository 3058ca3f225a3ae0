"""bench() end to end on SmolLM2: the bundled GGUF (llama.cpp) against its HF base, and the HF
folder itself (transformers); every documented key present and sane; JSON from the CLI."""

import json

import pytest

from quantkit.bench import BenchOptions, bench
from quantkit.bundled import bundled_gguf
from quantkit.quality import QualityOptions
from quantkit.smoke import SmokeOptions

DOCUMENTED = ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_ms", "peak_rss_mb", "size_bytes",
              "bits_per_weight", "passed", "environment", "decode_latency_ms", "load_s", "bandwidth")


def options(**kw) -> BenchOptions:
    settings = dict(prompt_tokens=64, gen_tokens=16, repetitions=2, threads=1,
                    smoke_options=SmokeOptions(max_tokens=160), quality_options=QualityOptions(max_tokens=256, ctx=256))
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
    data = bench(gguf, base=smollm2, options=options(), on_step=steps.append).to_dict()
    assert steps == ["load", "speed", "smoke", "quality"]
    assert_sane(data)
    assert data["engine"] == "llama.cpp" and data["size_bytes"] == gguf.stat().st_size
    assert 5 < data["bits_per_weight"] < 7 and data["bits"] == 4  # Q4_1 plus its f32/q8 tensors
    assert data["smoke"]["passed"] and data["smoke"]["transcript"]
    assert data["quality"]["tokenizer_parity"] and data["quality"]["kld_mean"] < 0.02
    assert data["quality"]["top1_agreement"] > 0.9 and data["quality"]["ppl_ratio"] < 1.05
    assert data["passed"] is True and data["failures"] == []
    json.dumps(data)  # serializable as is


@pytest.mark.slow
def test_bench_hf_folder_cli_json(smollm2, tmp_path, capsys):
    from quantkit.cli import main

    out = tmp_path / "hf.json"
    main(["bench", str(smollm2), "--base", str(smollm2), "--no-smoke", "-p", "64", "-n", "16",
          "--repetitions", "2", "--threads", "1", "--eval-tokens", "256", "--json", str(out)])
    data = json.loads(out.read_text())
    assert_sane(data)
    assert data["engine"] == "transformers" and data["bits"] == 16 and data["smoke"] is None
    assert data["quality"]["kld_mean"] < 1e-6 and data["quality"]["top1_agreement"] == 1.0  # itself
    assert data["passed"] is True
    captured = capsys.readouterr()
    assert captured.out.strip().endswith(str(out)) and "tg16" in captured.err


def test_bench_without_a_base_skips_quality():
    result = bench(bundled_gguf("bundled:smollm2-135m-instruct"), options=options(smoke=False, bandwidth=False, repetitions=1, warmup=0))
    assert result.quality is None and result.passed and "no base" in result.notes[0]


def test_bad_options_are_refused(smollm2):
    from quantkit.errors import InputError

    with pytest.raises(InputError):
        bench(smollm2, options=options(gen_tokens=0))
    with pytest.raises(InputError):
        bench(smollm2.parent / "does-not-exist")
