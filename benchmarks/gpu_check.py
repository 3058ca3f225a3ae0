"""The one-shot GPU check, for the day a GPU is lent: run the demo recipe and a recipe on a 1B
random Llama-shaped checkpoint with `device: cuda`, sample the GPU's used memory through NVML
while each runs, check the peak against the largest GPU estimate of its `--dry-run` plan, and
write the numbers into docs/gpu.md (between the gpu-check markers).

    make gpu-check                                        # on a GPU machine, after make check-gpu
    .venv/bin/python benchmarks/gpu_check.py --dry-run    # anywhere: recipes, plans, docs block

The check passes when every peak is within its estimate and the estimate is no more than
OVER_ESTIMATE times the peak (the preflight must refuse only what really would not fit).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "gpu.md"
START, END = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
OVER_ESTIMATE = 2.5
GiB = 2**30
# SmolLM2-135M-Instruct's config, to plan the demo before the bundled model is materialized.
SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
# A 1.2B Llama shape (the width of Llama-3.2-1B's blocks), SmolLM2's tokenizer and vocabulary.
RANDOM_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
}
BENCH = {"prompt_tokens": 128, "gen_tokens": 32, "repetitions": 2, "device": "cuda", "eval_tokens": 1024}


def demo_recipe(work: Path) -> Path:
    """The shipped demo with every method that has a device on cuda, and the bench on cuda."""
    recipe = yaml.safe_load((REPO / "recipes" / "smollm2-135m-instruct.yaml").read_text())
    config = work / "smollm2-config.json"
    config.write_text(json.dumps(SMOLLM2_CONFIG))
    recipe.update(name="gpu-check-smollm2", runner="gpu", description="The demo recipe on cuda (benchmarks/gpu_check.py).")
    recipe["model"]["local_config"] = str(config)
    recipe["bench"].update(device="cuda", threads=None)
    recipe["bench"] = {k: v for k, v in recipe["bench"].items() if v is not None}
    for artifact in recipe["artifacts"]:
        if "device" in artifact:
            artifact["device"] = "cuda"
    path = work / "gpu-check-smollm2.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def random_config(vocab: int = 49152) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "torch_dtype": "bfloat16",
        **RANDOM_1B,
    }


def random_recipe(work: Path, model_dir: Path) -> Path:
    """Every llm-compressor and bitsandbytes method on the random 1B, on cuda; gates off (a
    random model's smoke chat and quality say nothing), verification and the bench kept."""
    config = work / "random-1b-config.json"
    config.write_text(json.dumps(random_config()))
    calib = {"calib_samples": 64, "calib_seq_len": 256, "device": "cuda"}
    recipe = {
        "name": "gpu-check-random-1b",
        "description": "A random 1.2B Llama-shaped bf16 checkpoint on cuda (benchmarks/gpu_check.py).",
        "runner": "gpu",
        "model": {"id": str(model_dir), "local_config": str(config)},
        "bench": dict(BENCH),
        "gates": {"smoke": False, "top1_min": 0.0, "kld_mean_max": 100.0, "ppl_ratio_max": 100.0},
        "artifacts": [
            {"name": "awq", "method": "awq", "group_size": 128, **calib},
            {"name": "awq-gptq", "method": "awq", "group_size": 128, "quantizer": "gptq", **calib},
            {"name": "gptq", "method": "gptq", "group_size": 128, **calib},
            {"name": "w8a8", "method": "w8a8", **calib},
            {"name": "fp8", "method": "fp8", "device": "cuda"},
            {"name": "nf4", "method": "nf4", "device": "cuda"},
            {"name": "int8", "method": "int8", "device": "cuda"},
        ],
    }
    path = work / "gpu-check-random-1b.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def build_random(model_dir: Path) -> Path:
    """The random checkpoint, in bf16 with SmolLM2's tokenizer, built once (in a child process:
    the check's own process never holds a model)."""
    if (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file():
        return model_dir
    code = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig\n"
        "from quantkit.hub.bundled import materialize\n"
        "tok = AutoTokenizer.from_pretrained(materialize('bundled:smollm2-135m-instruct'))\n"
        "cfg = LlamaConfig(**json.loads(sys.argv[2]), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)\n"
        "cfg.architectures = ['LlamaForCausalLM']\n"
        "torch.manual_seed(0)\n"
        "model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)\n"
        "model.save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])\n"
    )
    settings = {k: v for k, v in random_config().items() if k not in ("architectures", "model_type", "torch_dtype")}
    partial = model_dir.with_name(model_dir.name + ".partial")
    subprocess.run([sys.executable, "-c", code, str(partial), json.dumps(settings)], check=True, timeout=1200)
    partial.rename(model_dir)
    return model_dir


def plan_gpu(recipe_path: Path, out: Path) -> dict[str, int]:
    """The largest GPU estimate per stage of the recipe's `--dry-run` plan (bytes)."""
    from quantkit.pipeline.plan import plan
    from quantkit.pipeline.recipe import load_recipe

    recipe = load_recipe(str(recipe_path))
    peaks: dict[str, int] = {}
    for row in plan(recipe, recipe.artifacts, out, force=True):
        if row.cost is not None and row.stage in ("quantize", "bench"):
            peaks[row.stage] = max(peaks.get(row.stage, 0), row.cost.gpu_bytes)
    return peaks


class NvmlPeak:
    """The GPU's used memory, sampled every ``interval_s`` in a thread (device-wide: every
    process's allocations and CUDA contexts, as the preflight's free-memory reading sees them)."""

    def __init__(self, interval_s: float = 0.05):
        import pynvml

        from quantkit.core.memory import nvml_memory  # follows CUDA_VISIBLE_DEVICES

        self.nvml, self.interval_s, self.peak = pynvml, interval_s, 0
        free, total = nvml_memory() or (None, None)
        if total is None:
            raise SystemExit("gpu_check: NVML sees no GPU (pip install nvidia-ml-py; a driver)")
        self.baseline = total - free
        self.stop = threading.Event()

    def _poll(self) -> None:
        from quantkit.core.memory import nvml_memory

        while not self.stop.is_set():
            reading = nvml_memory()
            if reading:
                self.peak = max(self.peak, reading[1] - reading[0])
            time.sleep(self.interval_s)

    def __enter__(self):
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_recipe(recipe_path: Path, out: Path) -> dict:
    """`quantkit run RECIPE` in a child process under the NVML sampler."""
    started = time.time()
    with NvmlPeak() as peak:
        proc = subprocess.run(
            [sys.executable, "-m", "quantkit", "run", str(recipe_path), "--out", str(out), "--force"],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return {"exit": proc.returncode, "wall_s": round(time.time() - started), "peak": peak.peak, "baseline": peak.baseline}


def verdict(estimate: int, peak: int | None) -> str:
    if peak is None:
        return "not run"
    if peak > estimate:
        return "peak above the estimate"
    if estimate > OVER_ESTIMATE * peak:
        return f"estimate over {OVER_ESTIMATE}x the peak"
    return "ok"


def gib(n: int | None) -> str:
    return f"{n / GiB:.2f} GiB" if n is not None else "-"


def docs_block(rows: list[dict], device: str) -> str:
    lines = [
        START,
        f"Last `benchmarks/gpu_check.py` ({device}, {time.strftime('%Y-%m-%d')}): the largest GPU estimate of "
        "each recipe's plan against the NVML peak of the whole `quantkit run` (device-wide used memory, "
        "the run's baseline included).",
        "",
        "| recipe | largest quantize estimate | largest bench estimate | NVML peak | baseline | peak / estimate | wall | exit | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        estimate = max(r["estimate"].values(), default=0)
        peak = r.get("peak")
        ratio = f"{peak / estimate:.2f}" if peak and estimate else "-"
        lines.append(
            f"| {r['name']} | {gib(r['estimate'].get('quantize'))} | {gib(r['estimate'].get('bench'))} | {gib(peak)} | "
            f"{gib(r.get('baseline'))} | {ratio} | {r.get('wall_s', '-')} s | {r.get('exit', '-')} | {r['verdict']} |"
        )
    lines.append(END)
    return "\n".join(lines)


def write_docs(block: str, docs: Path = DOCS) -> None:
    text = docs.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"gpu_check: {docs} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    docs.write_text(head + block + rest.split(END, 1)[1])


def gpu_name() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # a name for the docs only
        return "a GPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="Build the recipes and plans, check the docs block; run nothing.")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "gpu-check", help="Where recipes, model and runs go.")
    parser.add_argument("--only", choices=("demo", "random-1b"), action="append", help="Run only these (repeatable).")
    parser.add_argument("--no-docs", action="store_true", help="Do not write docs/gpu.md.")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "random-1b"
    recipes = {"demo": demo_recipe(work), "random-1b": random_recipe(work, model_dir)}
    rows = []
    for name, recipe in recipes.items():
        if args.only and name not in args.only:
            continue
        estimate = plan_gpu(recipe, work / f"run-{name}")
        row = {"name": name, "estimate": estimate}
        print(f"{name}: GPU estimates " + ", ".join(f"{k} {v / GiB:.2f} GiB" for k, v in estimate.items()))
        if not estimate or not all(estimate.values()):
            raise SystemExit(f"gpu_check: the {name} plan has a stage without a GPU estimate: {estimate}")
        if not args.dry_run:
            if name == "random-1b":
                build_random(model_dir)
            row.update(run_recipe(recipe, work / f"run-{name}"))
        row["verdict"] = verdict(max(estimate.values()), row.get("peak"))
        rows.append(row)
    block = docs_block(rows, "dry run" if args.dry_run else gpu_name())
    print(block)
    if args.dry_run:
        text = DOCS.read_text()
        if START not in text or END not in text:
            raise SystemExit(f"gpu_check: {DOCS} has no {START} ... {END} block")
        return 0
    if not args.no_docs:
        write_docs(block)
    (work / "gpu-check.json").write_text(json.dumps(rows, indent=1))
    failed = [r for r in rows if r["verdict"] != "ok" or r.get("exit") not in (0, 3)]  # 3: only gates failed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
