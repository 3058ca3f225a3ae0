"""Does `quantkit serve` scale with concurrent requests? One run, side by side: the server at
concurrency 1/2/4/8 (streamed chat completions, `quantkit.benchmark.loadtest`) against llama.cpp's own
batched decode of the same file with the same threads (the physical yardstick): a raw loop over
llama-cpp-python's low-level batch API (N sequences, one llama_decode per step), and
llama-batched-bench's table when that tool is built in ~/.cache/quantkit/llama.cpp-tools.

    .venv/bin/python benchmarks/serve_scaling.py                       # the bundled SmolLM2 Q4_1
    .venv/bin/python benchmarks/serve_scaling.py --gguf model-Q4_K_M.gguf --threads 2 --json out.json

llama.cpp's CPU threads are OpenMP threads here: set OMP_WAIT_POLICY (e.g. PASSIVE) in the environment
to run both the yardstick and the server under it (they inherit it), side by side.

Targets (issue 12): serve tok/s at concurrency N >= 0.8x the yardstick at batch N for N = 4 and 8;
concurrency 8 >= 2x concurrency 1; TTFT p50 at concurrency 4 <= 3x concurrency 1.
"""

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def yardstick(gguf: Path, threads: int, batch: int, max_tokens: int) -> dict:
    """N prompts prefilled in one decode, then ``max_tokens`` greedy steps of N tokens each (no
    early stop): output tokens/s over prefill + decode, and over the decode steps alone."""
    import llama_cpp
    import numpy as np

    from quantkit.benchmark.loadtest import PROMPTS

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    template = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        llm.metadata["tokenizer.chat_template"], eos_token="", bos_token=""
    )
    prompts = [
        llm.tokenize(
            template(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]).prompt.encode(),
            add_bos=False,
            special=True,
        )
        for i in range(batch)
    ]
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 512 * batch, 512, 512, batch
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = False
    ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
    b = llama_cpp.llama_batch_init(512, 0, 1)
    n_vocab = llm.n_vocab()

    def decode(feeds):  # {seq: (ids, first position)} -> {seq: next greedy token}
        i, last = 0, {}
        for seq, (ids, pos) in feeds.items():
            for k, token in enumerate(ids):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos + k, 1, k == len(ids) - 1
                b.seq_id[i][0] = seq
                i += 1
            last[seq] = i - 1
        b.n_tokens = i
        assert llama_cpp.llama_decode(ctx, b) == 0
        return {
            seq: int(
                np.ctypeslib.as_array(
                    ctypes.cast(llama_cpp.llama_get_logits_ith(ctx, j), ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)
                ).argmax()
            )
            for seq, j in last.items()
        }

    try:
        start = time.perf_counter()
        nxt = decode({s: (p, 0) for s, p in enumerate(prompts)})
        steps_start = time.perf_counter()
        for step in range(max_tokens - 1):
            nxt = decode({s: ([nxt[s]], len(prompts[s]) + step) for s in range(batch)})
        end = time.perf_counter()
    finally:
        llama_cpp.llama_batch_free(b)
        llama_cpp.llama_free(ctx)
        llm.close()
    return {
        "batch": batch,
        "tok_s": round(batch * max_tokens / (end - start), 1),
        "decode_tok_s": round(batch * (max_tokens - 1) / (end - steps_start), 1),
    }


