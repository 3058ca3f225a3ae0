"""quantkit bench's timing vs the same engine driven directly, same file, same threads, same run.

    python benchmarks/bench_overhead.py [--gguf FILE] [--hf FOLDER] [--threads 1] [-p 128] [-n 32] [--repetitions 3]

- llama.cpp: quantkit's timed loop (``quantkit.benchmark.bench.timed_runs`` over LlamaCppEngine) vs a bare
  low-level loop (``llama_decode`` on ``llama_batch_get_one``: the prompt in one batch for pp, one
  token per call for tg; ``Llama.eval`` is slower than both), and vs ``llama-bench`` itself (the
  tool of the same llama.cpp commit, ``make tools``) on the same file, threads and batch sizes.
- transformers: the same loop over TransformersEngine vs a raw forward loop with a DynamicCache.
Repetitions of both sides are interleaved so a busy machine slows both alike. Ratios are
quantkit / direct tokens/s (target >= 0.97).
- peak RSS: ``quantkit bench FILE --json`` run under ``/usr/bin/time -v``: its maximum resident set
  vs the larger of the JSON's load and run peaks (sampled every 10 ms).
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def raw_llama_runs(llm, prompt, n, reps):
    import llama_cpp

    ctx = llm._ctx.ctx
    memory = llama_cpp.llama_get_memory(ctx)
    tokens = (llama_cpp.llama_token * len(prompt))(*prompt)
    one = (llama_cpp.llama_token * 1)()
    pp, tg = [], []
    for _ in range(reps):
        llama_cpp.llama_memory_seq_rm(memory, -1, 0, -1)
        started = time.perf_counter()
        llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, len(prompt)))
        llama_cpp.llama_get_logits_ith(ctx, -1)
        pp.append(len(prompt) / (time.perf_counter() - started))
        llama_cpp.llama_memory_seq_rm(memory, -1, 0, -1)
        started = time.perf_counter()
        for i in range(n):
            one[0] = prompt[i % len(prompt)]
            llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1))
            llama_cpp.llama_get_logits_ith(ctx, -1)
        tg.append(n / (time.perf_counter() - started))
    return pp, tg


def llama_bench(gguf: Path, threads: int, p: int, n: int, reps: int) -> tuple[float, float]:
    """llama-bench's pp{p} and tg{n} (mean tokens/s over ``reps``), with llama-cpp-python's
    context settings as quantkit uses them: batch 512, ubatch 512, flash attention off."""
    from quantkit.quantization.gguf.binaries import run_tool

    out = run_tool(
        "llama-bench",
        ["-m", gguf, "-t", threads, "-p", p, "-n", n, "-r", reps, "-b", 512, "-ub", 512, "-fa", 0, "-o", "json"],
        echo=False,
    )
    rows = json.loads(out[out.index("[") :])
    pp = next(r["avg_ts"] for r in rows if r["n_prompt"] == p and r["n_gen"] == 0)
    tg = next(r["avg_ts"] for r in rows if r["n_gen"] == n and r["n_prompt"] == 0)
    return pp, tg


def raw_hf_runs(model, prompt, n, reps):
    import torch
    from transformers import DynamicCache

    pp, tg = [], []
    with torch.inference_mode():
        for _ in range(reps):
            started = time.perf_counter()
            model(input_ids=torch.tensor([prompt]), past_key_values=DynamicCache(), use_cache=True).logits[0, -1].float().numpy()
            pp.append(len(prompt) / (time.perf_counter() - started))
            cache = DynamicCache()
            started = time.perf_counter()
            for i in range(n):
                out = model(input_ids=torch.tensor([[prompt[i % len(prompt)]]]), past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                out.logits[0, -1].float().numpy()
            tg.append(n / (time.perf_counter() - started))
    return pp, tg


def quantkit_runs(engine, prompt, n, reps):
    from quantkit.benchmark.bench import BenchOptions, timed_runs

    prefill, decode, _ = timed_runs(
        engine, prompt, BenchOptions(prompt_tokens=len(prompt), gen_tokens=n, repetitions=reps, warmup=0)
    )
    return [len(prompt) / s for s in prefill], [n / s for s in decode]


def compare(name, ours, raw, args, prompt, label="direct"):
    """Interleave single repetitions of both sides after one warm-up each; returns quantkit's means."""
    ours(prompt, args.n, 1), raw(prompt, args.n, 1)
    q_pp, q_tg, r_pp, r_tg = [], [], [], []
    for _ in range(args.repetitions):
        a, b = ours(prompt, args.n, 1)
        q_pp += a
        q_tg += b
        a, b = raw(prompt, args.n, 1)
        r_pp += a
        r_tg += b
    mean = statistics.fmean
    print(
        f"{name:13s} pp{len(prompt)}: quantkit {mean(q_pp):8.1f}  {label} {mean(r_pp):8.1f}  ratio {mean(q_pp) / mean(r_pp):.3f}"
    )
    print(f"{name:13s} tg{args.n}:  quantkit {mean(q_tg):8.1f}  {label} {mean(r_tg):8.1f}  ratio {mean(q_tg) / mean(r_tg):.3f}")
    return mean(q_pp), mean(q_tg)


