"""`quantkit serve` on a GGUF against llama-server of the same commit, side by side: the same file,
the same settings (quantkit.engines.llama_server.choose_settings: threads, slots, context, flash
attention), one load generator (quantkit.benchmark.loadtest: streamed chat completions, every
request generating exactly --max-tokens): all servers up at once, each concurrency level measured on
each in turn with the order flipped every time (--sequential: one server up at a time instead).

    .venv/bin/python benchmarks/serve_scaling.py --gguf model-Q4_K_M.gguf --threads 2 --json out.json
    .venv/bin/python benchmarks/serve_scaling.py --in-process      # quantkit's own server beside them

Servers: `llama-server` (bare, started directly), `quantkit serve` (--backend llama-server:
llama-server behind quantkit's front), and with --in-process `quantkit serve --backend in-process`
(quantkit's own continuous-batching loop over llama-cpp-python).

Targets (issue 26): quantkit serve's output tok/s >= 0.98x llama-server's and its TTFT p50 within
10% of llama-server's, at concurrency 1, 4 and 8, judged on the median of the rounds' ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

TARGET_TPS, TARGET_TTFT = 0.98, 1.10


def start_quantkit(gguf: Path, threads: int, parallel: int, n_ctx: int, backend: str):
    cmd = [sys.executable, "-m", "quantkit", "serve", str(gguf), "--port", "0", "--backend", backend]
    cmd += ["--threads", str(threads), "--parallel", str(parallel), "--n-ctx", str(n_ctx), "--max-tokens-limit", "2048"]
    cmd += ["--queue-size", "64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(600)
    if not line or "serving http" not in line[0]:
        proc.kill()
        raise RuntimeError(f"quantkit serve did not start: {line}")
    return proc, line[0].split()[1]


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(name: str, args, gguf: Path) -> list[dict]:
    """One server up, the load test at every level, the server down."""
    from quantkit.benchmark.loadtest import load_test
    from quantkit.engines.llama_server import LlamaServer, choose_settings

    options = dict(concurrency=args.concurrency, num_requests=args.num_requests, max_tokens=args.max_tokens, ignore_eos=True)
    if name == "llama-server":
        settings = choose_settings(gguf, threads=args.threads, parallel=args.parallel, n_ctx=args.n_ctx)
        with LlamaServer(settings) as server:
            print(f"  {settings.shown()}", flush=True)
            results = load_test(server.url, **options)
    else:
        proc, url = start_quantkit(gguf, args.threads, args.parallel, args.n_ctx, name.split(":")[1])
        try:
            results = load_test(url, **options)
        finally:
            stop(proc)
    return [r.to_dict() for r in results]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(pid: int) -> int:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    return int(out[0])


def interleaved(args, gguf: Path, servers: list[str]) -> list[dict]:
    """Every server up at once (the idle ones wait on a socket); each level measured on each server
    in turn, the order flipped every time, so a busy machine's drift falls on all of them alike."""
    from quantkit.benchmark.loadtest import load_test
    from quantkit.engines.llama_server import LlamaServer, choose_settings

    urls, procs, bare, pids = {}, [], None, {}
    try:
        for name in servers:
            if name == "llama-server":
                bare = LlamaServer(choose_settings(gguf, threads=args.threads, parallel=args.parallel, n_ctx=args.n_ctx)).start()
                print(f"  {bare.settings.shown()}", flush=True)
                urls[name] = bare.url
                pids[name] = {"llama-server": bare.proc.pid}
            else:
                proc, urls[name] = start_quantkit(gguf, args.threads, args.parallel, args.n_ctx, name.split(":")[1])
                procs.append(proc)
                pids[name] = {"quantkit": proc.pid}
                if name == "quantkit:llama-server":
                    pids[name]["llama-server"] = child_pid(proc.pid)
        runs = {(run, name): [] for run in range(1, args.runs + 1) for name in servers}
        flip = False
        for run in range(1, args.runs + 1):
            for c in args.concurrency:
                for name in reversed(servers) if flip else servers:
                    before = {k: cpu_seconds(p) for k, p in pids[name].items()}
                    (result,) = load_test(
                        urls[name], concurrency=[c], num_requests=args.num_requests, max_tokens=args.max_tokens, ignore_eos=True
                    )
                    # CPU each process spent on the level: the front's share does not depend on the machine's load.
                    cpu = {k: round(cpu_seconds(p) - before[k], 2) for k, p in pids[name].items()}
                    runs[(run, name)].append({**result.to_dict(), "cpu_s": cpu})
                    print(
                        f"run {run} c{c} {name}: {result.output_throughput:.1f} tok/s, "
                        f"TTFT p50 {result.ttft_ms['median']} ms, CPU s {cpu}",
                        flush=True,
                    )
                flip = not flip
            print(f"    load average {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for proc in procs:
            stop(proc)
        if bare:
            bare.stop()
    return [{"run": run, "server": name, "results": results} for (run, name), results in runs.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="the .gguf file (default: the bundled SmolLM2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8, help="slots (-np) in every server")
    parser.add_argument("--n-ctx", type=int, default=1024, help="context per slot")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--num-requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=4, help="rounds, the servers' order swapped each round")
    parser.add_argument("--in-process", action="store_true", help="also quantkit's in-process server")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--sequential", action="store_true", help="one server up at a time (default: all up, levels interleaved)")
    args = parser.parse_args()
    if args.gguf:
        gguf = Path(args.gguf).resolve()
    else:
        from quantkit.hub.bundled import bundled_gguf

        gguf = bundled_gguf("bundled:smollm2-135m-instruct")
    servers = ["llama-server", "quantkit:llama-server"] + (["quantkit:in-process"] if args.in_process else [])
    load = os.getloadavg()[0]
    print(f"{gguf.name}: {args.threads} threads, {args.parallel} slots, load average {load:.2f} at the start", flush=True)
    runs = [] if args.sequential else interleaved(args, gguf, servers)
    for run in range(args.runs if args.sequential else 0):
        order = servers if run % 2 == 0 else [servers[1], servers[0], *servers[2:]]
        for name in order:
            print(f"run {run + 1}: {name}", flush=True)
            runs.append({"run": run + 1, "server": name, "results": measure(name, args, gguf)})
            for r in runs[-1]["results"]:  # as it goes: a long run on a busy machine still shows something
                print(f"    c{r['concurrency']}: {r['output_throughput']:.1f} tok/s, TTFT p50 {r['ttft_ms']['median']} ms")
            print(f"    load average {os.getloadavg()[0]:.2f}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"gguf": str(gguf), "args": vars(args), "load_start": load, "runs": runs}))
            time.sleep(2)
    rows = table(runs, args.concurrency, args.runs)
    print("\n".join(rows))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"gguf": str(gguf), "args": vars(args), "load_start": load, "runs": runs}, indent=2)
        )


