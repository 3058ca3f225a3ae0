"""Load-test any OpenAI-compatible server (quantkit serve, vLLM, llama-server, Ollama) with
streamed chat completions, measuring as vLLM's ``bench serve`` does: TTFT, TPOT =
(E2EL - TTFT) / (output tokens - 1), ITL (gaps between streamed chunks) and E2EL, each with
mean/median/p99, plus request and output-token throughput and errors."""

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field

from quantkit.core.errors import InputError, QuantkitError

# A fixed prompt set, so runs against different servers or artifacts compare like for like.
PROMPTS = (
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a short poem about the sea.",
    "List three uses of a paperclip.",
    "What is 17 times 23? Show your steps.",
    "Give me a tip for learning a new language.",
    "Describe a cat to someone who has never seen one.",
    "Summarize the plot of Romeo and Juliet in one paragraph.",
)


@dataclass
class RequestTiming:
    ok: bool
    output_tokens: int = 0
    prompt_tokens: int = 0
    ttft: float = 0.0
    e2el: float = 0.0
    itl: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class LoadTestResult:
    url: str
    model: str
    concurrency: int | None  # most requests in flight (None: unbounded)
    request_rate: float | None  # Poisson arrivals per second (None: all at once)
    num_requests: int
    max_tokens: int
    completed: int
    errors: int
    duration_s: float
    request_throughput: float  # completed requests / s
    output_throughput: float  # generated tokens / s
    total_input_tokens: int
    total_output_tokens: int
    ttft_ms: dict  # {"mean", "median", "p99"}
    tpot_ms: dict
    itl_ms: dict
    e2el_ms: dict
    error_messages: list[str] = field(default_factory=list)  # the first few distinct ones
    ignore_eos: bool = False  # every request ran to max_tokens

    def to_dict(self) -> dict:
        return asdict(self)


def summary_ms(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"mean": None, "median": None, "p99": None}
    data = np.asarray(values) * 1000
    return {
        "mean": round(float(data.mean()), 3),
        "median": round(float(np.median(data)), 3),
        "p99": round(float(np.percentile(data, 99)), 3),
    }


async def _one(client, url: str, body: dict, headers: dict) -> RequestTiming:
    start = time.perf_counter()
    timing = RequestTiming(ok=False)
    last = None
    chunks = 0
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:200]
                timing.error = f"HTTP {response.status_code}: {text}"
                return timing
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    timing.error = str(chunk["error"].get("message", chunk["error"]))[:200]
                    return timing
                if chunk.get("usage"):
                    timing.output_tokens = chunk["usage"].get("completion_tokens") or 0
                    timing.prompt_tokens = chunk["usage"].get("prompt_tokens") or 0
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    if last is None:
                        timing.ttft = now - start
                    else:
                        timing.itl.append(now - last)
                    last = now
                    chunks += 1
    except Exception as exc:  # a failed request is a measured error, not a crash
        timing.error = f"{type(exc).__name__}: {exc}"[:200]
        return timing
    timing.e2el = time.perf_counter() - start
    timing.output_tokens = timing.output_tokens or chunks  # servers without usage: one chunk ~ one token
    timing.ok = chunks > 0
    if not timing.ok:
        timing.error = "no content streamed"
    return timing


