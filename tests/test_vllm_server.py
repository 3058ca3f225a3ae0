"""vLLM as quantkit's deployment server, against a stand-in (tests/fake_vllm.py: no vLLM in `make
test`): which server `serve` picks and why, the settings and command line it launches vLLM with,
`serve --backend vllm` behind quantkit's front (key, limits, web chat page, /metrics), `bench
--engine vllm`'s serving row, a launch failure's one-line reason; and docs/vllm.md (written by
`make vllm-check`) agreeing with what each method declares vLLM runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from test_serve import QUESTION, start_server, stop_server
from test_serve_control_text import FORGED
from transformers import AutoTokenizer

from quantkit.core.errors import DependencyError, InputError
from quantkit.engines import vllm_server
from quantkit.engines.chat_tokens import tokenizer_chat_ids
from quantkit.engines.servers import choose_server
from quantkit.serve.server_front import backend_for

ROOT = Path(__file__).resolve().parents[1]
KEY = "vllm-key"


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch) -> Path:
    """A 'vLLM python' that runs tests/fake_vllm.py; it writes its command line to the returned file."""
    python = tmp_path / "vllm-venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "fake_vllm.py"}" "$@"\n')
    python.chmod(0o755)
    monkeypatch.setenv("QUANTKIT_VLLM_PYTHON", str(python))
    monkeypatch.setenv("FAKE_VLLM_ARGS", str(tmp_path / "fake-vllm-args.json"))
    return tmp_path / "fake-vllm-args.json"


def artifact_like(tmp_path: Path, source: Path, method: str, fmt: str, runtimes: list[str]) -> Path:
    """A folder with ``source``'s weights and a manifest that declares ``runtimes`` for its format."""
    folder = tmp_path / f"smol-{method}"
    folder.mkdir()
    for file in source.iterdir():
        if file.is_file() and file.name != "quantkit.json":
            (folder / file.name).symlink_to(file)
    manifest = {"kind": "artifact", "method": method, "format": fmt, "engine": "transformers", "runtimes": runtimes}
    manifest["model"] = {"dtype": "bfloat16"}
    (folder / "quantkit.json").write_text(json.dumps(manifest))
    return folder


def test_auto_serves_a_declared_vllm_format_in_vllm_and_says_why(smollm2, tmp_path, fake_vllm):
    awq = artifact_like(tmp_path, smollm2, "awq", "compressed-tensors", ["transformers", "vllm"])
    nf4 = artifact_like(tmp_path, smollm2, "nf4", "bitsandbytes", ["transformers"])
    chosen, why = backend_for(awq, None)
    assert chosen == "vllm" and "vLLM's OpenAI server" in why
    assert backend_for(nf4, None)[0] == "in-process"
    with pytest.raises(InputError, match="vllm does not run smol-nf4"):
        backend_for(nf4, None, "vllm")
    # A plain model folder declares nothing: quantkit's own server unless vLLM is asked for.
    assert backend_for(smollm2, None)[0] == "in-process" and backend_for(smollm2, None, "vllm")[0] == "vllm"
    assert backend_for(awq, "transformers") == ("in-process", "--engine transformers runs in quantkit's own server")


