"""`quantkit bench --url`'s load test (quantkit.benchmark.loadtest) against a real `quantkit serve` of the
bundled SmolLM2 GGUF (llama.cpp loads in about a second)."""

import json

import pytest
from test_serve import start_server, stop_server

from quantkit.benchmark.loadtest import api_base, load_test, summary_ms
from quantkit.core.errors import InputError, QuantkitError

KEY = "load-key"


@pytest.fixture(scope="module")
def gguf_server():
    from quantkit.hub.bundled import bundled_gguf

    proc, url = start_server(
        bundled_gguf("bundled:smollm2-135m-instruct"), "--parallel", "2", "--queue-size", "1", "--api-key", KEY
    )
    yield url
    stop_server(proc)


def test_summary_and_url_forms():
    assert summary_ms([0.1, 0.2, 0.3]) == {"mean": 200.0, "median": 200.0, "p99": 298.0}  # numpy linear interpolation, as vLLM
    assert summary_ms([])["mean"] is None
    assert api_base("http://127.0.0.1:8000/") == api_base("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    with pytest.raises(InputError):
        api_base("127.0.0.1:8000")


@pytest.mark.slow
def test_load_test_levels_measure_serving_metrics(gguf_server):
    results = load_test(gguf_server, concurrency=[1, 2], num_requests=4, max_tokens=8, api_key=KEY)
    assert [r.concurrency for r in results] == [1, 2]
    for result in results:
        assert result.model == "SmolLM2-135M-Instruct.Q4_1"  # found through /v1/models
        assert result.completed == 4 and result.errors == 0, result.error_messages
        assert 4 <= result.total_output_tokens <= 32 and result.total_input_tokens > 4 * 10
        assert 0 < result.ttft_ms["mean"] <= result.e2el_ms["mean"]
        assert result.ttft_ms["median"] <= result.ttft_ms["p99"]
        assert result.tpot_ms["mean"] > 0 and result.itl_ms["mean"] > 0
        assert result.request_throughput > 0 and result.output_throughput > 0
        assert result.output_throughput == pytest.approx(result.total_output_tokens / result.duration_s, rel=0.01)
        json.dumps(result.to_dict())
    # Two slots: at concurrency 2 both requests decode together, each step serving both.
    assert results[1].total_output_tokens == results[0].total_output_tokens  # greedy: the same replies


@pytest.mark.slow
def test_load_test_ignore_eos_runs_every_request_to_max_tokens(gguf_server):
    """As vLLM's `bench serve --ignore-eos`: short answers go on to max_tokens, so every request
    does equal work (the batched yardstick's terms)."""
    plain, full = (
        load_test(
            gguf_server,
            concurrency=[2],
            num_requests=2,
            max_tokens=40,
            prompts=["Hi!", "What is 2+2?"],
            api_key=KEY,
            ignore_eos=flag,
        )[0]
        for flag in (False, True)
    )
    assert plain.completed == full.completed == 2 and not plain.ignore_eos and full.ignore_eos
    assert plain.total_output_tokens < 80 and full.total_output_tokens == 80


@pytest.mark.slow
def test_load_test_counts_errors_and_rate(gguf_server):
    with pytest.raises(QuantkitError, match="401"):  # no model given: listing the models already fails
        load_test(gguf_server, num_requests=2, api_key="wrong")
    refused = load_test(gguf_server, model="any", concurrency=[1], num_requests=2, max_tokens=4, api_key="wrong")[0]
    assert refused.completed == 0 and refused.errors == 2 and "HTTP 401" in refused.error_messages[0]
    # two running + a queue of 1: a burst of 6 gets some 429s, reported as errors, not a crash
    burst = load_test(gguf_server, concurrency=[6], num_requests=6, max_tokens=24, api_key=KEY)[0]
    assert burst.errors >= 1 and burst.completed >= 3 and burst.completed + burst.errors == 6
    assert any("HTTP 429" in message for message in burst.error_messages)
    paced = load_test(gguf_server, request_rate=[5.0], num_requests=3, max_tokens=4, api_key=KEY)[0]
    assert paced.request_rate == 5.0 and paced.concurrency is None and paced.completed + paced.errors == 3


@pytest.mark.slow
def test_bench_url_cli_writes_json(gguf_server, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "serve.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "quantkit",
            "bench",
            "--url",
            gguf_server,
            "-c",
            "1",
            "-c",
            "2",
            "--num-requests",
            "2",
            "--max-tokens",
            "4",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "QUANTKIT_API_KEY": KEY},
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert [r["concurrency"] for r in data["results"]] == [1, 2]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the sweep's plot beside the JSON
    assert all(r["completed"] == 2 and r["ttft_ms"]["median"] > 0 for r in data["results"])
    assert "TTFT" in done.stderr  # the table
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "quantkit",
            "bench",
            "--url",
            gguf_server,
            "--model",
            "x",
            "--num-requests",
            "1",
            "--api-key",
            "wrong",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1 and "every request failed" in failed.stderr and "401" in failed.stderr


def sweep_result(concurrency, tok_s, ttft):
    stats = {"mean": ttft, "median": ttft, "p99": ttft * 1.5}
    return {
        "concurrency": concurrency,
        "request_rate": None,
        "completed": 16,
        "errors": 0,
        "request_throughput": 1.25,
        "output_throughput": tok_s,
        "ttft_ms": stats,
        "tpot_ms": stats,
        "itl_ms": stats,
        "e2el_ms": {k: v * 40 for k, v in stats.items()},
        "error_messages": [],
    }


def test_sweep_table_fits_80_columns_and_compares_servers(tmp_path):
    from rich.console import Console

    from quantkit.benchmark.loadtest import plot_sweep
    from quantkit.cli.bench_url import render

    levels = (1, 2, 4, 8)
    data = {
        "servers": [
            {"url": "http://127.0.0.1:8000", "results": [sweep_result(c, 85.5 * c**0.5, 128.0 * c) for c in levels]},
            {"url": "http://127.0.0.1:8001", "results": [sweep_result(c, 90.0 * c**0.6, 1782.4 * c) for c in levels]},
        ]
    }
    console = Console(width=200, record=True, file=open(tmp_path / "table.txt", "w"))
    render(data, console=console)
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, "\n".join(lines)
    assert sum(1 for line in lines if line.strip().startswith(("A ", "B "))) == 8  # a row per server and level
    assert "B/A tok/s  c1: 1.05x" in "\n".join(lines)  # 90.0 / 85.5
    png = tmp_path / "sweep.png"
    assert plot_sweep(data, png) and png.read_bytes()[:4] == b"\x89PNG"
    assert not plot_sweep({"servers": [{"url": "x", "results": [sweep_result(1, 80.0, 100.0)]}]}, tmp_path / "one.png")
