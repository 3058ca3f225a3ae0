"""Which AWQ settings lower SmolLM2-135M's KL divergence at group 64, and what they cost on the CPU.

Each setting is quantized with quantkit's AWQ (llm-compressor) and measured with quantkit's own
bench quality (KLD mean, top-1, PPL ratio against the bf16 base on the same tokens, 1024 tokens of
quantkit's evaluation text - what the recipe's gates read). Writes a Markdown table.

    .venv/bin/python benchmarks/awq_settings.py [--only NAME ...] [--out benchmarks/awq_settings.md]

The calibration is deterministic (fixed seed, no shuffling), so reruns give the same weights.
"""

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

# name -> (llm-compressor knobs, calibration samples, tokens a sample)
SETTINGS = {
    "demo 16x64 (minmax)": ({}, 16, 64),
    "16x64 mse observer": ({"observer": "mse"}, 16, 64),
    "16x64 duo both": ({"duo_scaling": "both"}, 16, 64),
    "16x64 mse + duo both": ({"observer": "mse", "duo_scaling": "both"}, 16, 64),
    "32x128 minmax": ({}, 32, 128),
    "32x128 mse observer": ({"observer": "mse"}, 32, 128),
    "16x64 awq + gptq": ({"quantizer": "gptq"}, 16, 64),
    "16x64 awq + gptq, duo both": ({"quantizer": "gptq", "duo_scaling": "both"}, 16, 64),
    "32x128 awq + gptq": ({"quantizer": "gptq"}, 32, 128),
    "64x256 awq + gptq": ({"quantizer": "gptq"}, 64, 256),
    "16x64 imatrix_mse observer": ({"observer": "imatrix_mse", "pipeline": "sequential"}, 16, 64),
    "32x128 imatrix_mse observer": ({"observer": "imatrix_mse", "pipeline": "sequential"}, 32, 128),
    # A reference, not a candidate: SmolLM2's bundled checkpoint is a dequantized Q4_1 GGUF, whose
    # weights already lie on a 4-bit grid of 32-wide groups.
    "16x64 group 32 (reference)": ({"group_size": 32}, 16, 64),
}


def measure(model: str, name: str, knobs: dict, samples: int, seq_len: int, work: Path) -> dict:
    from quantkit.benchmark.bench import BenchOptions, bench
    from quantkit.quantization.awq import method as awq
    from quantkit.quantization.quantize import quantize

    knobs = dict(knobs)
    group = knobs.pop("group_size", 64)
    quantizer = knobs.pop("quantizer", "rtn")
    awq.TUNING = dataclasses.replace(awq.AwqTuning(), **knobs)
    out = work / name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "")
    started = time.time()
    quantize(
        model,
        "awq",
        out,
        awq.AwqOptions(group_size=group, quantizer=quantizer, calib_samples=samples, calib_seq_len=seq_len, device="cpu"),
        overwrite=True,
    )
    manifest = json.loads((out / "quantkit.json").read_text())
    quantize_s = manifest["calibration_cache"]["calibration_wall_s"] or round(time.time() - started, 1)
    options = BenchOptions(
        prompt_tokens=8,
        gen_tokens=2,
        repetitions=1,
        warmup=0,
        device="cpu",
        threads=2,
        smoke=False,
        bandwidth=False,
        eval_tokens=1024,
    )
    quality = bench(out, options=options).to_dict()["quality"]
    return {
        "setting": name,
        "calib": f"{samples}x{seq_len}" + ("" if group == 64 else f", group {group}"),
        **awq.TUNING.__dict__,
        "quantizer": quantizer,
        "quantize_s": quantize_s,
        "kld_mean": quality["kld_mean"],
        "top1": quality["top1_agreement"],
        "ppl_ratio": quality["ppl_ratio"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| setting | calibration | duo_scaling | observer | quantizer | AWQ wall s (2 cores) | KLD mean | top-1 | PPL ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['calib']} | {r['duo_scaling']} | {r['observer']} | {r['quantizer']} | {r['quantize_s']} "
            f"| {r['kld_mean']:.4f} | {r['top1']:.1%} | {r['ppl_ratio']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--only", action="append", help="a setting name (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    names = args.only or list(SETTINGS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="awq-settings-") as work:
        for name in names:
            knobs, samples, seq_len = SETTINGS[name]
            rows.append(measure(args.model, name, knobs, samples, seq_len, Path(work)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