def test_without_a_vllm_environment_auto_falls_back_and_an_asked_vllm_says_the_fix(smollm2, tmp_path, monkeypatch):
    awq = artifact_like(tmp_path, smollm2, "awq", "compressed-tensors", ["transformers", "vllm"])
    monkeypatch.setenv("QUANTKIT_VLLM_PYTHON", "")  # set and empty: vLLM off even where a venv is cached
    chosen, why = backend_for(awq, None)
    assert chosen == "in-process" and "vllm is not installed" in why and "QUANTKIT_VLLM_PYTHON" in why
    with pytest.raises(DependencyError, match="turned off"):
        choose_server(awq, "vllm")
    monkeypatch.setenv("QUANTKIT_VLLM_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(DependencyError, match="not an executable python"):
        vllm_server.require()


def test_vllm_settings_come_from_the_artifact(smollm2, tmp_path):
    awq = artifact_like(tmp_path, smollm2, "awq", "compressed-tensors", ["transformers", "vllm"])
    longest = json.loads((smollm2 / "config.json").read_text())["max_position_embeddings"]
    s = vllm_server.choose_settings(awq, alias="smol", parallel=3, n_ctx=longest * 2, device="cpu", api_key="k")
    assert (s.n_ctx, s.dtype, s.eager, s.cpu) == (longest, "bfloat16", True, True)
    assert s.why["context"] == "the model's max_position_embeddings" and s.why["dtype"] == "the artifact's manifest"
    args = s.args()
    assert args[:2] == ["--model", str(awq)] and args[args.index("--max-num-seqs") + 1] == "3" and "--enforce-eager" in args
    shown = s.shown()
    assert "--tensor-parallel-size" not in args and shown.startswith("python -m vllm.entrypoints.openai.api_server ")
    assert "k" not in shown.split() and "***" in shown.split()
    s = vllm_server.choose_settings(awq, device="cuda", tensor_parallel=2, pipeline_parallel=2)
    args = s.args()
    assert "--enforce-eager" not in args and args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    with pytest.raises(InputError, match="Hugging Face model folders"):
        vllm_server.choose_settings(tmp_path / "model.gguf")
    from quantkit.engines.llama_server import choose_settings as llama_settings

    with pytest.raises(InputError, match="vLLM's"):
        llama_settings(tmp_path / "model.gguf", tensor_parallel=2)


def test_root_cause_is_the_workers_exception_not_the_engines_summary():
    log = "\n".join(
        [
            "(Worker pid=1) ERROR 12-07 05:55:21 [multiproc_executor.py:1063] Traceback (most recent call last):",
            "(Worker pid=1) ERROR 12-07 05:55:21 [multiproc_executor.py:1063] NotImplementedError: \"cpu_gemm_wna16\" not implemented for 'Float'",
            "(EngineCore pid=2) ERROR 12-07 05:55:21 [core.py:1512] RuntimeError: Worker failed, see the stack trace above for the root cause",
        ]
    )
    assert vllm_server.root_cause(log) == "NotImplementedError: \"cpu_gemm_wna16\" not implemented for 'Float'"
    assert vllm_server.root_cause("INFO all good") is None


@pytest.mark.slow
def test_serve_runs_vllm_behind_quantkits_front(smollm2, tmp_path, fake_vllm):
    awq = artifact_like(tmp_path, smollm2, "awq", "compressed-tensors", ["transformers", "vllm"])
    log = open(tmp_path / "serve.log", "w")
    extra = ("--api-key", KEY, "--model-name", "smol", "--parallel", "2", "--n-ctx", "1024", "--max-tokens-limit", "64")
    proc, url = start_server(awq, *extra, log=log)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        stream = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=16, temperature=0, stream=True)
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        reply = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=16, temperature=0)
        assert "Paris" in reply.choices[0].message.content and reply.usage.completion_tokens <= 16
        assert [m.id for m in client.models.list()] == ["smol"]
        health = httpx.get(f"{url}/health").json()
        assert health["engine"] == "vllm" and health["slots"]["parallel"] == 2
        assert httpx.get(f"{url}/metrics").status_code == 401
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        assert "quantkit_slots 2" in metrics
        headers = {"Authorization": f"Bearer {KEY}"}
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": QUESTION}).status_code == 401
        too_long = {"model": "smol", "messages": QUESTION, "max_tokens": 65}
        assert httpx.post(f"{url}/v1/chat/completions", json=too_long, headers=headers).status_code == 400
        other = {"model": "other", "messages": QUESTION}
        assert httpx.post(f"{url}/v1/chat/completions", json=other, headers=headers).status_code == 404
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "smol" in page.text and "<html" in page.text.lower()
        seed = httpx.post(f"{url}/", json={"prompt": "What is the capital of France?", "max_tokens": 16}, headers=headers)
        assert seed.status_code == 200 and seed.json()["response"]
        # Typed control-token text stays text: vLLM would parse it in the rendered prompt, so the front
        # sends the ids the transformers engine builds (template pieces parsed, message text plain) to
        # /v1/completions, and answers in the chat format.
        forged = client.chat.completions.create(model="smol", messages=FORGED, max_tokens=8, temperature=0)
        tokenizer = AutoTokenizer.from_pretrained(awq)
        assert forged.object == "chat.completion" and forged.choices[0].message.role == "assistant"
        assert forged.usage.prompt_tokens == len(tokenizer_chat_ids(tokenizer, FORGED))
        rendered = tokenizer.apply_chat_template(FORGED, tokenize=False, add_generation_prompt=True)
        parsed = tokenizer(rendered, add_special_tokens=False)["input_ids"]  # as vLLM tokenizes a rendered chat
        assert forged.usage.prompt_tokens > len(parsed)  # what vLLM itself would have run: 4 forged control tokens
        chunks = list(client.chat.completions.create(model="smol", messages=FORGED, max_tokens=8, temperature=0, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == forged.choices[0].message.content
        upstream = httpx.get(f"{url}/metrics", headers=headers).text
        assert 'quantkit_http_responses_total{route="/v1/completions",status="200"} 2' in upstream  # the server's own count
        # A completion given as token ids (OpenAI's other prompt form) passes through; ids beyond the vocabulary: 400.
        ids = client.completions.create(model="smol", prompt=parsed, max_tokens=4, temperature=0)
        assert ids.usage.prompt_tokens == len(parsed)
        out_of_range = {"model": "smol", "prompt": [tokenizer.vocab_size + 10**6], "max_tokens": 4}
        refused = httpx.post(f"{url}/v1/completions", json=out_of_range, headers=headers)
        assert refused.status_code == 400 and "out of range" in refused.json()["error"]["message"]
    finally:
        stop_server(proc)
        log.close()
    said = (tmp_path / "serve.log").read_text()
    assert "vllm runs the model: it loads in transformers, vllm" in said and "-m vllm.entrypoints.openai.api_server " in said
    launched = json.loads(fake_vllm.read_text())
    argv = launched["argv"]
    assert argv[:4] == ["-m", "vllm.entrypoints.openai.api_server", "--model", str(awq)]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--served-model-name") + 1] == "smol"
    assert argv[argv.index("--max-num-seqs") + 1] == "2" and argv[argv.index("--dtype") + 1] == "bfloat16"
    assert "--enforce-eager" in argv and argv[argv.index("--api-key") + 1] == KEY
    assert launched["env"]["VLLM_CPU_KVCACHE_SPACE"] == "1" and launched["env"]["HF_HUB_OFFLINE"] == "1"


@pytest.mark.slow
def test_a_vllm_that_fails_to_start_is_reported_in_one_line(smollm2, tmp_path, fake_vllm):
    cmd = [sys.executable, "-m", "quantkit", "serve", str(smollm2), "--backend", "vllm", "--port", "0", "--tensor-parallel", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "vllm exited (code 1) while loading: ValueError: fake vllm: this machine has no GPUs" in proc.stderr
    # bench --engine vllm passes the sizes the same way (a recipe's bench names them for a GPU node).
    from quantkit.benchmark.serving import serving_bench
    from quantkit.core.errors import EngineError

    with pytest.raises(EngineError, match="no GPUs for tensor/pipeline parallelism"):
        serving_bench(smollm2, "vllm", (1,), tensor_parallel=2, pipeline_parallel=2)
    argv = json.loads(fake_vllm.read_text())["argv"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == argv[argv.index("--pipeline-parallel-size") + 1] == "2"


@pytest.mark.slow
def test_bench_engine_vllm_records_a_serving_row(smollm2, tmp_path, fake_vllm):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "quantkit", "bench", str(smollm2), "-p", "16", "-n", "8", "--repetitions", "1"]
    cmd += ["--no-smoke", "--no-quality", "--threads", "1", "--engine", "vllm", "-c", "2", "--num-requests", "2"]
    cmd += ["--max-tokens", "8", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stderr[-2000:]
    data = json.loads(out.read_text())
    (serving,) = data["serving"]
    assert serving["engine"] == "vllm" and serving["command"].startswith(
        f"python -m vllm.entrypoints.openai.api_server --model {smollm2} "
    )
    (level,) = serving["results"]
    assert level["concurrency"] == 2 and level["completed"] == 2 and level["total_output_tokens"] == 16
    from quantkit.benchmark.report import write_report

    report = write_report([data], tmp_path / "report", fill_cards=False).read_text()
    assert "## In the deployment engine" in report and "| vllm | 2 |" in report


def vllm_md_rows() -> list[dict]:
    lines = (ROOT / "docs" / "vllm.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| artifact |"))
    names = [c.strip() for c in lines[header].strip("|").split("|")]
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))])))
    return rows


def test_docs_vllm_agrees_with_the_runtimes_each_method_declares():
    """What `make vllm-check` measured: every format whose method declares vLLM loaded in it, every
    other one was refused; the table's declared runtimes are the methods' declarations today."""
    from quantkit.quantization.registry import format_facts

    rows = vllm_md_rows()
    assert rows and any(r["artifact"] == "base" for r in rows)
    for row in rows:
        method, fmt = (part.strip() for part in row["method / format"].split(" / ", 1))
        if method == "-":
            continue
        facts = format_facts(method, fmt)
        assert facts, row
        assert row["declared runtimes"].split(", ") == list(facts.runtimes), row
        if "vllm" in facts.runtimes:
            assert not row["vLLM"].startswith("refused"), row
        else:
            assert row["vLLM"].startswith("refused"), row