def rss_check(gguf: Path, threads: int):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "quantkit",
            "bench",
            str(gguf),
            "--no-quality",
            "--no-smoke",
            "-p",
            "64",
            "-n",
            "16",
            "--repetitions",
            "2",
            "--threads",
            str(threads),
            "--json",
            str(out),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if not out.is_file() or not match:
            print("peak RSS: could not run", proc.stderr[-500:])
            return
        data = json.loads(out.read_text())
        ours, theirs = max(data["load_peak_rss_mb"], data["peak_rss_mb"]), int(match.group(1)) / 1024
        print(f"peak RSS      quantkit {ours:.1f} MiB  /usr/bin/time -v {theirs:.1f} MiB  ratio {ours / theirs:.3f}")


def main():
    from quantkit.benchmark.quality import QualityOptions, eval_text
    from quantkit.engines import EngineOptions, load_engine
    from quantkit.hub.bundled import bundled_gguf

    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--hf", type=Path, default=None, help="HF folder (default: the bundled SmolLM2 checkpoint)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-p", type=int, default=128)
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--llama-only", action="store_true", help="skip the transformers comparison and the RSS check")
    args = parser.parse_args()
    gguf = args.gguf or bundled_gguf("bundled:smollm2-135m-instruct")

    engine = load_engine(gguf, EngineOptions(threads=args.threads))
    prompt = (engine.tokenize(eval_text(QualityOptions())) * 2)[: args.p]
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(gguf),
        n_ctx=engine.llm.n_ctx(),
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    q_pp, q_tg = compare(
        "llama.cpp",
        lambda p, n, r: quantkit_runs(engine, p, n, r),
        lambda p, n, r: raw_llama_runs(llm, p, n, r),
        args,
        prompt,
        "llama_decode",
    )
    llm.close()
    # llama-bench runs its repetitions in one process: quantkit's runs are taken on either side of it.
    b_pp, b_tg = llama_bench(gguf, args.threads, len(prompt), args.n, args.repetitions)
    a_pp, a_tg = (statistics.fmean(x) for x in quantkit_runs(engine, prompt, args.n, args.repetitions))
    q_pp, q_tg = (q_pp + a_pp) / 2, (q_tg + a_tg) / 2
    print(f"{'llama-bench':13s} pp{len(prompt)}: quantkit {q_pp:8.1f}  llama-bench {b_pp:8.1f}  ratio {q_pp / b_pp:.3f}")
    print(f"{'llama-bench':13s} tg{args.n}:  quantkit {q_tg:8.1f}  llama-bench {b_tg:8.1f}  ratio {q_tg / b_tg:.3f}")
    engine.close()

    if args.llama_only:
        return
    import torch
    from transformers import AutoModelForCausalLM

    from quantkit.hub.model_ref import resolve_model

    hf = args.hf or resolve_model("bundled:smollm2-135m-instruct")
    engine = load_engine(hf, EngineOptions(threads=args.threads))
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    compare(
        "transformers", lambda p, n, r: quantkit_runs(engine, p, n, r), lambda p, n, r: raw_hf_runs(model, p, n, r), args, prompt
    )
    engine.close()

    rss_check(gguf, args.threads)


if __name__ == "__main__":
    main()
