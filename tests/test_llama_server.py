"""llama.cpp's own tools in serve and bench, on the bundled SmolLM2 GGUF: `quantkit serve` runs
llama-server (same sdist) behind quantkit's front and it dies with quantkit; bench's pp/tg are
llama-bench's, within llama-bench's own ± of a direct run on the same file; `bench --engine
llama-server` records a serving row. Skipped where `make tools` has not built the tools."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest
from test_serve import QUESTION, start_server, stop_server

KEY = "ls-key"


def gguf():
    from quantkit.hub.bundled import bundled_gguf

    return bundled_gguf("bundled:smollm2-135m-instruct")


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


@pytest.mark.slow
def test_serve_on_a_gguf_runs_llama_server_behind_quantkits_front():
    proc, url = start_server(gguf(), "--api-key", KEY, "--model-name", "smol", "--parallel", "2", "--n-ctx", "1024")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        stream = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=16, temperature=0, stream=True)
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        reply = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=16, temperature=0)
        assert "Paris" in reply.choices[0].message.content and reply.usage.completion_tokens <= 16
        health = httpx.get(f"{url}/health").json()
        assert health["engine"] == "llama-server" and health["slots"]["parallel"] == 2
        assert httpx.get(f"{url}/metrics").status_code == 401
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        assert "quantkit_slots 2" in metrics and "llamacpp:" in metrics  # quantkit's lines, then llama-server's
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": QUESTION}).status_code == 401
        seed = httpx.post(
            f"{url}/",
            json={"prompt": "What is the capital of France?", "max_tokens": 16},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert seed.status_code == 200 and seed.json()["response"] and seed.json()["status"] == 200
        # llama-server listens on loopback only, and dies with quantkit even when quantkit is SIGKILLed.
        (server_pid,) = [p for p in children(proc.pid) if "llama-server" in open(f"/proc/{p}/cmdline").read()]
        assert "127.0.0.1" in open(f"/proc/{server_pid}/cmdline").read().split("\0")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 10
        while alive(server_pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not alive(server_pid)
    finally:
        stop_server(proc)


@pytest.mark.slow
def test_serve_says_which_server_runs_the_model(tmp_path):
    log = open(tmp_path / "serve.log", "w")
    proc, _ = start_server(gguf(), "--backend", "in-process", log=log)
    stop_server(proc)
    log.close()
    assert "quantkit's in-process server: asked for" in (tmp_path / "serve.log").read_text()


@pytest.mark.slow
def test_gguf_bench_tg_is_llama_benchs_within_its_own_stddev():
    from quantkit.benchmark.bench import BenchOptions, bench
    from quantkit.benchmark.llama_bench import run_llama_bench

    options = BenchOptions(prompt_tokens=32, gen_tokens=32, repetitions=3, threads=1, smoke=False, quality=False, bandwidth=False)
    result = bench(gguf(), options=options)
    record = result.speed_tool
    assert record and record["tool"] == "llama-bench" and "-o json" in record["command"]
    assert result.decode.mean == record["tg"]["mean"] and result.decode.std == record["tg"]["std"]
    assert result.prefill.mean == record["pp"]["mean"] and len(record["tg"]["samples"]) == 3
    assert " -t 1 " in record["command"] and " -fa 0 " in record["command"]  # the in-process engine's settings
    direct = run_llama_bench(record["command"].split())
    # Two runs of one tool on one file: the same number within their spread (3 sigma, or 10% on a busy machine).
    spread = max(3 * (record["tg"]["std"] + direct["tg"]["std"]), 0.10 * direct["tg"]["mean"])
    assert abs(record["tg"]["mean"] - direct["tg"]["mean"]) <= spread, (record["tg"], direct["tg"])


@pytest.mark.slow
def test_bench_engine_llama_server_records_a_serving_row(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "quantkit", "bench", str(gguf()), "-p", "16", "-n", "8", "--repetitions", "1"]
    cmd += ["--no-smoke", "--no-quality", "--threads", "1", "--engine", "llama-server", "-c", "2", "--num-requests", "2"]
    cmd += ["--max-tokens", "8", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stderr[-2000:]
    data = json.loads(out.read_text())
    (serving,) = data["serving"]
    assert serving["engine"] == "llama-server" and serving["command"].startswith("llama-server -m ")
    (level,) = serving["results"]
    assert level["concurrency"] == 2 and level["completed"] == 2 and level["total_output_tokens"] == 16
    from quantkit.benchmark.report import write_report

    report = write_report([data], tmp_path / "report", fill_cards=False).read_text()
    assert "## In the deployment engine" in report and "| llama-server | 2 |" in report