async def _level(
    base: str,
    model: str,
    concurrency: int | None,
    rate: float | None,
    num_requests: int,
    max_tokens: int,
    prompts,
    headers: dict,
    timeout: float,
    seed: int,
    ignore_eos: bool = False,
) -> LoadTestResult:
    import httpx

    url = f"{base}/chat/completions"
    limit = asyncio.Semaphore(concurrency or num_requests)
    rng = random.Random(seed)

    async def limited(client, i):
        async with limit:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            if ignore_eos:  # vLLM's and llama-server's extension; plain OpenAI rejects unknown fields
                body["ignore_eos"] = True
            return await _one(client, url, body, headers)

    limits = httpx.Limits(max_connections=(concurrency or num_requests) + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(num_requests):
            tasks.append(asyncio.create_task(limited(client, i)))
            if rate and i < num_requests - 1:  # Poisson arrivals, as vLLM's default burstiness 1
                await asyncio.sleep(rng.expovariate(rate))
        timings = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    done = [t for t in timings if t.ok]
    out_tokens = sum(t.output_tokens for t in done)
    return LoadTestResult(
        url=base,
        model=model,
        concurrency=concurrency,
        request_rate=rate,
        num_requests=num_requests,
        max_tokens=max_tokens,
        completed=len(done),
        errors=num_requests - len(done),
        duration_s=round(duration, 3),
        request_throughput=round(len(done) / duration, 4),
        output_throughput=round(out_tokens / duration, 3),
        total_input_tokens=sum(t.prompt_tokens for t in done),
        total_output_tokens=out_tokens,
        ttft_ms=summary_ms([t.ttft for t in done]),
        tpot_ms=summary_ms([(t.e2el - t.ttft) / (t.output_tokens - 1) for t in done if t.output_tokens > 1]),
        itl_ms=summary_ms([gap for t in done for gap in t.itl]),
        e2el_ms=summary_ms([t.e2el for t in done]),
        error_messages=list(dict.fromkeys(t.error for t in timings if t.error))[:5],
        ignore_eos=ignore_eos,
    )


def api_base(url: str) -> str:
    """Accept http://host:port, http://host:port/ or http://host:port/v1."""
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise InputError(f"{url} is not an http(s) URL", hint="e.g. http://127.0.0.1:8000")
    return base if base.endswith("/v1") else base + "/v1"


def first_model(base: str, headers: dict, timeout: float) -> str:
    import httpx

    try:
        response = httpx.get(f"{base}/models", headers=headers, timeout=timeout)
        response.raise_for_status()
        return response.json()["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise QuantkitError(f"could not list the models of {base}: {exc}", hint="pass `model=NAME`") from None


def load_test(
    url: str,
    model: str | None = None,
    concurrency: list[int] | tuple = (),
    request_rate: list[float] | tuple = (),
    num_requests: int = 16,
    max_tokens: int = 64,
    prompts: list[str] | tuple = PROMPTS,
    api_key: str | None = None,
    timeout: float = 300.0,
    seed: int = 0,
    ignore_eos: bool = False,
) -> list[LoadTestResult]:
    """One result per concurrency level, or per request rate (capped by the one concurrency level
    if exactly one is given). Nothing given: concurrency 1. ``ignore_eos`` asks the server to
    generate exactly ``max_tokens`` per request (as vLLM's ``bench serve --ignore-eos``), so
    servers and models compare on equal work."""
    if num_requests < 1 or max_tokens < 1 or not prompts:
        raise InputError("num_requests, max_tokens and the prompt set must be positive")
    base = api_base(url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    model = model or first_model(base, headers, timeout)
    plans: list[tuple[int | None, float | None]]
    if request_rate:
        cap = concurrency[0] if len(concurrency) == 1 else None
        plans = [(cap, rate) for rate in request_rate]
    else:
        plans = [(c, None) for c in (concurrency or [1])]
    return [
        asyncio.run(_level(base, model, c, r, num_requests, max_tokens, list(prompts), headers, timeout, seed, ignore_eos))
        for c, r in plans
    ]


def plot_sweep(data: dict, file) -> bool:
    """PNG: output tok/s and TTFT p50 against concurrency, one line per server; False when no
    server ran more than one concurrency level."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    series = [(s["url"], [r for r in s["results"] if r["concurrency"] and r["completed"]]) for s in data["servers"]]
    if not any(len(results) > 1 for _, results in series):
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.0), dpi=110)
    for url, results in series:
        xs = [r["concurrency"] for r in results]
        left.plot(xs, [r["output_throughput"] for r in results], marker="o", label=url)
        right.plot(xs, [r["ttft_ms"]["median"] for r in results], marker="o", label=url)
    for ax, title in ((left, "output tokens/s"), (right, "TTFT median (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["concurrency"] for _, rs in series for r in rs}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent requests")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    left.set_ylim(bottom=0)
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(file)
    plt.close(fig)
    return True
