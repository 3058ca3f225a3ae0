"""`quantkit serve` as a real process on 127.0.0.1 (a free port chosen by the OS) over SmolLM2:
the official openai client for the happy paths, raw httpx for bad requests, queue and disconnects."""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

KEY = "test-key"
MODEL = "smollm2-135m-instruct"
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def start_server(path, *extra, log=None, timeout=180):
    """Start `quantkit serve` on a free port; returns (process, base url)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("QUANTKIT_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantkit", "serve", str(path), "--port", "0", "--threads", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=log or subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines or "serving http://127.0.0.1:" not in lines[0]:
        proc.kill()
        raise RuntimeError(f"server did not start: {lines}")
    return proc, lines[0].split()[1]


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_idle(url, timeout=60):
    """Wait until the engine has nothing running or waiting (earlier tests leave no work behind)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        queue = httpx.get(f"{url}/health", timeout=10).json()["queue"]
        if queue["waiting"] == 0 and queue["running"] == 0:
            return queue
        time.sleep(0.2)
    raise AssertionError(f"server still busy after {timeout}s: {queue}")


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    log = open(tmp_path_factory.mktemp("serve") / "server.log", "w")
    proc, url = start_server(
        smollm2,
        "--api-key",
        KEY,
        "--parallel",
        "2",
        "--queue-size",
        "2",
        "--max-tokens-limit",
        "256",
        "--max-body-bytes",
        "65536",
        "--n-ctx",
        "1024",
        log=log,
    )
    yield url
    stop_server(proc)
    log.close()
    assert proc.returncode is not None


@pytest.fixture
def client(server):
    wait_idle(server)
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def auth():
    return {"Authorization": f"Bearer {KEY}"}


@pytest.mark.slow
def test_openai_client_chat_stream_and_not(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    text = reply.choices[0].message.content
    assert "Paris" in text
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same words, streamed piece by piece
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    cut = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0, stop=["Paris"])
    assert cut.choices[0].finish_reason == "stop" and "Paris" not in cut.choices[0].message.content
    assert cut.choices[0].message.content == text.split("Paris")[0]
    short = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2


@pytest.mark.slow
def test_openai_client_completions_and_seed(client):
    done = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert "Paris" in done.choices[0].text and done.usage.completion_tokens <= 6
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == done.choices[0].text
    sampled = [
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=1.0, top_p=0.95, seed=seed)
        .choices[0]
        .message.content
        for seed in (7, 7)
    ]
    assert sampled[0] == sampled[1]  # the same seed gives the same sample