def table(runs: list[dict], levels: list[int], n_runs: int) -> list[str]:
    """The Markdown table: per level, each server's tok/s and TTFT p50 per run, and quantkit serve's
    ratios to llama-server of the same run against the targets."""

    def level_of(run, c):
        return next(r for r in run["results"] if r["concurrency"] == c)

    def pick(server, run_no):
        return next(r for r in runs if r["server"] == server and r["run"] == run_no)

    servers = list(dict.fromkeys(r["server"] for r in runs))
    header = ["concurrency"] + [f"{s} tok/s" for s in servers] + [f"{s} TTFT p50 ms" for s in servers]
    header += ["tok/s ratio", "TTFT ratio", "front CPU / llama-server CPU", "targets"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in levels:
        tps = {s: [level_of(pick(s, n), c)["output_throughput"] for n in range(1, n_runs + 1)] for s in servers}
        ttft = {s: [level_of(pick(s, n), c)["ttft_ms"]["median"] for n in range(1, n_runs + 1)] for s in servers}
        ratios = [q / b for q, b in zip(tps["quantkit:llama-server"], tps["llama-server"])]
        ttft_ratios = [q / b for q, b in zip(ttft["quantkit:llama-server"], ttft["llama-server"])]
        # Judged on the median round: one round on a 2-core machine moves by more than the 2% target.
        ok = statistics.median(ratios) >= TARGET_TPS and statistics.median(ttft_ratios) <= TARGET_TTFT
        cells = [str(c)] + [" / ".join(f"{v:.1f}" for v in tps[s]) for s in servers]
        cells += [" / ".join(f"{v:.0f}" for v in ttft[s]) for s in servers]
        cpu = [level_of(pick("quantkit:llama-server", n), c).get("cpu_s") or {} for n in range(1, n_runs + 1)]
        share = sum(x.get("quantkit", 0) for x in cpu) / max(sum(x.get("llama-server", 0) for x in cpu), 1e-9)
        cells += [" / ".join(f"{v:.3f}" for v in ratios) + f" (median {statistics.median(ratios):.3f})"]
        cells += [" / ".join(f"{v:.2f}" for v in ttft_ratios) + f" (median {statistics.median(ttft_ratios):.2f})"]
        cells += [f"{share:.1%}" if any(cpu) else "-", "met" if ok else "MISSED"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