def batched_bench(gguf: Path, threads: int, levels: list[int], max_tokens: int) -> str | None:
    """llama-batched-bench's own table, when the tool is built (same llama.cpp commit)."""
    tools = Path.home() / ".cache" / "quantkit" / "llama.cpp-tools"
    found = sorted(p for p in tools.rglob("llama-batched-bench") if p.is_file()) if tools.is_dir() else []
    if not found:
        return None
    done = subprocess.run(
        [
            str(found[0]),
            "-m",
            str(gguf),
            "-t",
            str(threads),
            "-c",
            str(512 * max(levels)),
            "-npp",
            "32",
            "-ntg",
            str(max_tokens),
            "-npl",
            ",".join(map(str, levels)),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    return "\n".join(line for line in done.stdout.splitlines() if line.startswith("|")) or done.stderr[-2000:]


def start_server(gguf: Path, threads: int, parallel: int):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quantkit",
            "serve",
            str(gguf),
            "--port",
            "0",
            "--threads",
            str(threads),
            "--parallel",
            str(parallel),
            "--queue-size",
            "64",
            "--n-ctx",
            "512",
        ],
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
        raise SystemExit(f"server did not start: {line}")
    return proc, line[0].split()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="the .gguf file (default: the bundled SmolLM2 Q4_1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-per-level", type=int, default=4, help="requests = this x concurrency (at least 4)")
    parser.add_argument(
        "--stop-at-eos",
        action="store_true",
        help="let requests end at the model's end of turn (default: ignore_eos, so every request decodes "
        "max-tokens like the yardstick's sequences; replies that end early leave slots idle between requests)",
    )
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    from quantkit.benchmark.loadtest import load_test
    from quantkit.hub.bundled import bundled_gguf

    gguf = Path(args.gguf or bundled_gguf("bundled:smollm2-135m-instruct"))
    load_before = os.getloadavg()  # other jobs on these cores skew every number: state them
    sticks = {n: yardstick(gguf, args.threads, n, args.max_tokens) for n in args.levels}
    proc, url = start_server(gguf, args.threads, max(args.levels))
    try:
        load_test(url, concurrency=[1], num_requests=1, max_tokens=4)  # warm-up
        serves = {
            c: load_test(
                url,
                concurrency=[c],
                num_requests=max(4, args.requests_per_level * c),
                max_tokens=args.max_tokens,
                ignore_eos=not args.stop_at_eos,
            )[0].to_dict()
            for c in args.levels
        }
    finally:
        proc.terminate()
        proc.wait(30)
    load_after = os.getloadavg()
    tool = batched_bench(gguf, args.threads, args.levels, args.max_tokens)

    print(
        f"{gguf.name}, {args.threads} threads, {args.max_tokens} tokens per request; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs); "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
        f"{'requests may stop at end of turn' if args.stop_at_eos else 'ignore_eos (every request decodes max-tokens)'}"
    )
    print(f"{'N':>3} {'yardstick':>10} {'(decode)':>9} {'serve':>8} {'ratio':>6} {'TTFT p50':>9} {'errors':>6}")
    for n in args.levels:
        s, y = serves[n], sticks[n]
        print(
            f"{n:>3} {y['tok_s']:>10.1f} {y['decode_tok_s']:>9.1f} {s['output_throughput']:>8.1f} "
            f"{s['output_throughput'] / y['tok_s']:>6.2f} {s['ttft_ms']['median']:>7.0f}ms {s['errors']:>6}"
        )
    first, levels = serves[args.levels[0]], args.levels
    checks = []
    for n in (4, 8):
        if n in serves:
            ratio = serves[n]["output_throughput"] / sticks[n]["tok_s"]
            checks.append((f"serve c{n} / yardstick b{n} = {ratio:.2f} (target >= 0.8)", ratio >= 0.8))
    if 8 in serves and 1 in serves:
        ratio = serves[8]["output_throughput"] / first["output_throughput"]
        checks.append((f"serve c8 / c1 tok/s = {ratio:.2f} (target >= 2)", ratio >= 2))
    if 4 in serves and 1 in serves:
        ratio = serves[4]["ttft_ms"]["median"] / first["ttft_ms"]["median"]
        checks.append((f"TTFT p50 c4 / c1 = {ratio:.2f} (target <= 3)", ratio <= 3))
    for text, ok in checks:
        print(("  ok   " if ok else "  MISS ") + text)
    if tool:
        print("llama-batched-bench:\n" + tool)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "gguf": str(gguf),
                    "threads": args.threads,
                    "levels": levels,
                    "loadavg": {"before": load_before, "after": load_after},
                    "yardstick": sticks,
                    "serve": serves,
                    "batched_bench": tool,
                    "checks": [{"check": t, "ok": ok} for t, ok in checks],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
