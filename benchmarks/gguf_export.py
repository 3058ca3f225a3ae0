"""quantkit's GGUF export vs llama.cpp's own tools run by hand, in the same run, as ratios.

    python benchmarks/gguf_export.py [--model bundled:smollm2-135m-instruct] [--gguf-type Q8_0 --gguf-type Q4_K_M]

"direct" = ``python convert_hf_to_gguf.py MODEL --outtype f16`` then ``llama_model_quantize``
for each type (what ``llama-quantize`` does), each in its own process. "quantkit" = ``quantkit
quantize --method gguf`` which adds the preflight, token parity, metadata checks, a smoke chat
per file and the manifest. Wall time and peak RSS of the whole process tree (sampled every
10 ms, children included: the converter is a subprocess in both).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

QUANTIZE_ONE = r"""
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds and peak RSS (MiB) of ``cmd`` and all its descendants."""
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: llama.cpp's log would fill a pipe and block
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.01)
    wall = time.perf_counter() - started
    log.seek(0)
    stderr = log.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak / 2**20, 1)}


def direct(model_dir: Path, types: list[str], work: Path) -> dict:
    from quantkit.quantization.gguf.tools import converter_env, converter_view, find_converter

    converter = find_converter()
    source, _ = converter_view(model_dir, work / "view")  # same input as quantkit hands the converter
    f16 = work / "direct-F16.gguf"
    steps = {
        "convert": run_measured(
            [sys.executable, str(converter.script), str(source), "--outfile", str(f16), "--outtype", "f16"],
            env=converter_env(converter),
        )
    }
    for gguf_type in types:
        steps[gguf_type] = run_measured(
            [sys.executable, "-c", QUANTIZE_ONE, str(f16), str(work / f"direct-{gguf_type}.gguf"), gguf_type]
        )
    return {
        "wall_s": round(sum(s["wall_s"] for s in steps.values()), 2),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values()),
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--gguf-type", dest="types", action="append")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    types = args.types or ["Q8_0", "Q4_K_M"]

    from quantkit.hub.model_ref import resolve_model

    model_dir = resolve_model(args.model)  # materialize/download outside the timed runs
    with tempfile.TemporaryDirectory(prefix="gguf-bench-") as tmp:
        work = Path(tmp)
        base = direct(model_dir, types, work)
        cmd = [sys.executable, "-m", "quantkit", "quantize", str(model_dir), "--method", "gguf", "-o", str(work / "qk")]
        for gguf_type in types:
            cmd += ["--gguf-type", gguf_type]
        ours = run_measured(cmd)
        manifest = json.loads((work / "qk" / "quantkit.json").read_text())
    result = {
        "model": args.model,
        "types": types,
        "direct": base,
        "quantkit": ours,
        "ratio": {
            "wall": round(ours["wall_s"] / base["wall_s"], 2),
            "peak_rss": round(ours["peak_rss_mb"] / base["peak_rss_mb"], 2),
        },
        "cores": psutil.cpu_count(),
        "load_avg_1m": round(psutil.getloadavg()[0], 2),
        "sizes_mb": {t: round(r["size_bytes"] / 2**20, 1) for t, r in manifest["gguf_files"].items()},
    }
    print(f"model {args.model}, types {' '.join(types)}, {result['cores']} cores, load {result['load_avg_1m']}")
    print(f"{'':10}{'wall s':>10}{'peak RSS MiB':>15}")
    print(f"{'direct':10}{base['wall_s']:>10}{base['peak_rss_mb']:>15}")
    print(f"{'quantkit':10}{ours['wall_s']:>10}{ours['peak_rss_mb']:>15}")
    print(f"{'ratio':10}{result['ratio']['wall']:>10}{result['ratio']['peak_rss']:>15}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
