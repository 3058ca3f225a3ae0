"""Peak RAM of quantize and bench on random Llama-shaped bf16 checkpoints of 1B, 3B and 7B
(issue 24 item 4): does each stage stay within 1.2x the checkpoint on a small CPU machine?

Each checkpoint is built once from a config with transformers (random weights in bf16, SmolLM2's
tokenizer and vocabulary, safetensors shards) under ~/.cache/quantkit-bench/. Each stage then runs
as `quantkit quantize` / `quantkit bench` in a child process, sampled every 0.1 s: the peak of the
RSS summed over the child's process tree (the verification child and llama.cpp's tools included),
beside quantkit's own estimate for it (quantkit.core.estimate, what the preflight checks).

    .venv/bin/python benchmarks/big_model_memory.py --size 1b --size 3b
    .venv/bin/python benchmarks/big_model_memory.py --size 1b --stage bench-base --json out.json

Stages: nf4, int8, gguf (Q4_K_M) quantize; bench-base: `quantkit bench` of the int8 artifact
against its base with a fresh base-logits cache (the base's reference pass, then the artifact), a
short eval (1024 tokens), no smoke chat, one short pp/tg repetition; run: the two as one
`quantkit run` of a recipe (int8 on the CPU, the same bench settings): the whole pipeline.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "quantkit-bench"
GB = 1e9
# Llama-3.2-1B / Llama-3.2-3B / Llama-2-7B block widths, SmolLM2's 49,152-token vocabulary.
SIZES = {
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "3b": {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
    },
    "7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}
STAGES = ("nf4", "int8", "gguf", "bench-base", "run")
TARGET = 1.2  # the issue's bound: peak RAM / checkpoint size


def model_config(size: str) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 49152,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        **SIZES[size],
    }


def build(size: str) -> Path:
    """The random checkpoint, built once in a child process: from_config straight in bf16 (one
    copy of the weights), saved in 2 GB safetensors shards with SmolLM2's tokenizer."""
    folder = CACHE / f"random-llama-{size}"
    if (folder / "model.safetensors.index.json").is_file() or (folder / "model.safetensors").is_file():
        return folder
    code = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig\n"
        "from quantkit.hub.bundled import materialize\n"
        "tok = AutoTokenizer.from_pretrained(materialize('bundled:smollm2-135m-instruct'))\n"
        "settings = {k: v for k, v in json.loads(sys.argv[2]).items() if k not in ('architectures', 'model_type', 'torch_dtype')}\n"
        "cfg = LlamaConfig(**settings, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)\n"
        "cfg.architectures = ['LlamaForCausalLM']\n"
        "torch.manual_seed(0)\n"
        "model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)\n"
        # Embeddings large beside the random blocks and lm_head a copy of them: each position's top
        # token is its own token by a wide margin, so verification's top-token floor has something
        # to agree on (purely random logits are flat: an NF4 copy picks the same top token ~11%).
        "with torch.no_grad():\n"
        "    model.model.embed_tokens.weight.normal_(0.0, 2.0)\n"
        "    model.lm_head.weight.copy_(model.model.embed_tokens.weight)\n"
        "model.save_pretrained(sys.argv[1], max_shard_size='2GB'); tok.save_pretrained(sys.argv[1])\n"
    )
    partial = folder.with_name(folder.name + ".partial")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(partial), json.dumps(model_config(size))], check=True, cwd=REPO)
    partial.rename(folder)
    return folder


def checkpoint_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) summed over ``pid`` and its descendants, in bytes. RSS counts a file page
    mapped by two processes twice (the quantize process and its verification child both map the
    base); PSS splits it between them. Processes that end meanwhile count 0."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/smaps_rollup") as fh:
                fields = dict(line.split(":", 1) for line in fh if line[:1].isupper() and ":" in line)
        except (OSError, ValueError):
            continue
        rss += int(fields.get("Rss", "0 kB").split()[0]) * 1024
        pss += int(fields.get("Pss", "0 kB").split()[0]) * 1024
    return rss, pss


