"""pp/tg of a GGUF from llama-bench itself (``-o json``), built from the same sdist as the runtime,
so the numbers quantkit prints are the ones the field quotes: its mean and stddev over its
repetitions, with the command that produced them. bench keeps TTFT, latency percentiles, memory,
quality and smoke as its own; engines without such a tool keep bench's in-process loop."""

import json
import subprocess
from pathlib import Path

from quantkit.benchmark.result import Stat
from quantkit.core.atomic import die_with_parent
from quantkit.core.errors import EngineError, QuantkitError


def llama_bench_command(
    gguf: Path,
    prompt_tokens: int,
    gen_tokens: int,
    repetitions: int,
    threads: int,
    n_gpu_layers: int = 0,
    flash_attn: bool = False,
    n_batch: int = 512,
) -> list[str]:
    """The llama-bench call with the in-process engine's settings: its threads, batch (llama-bench's
    -b and -ub both at the engine's n_batch), flash attention and offload (-1: every layer)."""
    from quantkit.engines.llamacpp_tools import tool

    return [
        str(tool("llama-bench")),
        "-m",
        str(gguf),
        "-p",
        str(prompt_tokens),
        "-n",
        str(gen_tokens),
        "-r",
        str(repetitions),
        "-t",
        str(threads),
        "-b",
        str(n_batch),
        "-ub",
        str(n_batch),
        "-fa",
        "1" if flash_attn else "0",
        "-ngl",
        str(999 if n_gpu_layers < 0 else n_gpu_layers),
        "-o",
        "json",
    ]


def parse(output: str) -> dict:
    """llama-bench's JSON array -> {"pp": test, "tg": test} (each with avg_ts, stddev_ts, samples_ts)."""
    start = output.find("[")
    try:
        tests = json.loads(output[start:]) if start >= 0 else []
    except ValueError:
        tests = []
    found = {}
    for test in tests:
        kind = "pp" if test.get("n_prompt") and not test.get("n_gen") else "tg" if test.get("n_gen") else None
        if kind:
            found[kind] = test
    if set(found) != {"pp", "tg"}:
        raise EngineError("llama-bench printed no pp and tg results", hint="run the command from the bench record by hand")
    return found


def run_llama_bench(command: list[str], timeout: float = 1800) -> dict:
    """Run llama-bench; {"pp": {mean, std, samples}, "tg": {...}, "command", "build_commit"}."""
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, errors="replace", timeout=timeout, preexec_fn=die_with_parent
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"llama-bench ran over {timeout:.0f} s", hint="lower --repetitions or -p/-n") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"llama-bench failed (exit code {proc.returncode}): {last}", hint=" ".join(command))
    tests = parse(proc.stdout)
    commit = tests["tg"].get("build_commit")
    stamp = Path(command[0]).parent / "COMMIT"  # a build from the sdist reports "unknown"; make tools stamps it
    if commit in (None, "unknown") and stamp.is_file():
        commit = stamp.read_text().strip()
    record = {"tool": "llama-bench", "command": " ".join(command), "build_commit": commit}
    for kind, test in tests.items():
        record[kind] = {
            "mean": round(float(test["avg_ts"]), 2),
            "std": round(float(test["stddev_ts"]), 2),
            "samples": [round(float(s), 2) for s in test.get("samples_ts") or []],
            "tokens": test.get("n_prompt") if kind == "pp" else test.get("n_gen"),
        }
    return record


def tool_speed(engine, options, prefill: Stat, decode: Stat, notes: list[str]):
    """(record, prefill, decode) from llama-bench on the engine's file with its threads, batch,
    flash attention and offload; where the tool is not built or fails, the in-process numbers
    stand and a note says why."""
    try:
        command = llama_bench_command(
            engine.file,
            options.prompt_tokens,
            options.gen_tokens,
            options.repetitions,
            engine.threads,
            engine.gpu_layers,
            engine.options.flash_attn,
        )
        record = run_llama_bench(command)
    except QuantkitError as exc:
        notes.append(f"pp/tg from quantkit's in-process loop: {exc}")  # str(exc) carries the hint
        return None, prefill, decode
    # The in-process loop's numbers stay in the record, beside llama-bench's, for comparison.
    record["in_process"] = {"pp": prefill.__dict__, "tg": decode.__dict__}
    return record, Stat(record["pp"]["mean"], record["pp"]["std"]), Stat(record["tg"]["mean"], record["tg"]["std"])
