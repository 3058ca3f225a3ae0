"""quantkit bench's timing vs the same engine driven directly, same file, same threads, same run.

    python benchmarks/bench_overhead.py [--gguf FILE] [--hf FOLDER] [--threads 1] [-p 128] [-n 32] [--repetitions 3]

- llama.cpp: quantkit's timed loop (``quantkit.bench.timed_runs`` over LlamaCppEngine) vs a raw
  llama-cpp-python loop (``Llama.eval(prompt)`` for pp, ``Llama.eval([token])`` per token for tg).
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
    pp, tg = [], []
    for _ in range(reps):
        llm.reset()
        started = time.perf_counter()
        llm.eval(prompt)
        pp.append(len(prompt) / (time.perf_counter() - started))
        llm.reset()
        started = time.perf_counter()
        for i in range(n):
            llm.eval([prompt[i % len(prompt)]])
        tg.append(n / (time.perf_counter() - started))
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
    from quantkit.bench import BenchOptions, timed_runs

    prefill, decode, _ = timed_runs(engine, prompt, BenchOptions(prompt_tokens=len(prompt), gen_tokens=n,
                                                                 repetitions=reps, warmup=0))
    return [len(prompt) / s for s in prefill], [n / s for s in decode]


def compare(name, ours, raw, args, prompt):
    """Interleave single repetitions of both sides after one warm-up each."""
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
    print(f"{name:13s} pp{len(prompt)}: quantkit {mean(q_pp):8.1f}  direct {mean(r_pp):8.1f}  ratio {mean(q_pp) / mean(r_pp):.3f}")
    print(f"{name:13s} tg{args.n}:  quantkit {mean(q_tg):8.1f}  direct {mean(r_tg):8.1f}  ratio {mean(q_tg) / mean(r_tg):.3f}")


def rss_check(gguf: Path, threads: int):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "quantkit", "bench", str(gguf), "--no-quality", "--no-smoke",
               "-p", "64", "-n", "16", "--repetitions", "2", "--threads", str(threads), "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if not out.is_file() or not match:
            print("peak RSS: could not run", proc.stderr[-500:])
            return
        data = json.loads(out.read_text())
        ours, theirs = max(data["load_peak_rss_mb"], data["peak_rss_mb"]), int(match.group(1)) / 1024
        print(f"peak RSS      quantkit {ours:.1f} MiB  /usr/bin/time -v {theirs:.1f} MiB  ratio {ours / theirs:.3f}")


def main():
    from quantkit.bundled import bundled_gguf
    from quantkit.engines import EngineOptions, load_engine
    from quantkit.quality import QualityOptions, eval_text

    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--hf", type=Path, default=None, help="HF folder (default: the bundled SmolLM2 checkpoint)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-p", type=int, default=128)
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    gguf = args.gguf or bundled_gguf("bundled:smollm2-135m-instruct")

    engine = load_engine(gguf, EngineOptions(threads=args.threads))
    prompt = (engine.tokenize(eval_text(QualityOptions())) * 2)[: args.p]
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=4096, n_batch=512, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    compare("llama.cpp", lambda p, n, r: quantkit_runs(engine, p, n, r), lambda p, n, r: raw_llama_runs(llm, p, n, r), args, prompt)
    engine.close()
    llm.close()

    import torch
    from transformers import AutoModelForCausalLM

    from quantkit.modelref import resolve_model

    hf = args.hf or resolve_model("bundled:smollm2-135m-instruct")
    engine = load_engine(hf, EngineOptions(threads=args.threads))
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    compare("transformers", lambda p, n, r: quantkit_runs(engine, p, n, r), lambda p, n, r: raw_hf_runs(model, p, n, r), args, prompt)
    engine.close()

    rss_check(gguf, args.threads)


if __name__ == "__main__":
    main()