@pytest.mark.slow
def test_bad_requests_get_openai_errors(server, client):
    def post(body=None, content=None, headers=None, path="/v1/chat/completions"):
        return httpx.post(f"{server}{path}", json=body, content=content, timeout=60, headers={**auth(), **(headers or {})})

    cases = [
        (post(content=b'{"messages": [', headers={"Content-Type": "application/json"}), 400, "invalid_json"),
        (post(content=b"[1, 2]"), 400, "invalid_type"),
        (post({"messages": "hello"}), 400, "invalid_type"),
        (post({"messages": [{"role": "wizard", "content": "hi"}]}), 400, None),
        (post({"messages": QUESTION, "temperature": "hot"}), 400, "invalid_type"),
        (post({"messages": QUESTION, "max_tokens": 10**9}), 400, "invalid_value"),
        (post({"messages": QUESTION, "top_p": 1.5}), 400, "invalid_value"),
        (post(content=json.dumps({"messages": QUESTION})[:-1].encode() + b', "temperature": NaN}'), 400, "invalid_json"),
        (post({"messages": QUESTION, "seed": -1, "max_tokens": 1}), 200, None),  # -1: a random seed
        (post({"messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}), 400, None),
        (post({"messages": QUESTION, "model": "gpt-4o"}), 404, "model_not_found"),
        (post({"prompt": 42}, path="/v1/completions"), 400, "invalid_type"),
        (post(content=b"x" * 70000), 413, "request_too_large"),
        (post({"messages": [{"role": "user", "content": "word " * 8000}]}), 400, "context_length_exceeded"),
        (post(content=b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}'), 400, "invalid_value"),
        (httpx.post(f"{server}/v1/chat/completions", json={"messages": QUESTION}), 401, "invalid_api_key"),
        (post({"messages": QUESTION}, headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key"),
        (httpx.get(f"{server}/v1/nothing-here", headers=auth()), 404, None),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        if status == 200:
            continue
        error = response.json()["error"]
        assert error["message"] and error["type"]
        if code:
            assert error["code"] == code, error
    surrogate = post(content=b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}').json()["error"]
    assert surrogate["param"] == "messages[0].content" and "surrogate" in surrogate["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=2)
    # the server is still fine
    assert client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4).choices[0].message.content


def generated_total(server):
    text = httpx.get(f"{server}/metrics", headers=auth()).text
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("quantkit_generation_tokens_total")))


@pytest.mark.slow
def test_client_disconnect_mid_stream_frees_the_engine(server, client):
    # Greedy, this prompt runs the full 256 tokens (checked); a client that leaves must cut it short.
    before = generated_total(server)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 256,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, headers=auth(), timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        got = [line for line, _ in zip(lines, range(8)) if line.startswith("data:")]
        assert len(got) >= 3
    wait_idle(server, timeout=30)
    assert generated_total(server) - before < 100  # the worker stopped long before 256 tokens
    # the same for a non-streamed request whose client gives up (here: a read timeout)
    before = generated_total(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server}/v1/chat/completions", json={**body, "stream": False}, headers=auth(), timeout=httpx.Timeout(30, read=1.5)
        )
    wait_idle(server, timeout=30)
    assert generated_total(server) - before < 100
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    assert "Paris" in reply.choices[0].message.content


@pytest.mark.slow
def test_concurrent_clients_queue_and_429(server, client):
    def ask(i):
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Count to {i + 3}."}], max_tokens=8, temperature=0
        )

    with ThreadPoolExecutor(4) as pool:  # two running + two waiting: the queue holds them all
        replies = list(pool.map(ask, range(4)))
    assert all(r.choices[0].message.content for r in replies)

    wait_idle(server)
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 24}

    def raw(_):
        return httpx.post(f"{server}/v1/chat/completions", json=body, headers=auth(), timeout=120)

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(r.status_code for r in pool.map(raw, range(6)))
    assert statuses.count(429) >= 1 and statuses.count(200) >= 3, statuses
    metrics = httpx.get(f"{server}/metrics", headers=auth()).text
    assert "quantkit_queue_capacity 2" in metrics and "quantkit_queue_waiting " in metrics
    assert 'route="/v1/chat/completions",status="429"' in metrics
    rejected = int(next(line.split()[1] for line in metrics.splitlines() if line.startswith("quantkit_requests_rejected_total")))
    assert rejected == statuses.count(429)


@pytest.mark.slow
def test_seed_endpoint_health_and_page(server, client):
    answer = httpx.post(
        server + "/", json={"prompt": "What is the capital of France?", "max_tokens": 16}, headers=auth(), timeout=60
    ).json()
    assert answer["status"] == 200 and isinstance(answer["time"], float) and answer["response"]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL and health["queue"]["capacity"] == 2
    assert health["slots"] == {"parallel": 2, "n_ctx_per_slot": 1024, "n_ctx_total": 2048}
    page = httpx.get(server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<!doctype html>" in page.text.lower() and MODEL in page.text and "/v1/chat/completions" in page.text
    assert httpx.get(f"{server}/metrics").status_code == 401  # metrics need the key when one is set


@pytest.mark.slow
def test_gguf_server_streams_with_openai_client(tmp_path):
    from quantkit.hub.bundled import bundled_gguf

    # quantkit's in-process llama.cpp server (the fallback where llama-server is not built); llama-server: test_llama_server.py
    proc, url = start_server(
        bundled_gguf("bundled:smollm2-135m-instruct"), "--model-name", "smol-gguf", "--backend", "in-process"
    )
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        stream = client.chat.completions.create(model="smol-gguf", messages=QUESTION, max_tokens=16, temperature=0, stream=True)
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert json.loads(httpx.get(f"{url}/health").text)["engine"] == "llama.cpp"
    finally:
        stop_server(proc)


@pytest.mark.slow
def test_engine_queue_is_fair_between_clients():
    """A client with many waiting requests does not starve the others (real llama.cpp engine)."""
    import asyncio

    from quantkit.engines import EngineOptions, load_engine
    from quantkit.hub.bundled import bundled_gguf
    from quantkit.serve.worker import EngineWorker, Job

    engine = load_engine(bundled_gguf("bundled:smollm2-135m-instruct"), EngineOptions(threads=1, n_ctx=512))
    worker = EngineWorker(engine, n_ctx=512, max_tokens_limit=16, queue_size=8)
    order = []

    async def run(name, client):
        events = worker.submit(Job(prompt="Once upon a time", max_tokens=16, temperature=0, client=client))
        while True:
            event = await events.get()
            if event[0] == "start":
                order.append(name)
            if event[0] in ("end", "error"):
                return event[0]

    async def main():
        first = asyncio.create_task(run("a1", "A"))
        while not order:  # a1 is generating: everything below waits in the queue
            await asyncio.sleep(0.005)
        rest = [run(name, client) for name, client in [("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C"), ("b2", "B")]]
        return await asyncio.gather(first, *rest)

    try:
        assert asyncio.run(main()) == ["end"] * 6
    finally:
        worker.stop()
        engine.close()
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]  # FIFO would be a1 a2 a3 b1 c1 b2


@pytest.mark.slow
def test_continuous_batching_joins_agrees_and_frees():
    """llama.cpp engine, 4 slots: requests that arrive while one is generating join it (they start
    before it ends and run together), greedy replies agree with a lone request's, a cancelled one
    ends at once, and every slot's KV cells are free afterwards."""
    import asyncio

    import llama_cpp

    from quantkit.engines import EngineOptions, load_engine
    from quantkit.hub.bundled import bundled_gguf
    from quantkit.serve.worker import EngineWorker, Job

    engine = load_engine(bundled_gguf("bundled:smollm2-135m-instruct"), EngineOptions(threads=1, n_ctx=512))
    questions = [
        "Write a poem about the sea.",
        "What is the capital of France?",
        "List three uses of a paperclip.",
        "What is 17 times 23?",
    ]
    alone = [[t.id for t in engine.stream(engine.chat_prompt([{"role": "user", "content": q}]), 24)] for q in questions]
    worker = EngineWorker(engine, n_ctx=512, max_tokens_limit=64, queue_size=4, parallel=4)
    log, most_running = [], [0]

    async def run(i, max_tokens=24, cancel_after=None):
        job = Job(messages=[{"role": "user", "content": questions[i % 4]}], max_tokens=max_tokens, temperature=0, client=str(i))
        events, ids = worker.submit(job), []
        while True:
            event = await events.get()
            log.append((i, event[0]))
            most_running[0] = max(most_running[0], worker.running)
            if event[0] == "token":
                ids.append(event[1].id)
                if cancel_after and len(ids) == cancel_after:
                    job.cancel.set()
            if event[0] in ("end", "error"):
                return ids, event

    async def main():
        first = asyncio.create_task(run(0))
        while sum(1 for who, kind in log if who == 0 and kind == "token") < 3:
            await asyncio.sleep(0.005)
        rest = await asyncio.gather(*(run(i) for i in (1, 2, 3)), run(4, max_tokens=64, cancel_after=2))
        return [await first, *rest]

    try:
        results = asyncio.run(main())
        slots_after = [llama_cpp.llama_memory_seq_pos_max(worker.batch.ctx.memory, s) for s in range(4)]
        health = (worker.parallel, worker.n_ctx)
    finally:
        worker.stop()
        engine.close()
    assert health == (4, 512)
    assert [event[0] for _, event in results] == ["end"] * 5
    joined = [i for i in (1, 2, 3) if log.index((i, "start")) < log.index((0, "end"))]
    assert joined == [1, 2, 3] and most_running[0] >= 3  # they ran beside the first, not after it
    replies = [ids for ids, _ in results[:4]]
    assert replies == alone  # under load, every reply is the lone request's, token for token
    cancelled_ids, cancelled_end = results[4]
    assert len(cancelled_ids) <= 3 and cancelled_end[2] == "stop"
    assert slots_after == [-1] * 4  # no KV cells left behind
    assert worker.counters["completion_tokens"] == sum(len(ids) for ids, _ in results)
