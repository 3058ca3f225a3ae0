"""What `quantkit quantize` costs over calling the quantization library directly, same settings,
same run: wall time and peak RSS of each as a subprocess, printed as ratios (targets: time within
5%, memory within 10%). Methods: awq (llm-compressor, small calibration), nf4 and int8
(transformers + bitsandbytes), on SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/quantize_overhead.py
    .venv/bin/python benchmarks/quantize_overhead.py --methods nf4 int8 --runs 3
    .venv/bin/python benchmarks/quantize_overhead.py --calib-samples 16 --calib-seq-len 64 --json out.json
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TIME_TARGET, MEMORY_TARGET = 1.05, 1.10

# The library calls quantkit makes, written out by hand: argv = model, out, calibration json.
DIRECT = {
    "awq": r"""
import json, sys, torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.awq import AWQModifier
from llmcompressor.pipelines.cache import IntermediatesCache
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, out, calib = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
if not torch.cuda.is_available():  # the same CPU-only workaround quantkit applies
    IntermediatesCache.pin_memory = lambda self, *a, **k: None
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
    num_bits=4, type="int", symmetric=False, strategy="group", group_size=calib["group_size"], dynamic=False))
recipe = [AWQModifier(duo_scaling=True),
          QuantizationModifier(config_groups={"group_0": scheme}, targets=["Linear"], ignore=["lm_head"])]
oneshot(model=model, tokenizer=tok, dataset=Dataset.from_dict({"text": calib["samples"]}), recipe=recipe,
        max_seq_length=calib["seq_len"], num_calibration_samples=len(calib["samples"]),
        shuffle_calibration_samples=False, batch_size=min(8, len(calib["samples"])))
model.to(torch.bfloat16)
model.save_pretrained(out, save_compressed=True)
tok.save_pretrained(out)
""",
    "nf4": r"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
model_dir, out = sys.argv[1], sys.argv[2]
config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=torch.float32)
model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=config, device_map="cpu", dtype="auto")
model.save_pretrained(out)
AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
""",
    "int8": r"""
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
model_dir, out = sys.argv[1], sys.argv[2]
config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0)
model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=config, device_map="cpu", dtype="auto")
model.save_pretrained(out)
AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
""",
}


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one subprocess, its RSS polled every 10 ms (as
    quantkit.core.memory.PeakRSS does; wait4's ru_maxrss would count the parent image forked before exec)."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched, peak = psutil.Process(proc.pid), 0
    stderr = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.01)
    proc.wait()
    wall = time.perf_counter() - started
    reader.join()
    if proc.returncode != 0:
        sys.exit(f"{cmd[:6]} failed:\n{stderr[0].decode(errors='replace')[-2000:]}")
    return wall, peak / 2**20


def warm_up(model_dir: Path, methods: list[str]) -> None:
    """Whichever side runs first would otherwise pay for a cold page cache (libraries, weights)."""
    libs = {"awq": "llmcompressor", "nf4": "bitsandbytes", "int8": "bitsandbytes"}
    imports = ", ".join(sorted({libs[m] for m in methods} | {"torch", "transformers"}))
    code = f"import {imports}; [p.read_bytes() for p in __import__('pathlib').Path({str(model_dir)!r}).glob('*.safetensors')]"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def awq_calibration(model_dir: Path, samples: int, seq_len: int, group: int, path: Path) -> str:
    """The exact samples quantkit will use, for the direct script; returns their hash."""
    from transformers import AutoTokenizer

    from quantkit.quantization.calibration import build

    calib = build(AutoTokenizer.from_pretrained(model_dir), None, samples, seq_len)
    path.write_text(json.dumps({"samples": calib.samples, "seq_len": seq_len, "group_size": group}))
    return calib.sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["awq", "nf4", "int8"], choices=list(DIRECT))
    parser.add_argument("--runs", type=int, default=1, help="repetitions (the fastest is kept)")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--calib-seq-len", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=64, help="awq (SmolLM2's 576 needs 64)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from quantkit.hub.bundled import materialize

    model_dir = materialize("bundled:smollm2-135m-instruct")
    work = Path(tempfile.mkdtemp(prefix="quantize-overhead-"))
    calib_file = work / "calib.json"
    rows = []
    warm_up(model_dir, args.methods)
    try:
        for method in args.methods:
            extra = []
            if method == "awq":
                digest = awq_calibration(model_dir, args.calib_samples, args.calib_seq_len, args.group_size, calib_file)
                extra = [
                    "--group-size",
                    str(args.group_size),
                    "--calib-samples",
                    str(args.calib_samples),
                    "--calib-seq-len",
                    str(args.calib_seq_len),
                ]
            best = {"quantkit": (float("inf"), 0.0), "direct": (float("inf"), 0.0)}
            for run in range(args.runs):
                out_q, out_d = work / f"{method}-q{run}", work / f"{method}-d{run}"
                direct_cmd = [sys.executable, "-c", DIRECT[method], str(model_dir), str(out_d), str(calib_file)]
                quantkit_cmd = [
                    sys.executable,
                    "-m",
                    "quantkit",
                    "quantize",
                    str(model_dir),
                    "--method",
                    method,
                    "-o",
                    str(out_q),
                    *extra,
                ]
                if run % 2:  # alternate who goes first, so drift in machine load evens out
                    q, d = measure(quantkit_cmd), measure(direct_cmd)
                else:
                    d, q = measure(direct_cmd), measure(quantkit_cmd)
                if method == "awq":
                    manifest = json.loads((out_q / "quantkit.json").read_text())
                    assert manifest["calibration"]["sha256"] == digest, "quantkit calibrated on other data"
                best["direct"] = min(best["direct"], d)
                best["quantkit"] = min(best["quantkit"], q)
                shutil.rmtree(out_q, ignore_errors=True)
                shutil.rmtree(out_d, ignore_errors=True)
            (qt, qm), (dt, dm) = best["quantkit"], best["direct"]
            rows.append(
                {
                    "method": method,
                    "quantkit_s": round(qt, 1),
                    "direct_s": round(dt, 1),
                    "time_ratio": round(qt / dt, 3),
                    "quantkit_rss_mb": round(qm),
                    "direct_rss_mb": round(dm),
                    "rss_ratio": round(qm / dm, 3),
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"{'method':8} {'quantkit s':>10} {'direct s':>9} {'time x':>7} {'quantkit MiB':>12} {'direct MiB':>10} {'mem x':>6}  targets"
    )
    for r in rows:
        ok = ("ok" if r["time_ratio"] <= TIME_TARGET else "SLOW") + "/" + ("ok" if r["rss_ratio"] <= MEMORY_TARGET else "BIG")
        print(
            f"{r['method']:8} {r['quantkit_s']:>10} {r['direct_s']:>9} {r['time_ratio']:>7} "
            f"{r['quantkit_rss_mb']:>12} {r['direct_rss_mb']:>10} {r['rss_ratio']:>6}  {ok}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
