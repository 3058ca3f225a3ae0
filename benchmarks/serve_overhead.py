"""What `quantkit serve` costs: single-stream decode tokens/s through the server (SSE over HTTP)
vs the engine directly (target ratio >= 0.9), then throughput at concurrency 1/4/16.

    .venv/bin/python benchmarks/serve_overhead.py                 # SmolLM2 via transformers
    .venv/bin/python benchmarks/serve_overhead.py --gguf          # the bundled Q4_1 via llama.cpp
    .venv/bin/python benchmarks/serve_overhead.py --json out.json
"""

import argparse
import json
import subprocess
import sys
import threading
import time

import httpx

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long story about a dragon who learns to cook."},
]


def decode_rate(times: list[float]) -> float:
    """Tokens/s after the first token: (n - 1) / (last - first), as optimum-benchmark's decode."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def direct(engine, max_tokens: int) -> float:
    ids = engine.chat_prompt(MESSAGES)
    return decode_rate([time.perf_counter() for _ in engine.stream(ids, max_tokens, temperature=0.0)])


def start_server(path, threads: int):
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantkit", "serve", str(path), "--port", "0", "--threads", str(threads), "--queue-size", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(300)
    if not line or "serving " not in line[0]:
        proc.kill()
        sys.exit(f"server did not start: {line}")
    return proc, line[0].split()[1]


def served(url: str, max_tokens: int) -> float:
    body = {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    times = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line and '"content": ""' not in line:
                times.append(time.perf_counter())
    return decode_rate(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", action="store_true", help="Use the bundled GGUF through llama.cpp.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5, help="Best of N single-stream runs (alternating).")
    parser.add_argument("--levels", default="1,4,16", help="Concurrency levels for the throughput part.")
    parser.add_argument("--json", dest="json_out", help="Also write the results here.")
    args = parser.parse_args()

    from quantkit.benchmark.loadtest import load_test
    from quantkit.hub.bundled import bundled_gguf, materialize

    spec = "bundled:smollm2-135m-instruct"
    path = bundled_gguf(spec) if args.gguf else materialize(spec)
    from quantkit.engines import EngineOptions, load_engine

    engine = load_engine(path, EngineOptions(threads=args.threads))
    proc, url = start_server(path, args.threads)
    try:
        # Alternate the two so a busy machine's drift hits both alike; best of N each.
        engine_rates, server_rates = [], []
        for _ in range(args.runs):
            engine_rates.append(direct(engine, args.max_tokens))
            server_rates.append(served(url, args.max_tokens))
        engine.close()
        engine_rate, server_rate = max(engine_rates), max(server_rates)
        levels = [int(x) for x in args.levels.split(",")]
        loads = [load_test(url, concurrency=[c], num_requests=max(8, c), max_tokens=32)[0] for c in levels]
    finally:
        proc.terminate()
        proc.wait(30)
    result = {
        "model": str(path),
        "engine": "llama.cpp" if args.gguf else "transformers",
        "threads": args.threads,
        "decode_tok_s_engine": round(engine_rate, 2),
        "decode_tok_s_server": round(server_rate, 2),
        "ratio": round(server_rate / engine_rate, 3) if engine_rate else None,
        "concurrency": [load.to_dict() for load in loads],
    }
    print(
        f"single-stream decode: engine {engine_rate:.1f} tok/s, through quantkit serve {server_rate:.1f} tok/s, "
        f"ratio {result['ratio']} (target >= 0.9)"
    )
    for load in loads:
        print(
            f"concurrency {load.concurrency:>3}: {load.request_throughput:.2f} req/s, {load.output_throughput:.1f} tok/s, "
            f"TTFT median {load.ttft_ms['median']} ms, TPOT median {load.tpot_ms['median']} ms, errors {load.errors}"
        )
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
