"""`quantkit bench --url`'s load test (quantkit.loadtest) against a real `quantkit serve` of the
bundled SmolLM2 GGUF (llama.cpp loads in about a second)."""

import json

import pytest
from test_serve import start_server, stop_server

from quantkit.errors import InputError, QuantkitError
from quantkit.loadtest import api_base, load_test, summary_ms

KEY = "load-key"


@pytest.fixture(scope="module")
def gguf_server():
    from quantkit.bundled import bundled_gguf

    proc, url = start_server(bundled_gguf("bundled:smollm2-135m-instruct"), "--queue-size", "1", "--api-key", KEY)
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
    # At concurrency 2 a request waits for the one ahead of it, so its time to first token grows.
    assert results[1].ttft_ms["mean"] > results[0].ttft_ms["mean"]


@pytest.mark.slow
def test_load_test_counts_errors_and_rate(gguf_server):
    with pytest.raises(QuantkitError, match="401"):  # no model given: listing the models already fails
        load_test(gguf_server, num_requests=2, api_key="wrong")
    refused = load_test(gguf_server, model="any", concurrency=[1], num_requests=2, max_tokens=4, api_key="wrong")[0]
    assert refused.completed == 0 and refused.errors == 2 and "HTTP 401" in refused.error_messages[0]
    # queue of 1 + one running: a burst of 6 gets some 429s, reported as errors, not a crash
    burst = load_test(gguf_server, concurrency=[6], num_requests=6, max_tokens=24, api_key=KEY)[0]
    assert burst.errors >= 1 and burst.completed >= 2 and burst.completed + burst.errors == 6
    assert any("HTTP 429" in message for message in burst.error_messages)
    paced = load_test(gguf_server, request_rate=[5.0], num_requests=3, max_tokens=4, api_key=KEY)[0]
    assert paced.request_rate == 5.0 and paced.concurrency is None and paced.completed + paced.errors == 3


@pytest.mark.slow
def test_bench_url_cli_writes_json(gguf_server, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "serve.json"
    done = subprocess.run([sys.executable, "-m", "quantkit", "bench", "--url", gguf_server, "-c", "1", "-c", "2",
                           "--num-requests", "2", "--max-tokens", "4", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "QUANTKIT_API_KEY": KEY})
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert [r["concurrency"] for r in data["results"]] == [1, 2]
    assert all(r["completed"] == 2 and r["ttft_ms"]["median"] > 0 for r in data["results"])
    assert "TTFT" in done.stderr  # the table
    failed = subprocess.run([sys.executable, "-m", "quantkit", "bench", "--url", gguf_server, "--model", "x",
                             "--num-requests", "1", "--api-key", "wrong"], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "every request failed" in failed.stderr and "401" in failed.stderr