def measure(cmd: list[str], env: dict, log: Path) -> dict:
    """Run ``cmd``; its wall time and the peak RSS of its process tree, sampled every 0.1 s."""
    started = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak, done = [0, 0], threading.Event()

        def poll():
            while not done.is_set():
                peak[:] = [max(a, b) for a, b in zip(peak, tree_memory(proc.pid))]
                time.sleep(0.1)

        sampler = threading.Thread(target=poll, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    return {"exit": code, "wall_s": round(time.time() - started, 1), "peak_bytes": peak[0], "peak_pss_bytes": peak[1]}


def estimate(folder: Path, stage: str, artifact: Path | None) -> int:
    """quantkit's own estimate of the stage's peak RAM on the CPU (what its preflight checks)."""
    from quantkit.core.atomic import read_json
    from quantkit.core.estimate import quantize_need

    config = read_json(folder / "config.json")
    if stage == "run":  # its stages run one after another: the larger of the two
        return max(estimate(folder, "int8", artifact), estimate(folder, "bench-base", artifact))
    if stage == "bench-base":
        from quantkit.benchmark.bench import BenchOptions
        from quantkit.core.estimate import bench_n_ctx
        from quantkit.core.estimate_files import bench_need_for

        n_ctx = bench_n_ctx(BenchOptions(prompt_tokens=64, gen_tokens=8))
        return bench_need_for(artifact, "transformers", "cpu", n_ctx, base=folder).ram_bytes
    from quantkit.quantization.registry import get_method, make_options

    method = get_method(stage)
    options = make_options(stage, {"gguf_types": ["Q4_K_M"], "imatrix": False} if stage == "gguf" else {"device": "cpu"})
    return quantize_need(config, method.footprint(options), "cpu", verify_on="cpu").ram_bytes


# The run stage's recipe: bench-base's settings, int8 quantized (and verified) on the CPU.
RUN_RECIPE = """name: random-llama-{size}
runner: cpu
model:
  id: {folder}
bench:
  prompt_tokens: 64
  gen_tokens: 8
  repetitions: 1
  warmup: 0
  device: cpu
  eval_tokens: 1024
  smoke: false
gates:
  smoke: false
artifacts:
  - name: int8
    method: int8
    device: cpu
"""


def stage_command(stage: str, folder: Path, out: Path, bench_json: Path) -> list[str]:
    quantkit = [sys.executable, "-m", "quantkit"]
    if stage == "run":
        recipe = out / "run-recipe.yaml"
        recipe.write_text(RUN_RECIPE.format(size=folder.name.rsplit("-", 1)[-1], folder=folder))
        return [*quantkit, "run", str(recipe), "-o", str(out / "run"), "--force"]
    if stage == "bench-base":
        return [
            *quantkit,
            "bench",
            str(out / "int8"),
            "--base",
            str(folder),
            "--device",
            "cpu",
            "--no-smoke",
            "--eval-tokens",
            "1024",
            "-p",
            "64",
            "-n",
            "8",
            "--repetitions",
            "1",
            "--warmup",
            "0",
            "--json",
            str(bench_json),
        ]
    # No importance matrix: llama-imatrix over the calibration text takes ~20 min for 1B on 2 cores.
    extra = ["--gguf-type", "Q4_K_M", "--no-imatrix"] if stage == "gguf" else ["--device", "cpu"]
    return [*quantkit, "quantize", str(folder), "--method", stage, "-o", str(out / stage), "--overwrite", *extra]


def run_size(size: str, stages: list[str], out_root: Path) -> list[dict]:
    folder = build(size)
    ckpt = checkpoint_size(folder)
    out = out_root / size
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for stage in stages:
        # A fresh quantkit cache per stage: the base's logits and verification are computed, not read.
        home = Path(tempfile.mkdtemp(prefix="qk-home-", dir=out_root))
        env = {**os.environ, "QUANTKIT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        bench_json = out / f"{stage}.bench.json"
        result = measure(stage_command(stage, folder, out, bench_json), env, out / f"{stage}.log")
        try:
            est = estimate(folder, stage, out / "run" / "artifacts" / "int8" if stage == "run" else out / "int8")
        except Exception as exc:  # an estimate the code cannot make is a result too
            est, result["estimate_error"] = 0, repr(exc)
        row = {
            "size": size,
            "stage": stage,
            "checkpoint_bytes": ckpt,
            **result,
            "estimate_bytes": est,
            "ratio": round(result["peak_bytes"] / ckpt, 2),
        }
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    verdict = "ok" if row["ratio"] <= TARGET and row["exit"] in (0, 3) else ("FAILED" if row["exit"] not in (0, 3) else "over")
    return (
        f"{row['size']:>3} {row['stage']:<10} ckpt {row['checkpoint_bytes'] / GB:5.2f} GB  peak RSS {row['peak_bytes'] / GB:5.2f} GB"
        f"  x{row['ratio']:.2f}  PSS {row['peak_pss_bytes'] / GB:5.2f} GB  est {row['estimate_bytes'] / GB:5.2f} GB"
        f"  {row['wall_s']:7.1f} s  exit {row['exit']}  {verdict}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", action="append", choices=sorted(SIZES), help="repeatable; default 1b and 3b")
    parser.add_argument("--stage", action="append", choices=STAGES, help="repeatable; default all")
    parser.add_argument("--out", type=Path, default=CACHE / "runs", help="artifacts and logs")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    stages = args.stage or list(STAGES)
    if "bench-base" in stages and "int8" not in stages:
        print("bench-base benches the int8 artifact: run the int8 stage first (or with it)", file=sys.stderr)
    rows = []
    for size in args.size or ["1b", "3b"]:
        rows += run_size(size, stages, args.out)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["exit"] in (0, 3) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
