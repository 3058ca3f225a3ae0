"""What this llama-cpp-python build is, and does it run on this machine? Load a GGUF and decode a few tokens in a
child process, so a build that faults (ggml's AMX kernels on AMX Xeons, an instruction the CPU
lacks) is reported as a crash of llama.cpp instead of killing quantkit or condemning the file.

In-process engines (bench, chat, serve) call ``ensure_runs_here`` before their first load: the
child runs once per build and CPU, and its verdict is remembered in the quantkit cache."""

import hashlib
import json
import sys
import time
from pathlib import Path

from quantkit.core.atomic import read_json
from quantkit.core.child import last_line, run_json_child
from quantkit.core.crash import crash_error, crashed
from quantkit.core.errors import EngineError

ENGINE = "llama.cpp (llama-cpp-python)"
PROMPT = "The capital of France is"


def library_file() -> Path | None:
    """llama-cpp-python's CPU backend library (the code that faults), or its main library."""
    from importlib.util import find_spec

    spec = find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    for name in ("libggml-cpu.so", "libllama.so", "libggml-cpu.dylib", "libllama.dylib"):
        if (lib / name).is_file():
            return lib / name
    return None


def cpu_features() -> list[str]:
    """The CPU's vector and matrix extensions (what a native build compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith(("flags", "Features"))), [])
    keep = ("avx", "amx", "f16c", "fma", "sse4", "asimd", "sve", "bf16", "i8mm", "dotprod")
    return sorted(f for f in flags if f.startswith(keep))


def build_record() -> dict:
    """How the installed wheel was built (BUILD.json, written by ``make install`` beside the wheel
    it installed from) and llama.cpp's own system_info (the instruction sets compiled in)."""
    from importlib import metadata

    import llama_cpp  # loads the library only: nothing here runs a kernel

    record = {"system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()}
    direct = metadata.distribution("llama-cpp-python").read_text("direct_url.json")
    url = json.loads(direct).get("url", "") if direct else ""
    built = Path(url.removeprefix("file://")).parent / "BUILD.json" if url.startswith("file://") else None
    if built and built.is_file():
        wheel = read_json(built)
        record.update({k: wheel.get(k) for k in ("cmake_args", "cflags", "amx_instructions")})
    return record


def smoke(gguf: Path, threads: int = 1, n_tokens: int = 4, timeout: float = 300) -> dict:
    """Decode ``n_tokens`` greedily after a short prompt in a child; its answer (text, tokens/s,
    llama.cpp's system_info, GPU offload), or EngineCrashed / EngineError."""
    spec = json.dumps({"gguf": str(gguf), "threads": threads, "n_tokens": n_tokens})
    proc, answer = run_json_child(["-m", __name__, spec], timeout=timeout)
    if proc.returncode == 0 and "text" in answer:
        return answer
    if crashed(proc.returncode):
        raise crash_error(ENGINE, f"decoding {Path(gguf).name}", proc.returncode)
    reason = answer.get("error") or last_line(proc.stderr) or f"exit {proc.returncode}"
    raise EngineError(f"{ENGINE} could not load or decode {Path(gguf).name}: {reason}")


def build_identity() -> str | None:
    """A key for this build on this CPU: the library's path, size and mtime, and the CPU's features."""
    lib = library_file()
    if lib is None:
        return None
    stat = lib.stat()
    raw = f"{lib}|{stat.st_size}|{stat.st_mtime_ns}|{' '.join(cpu_features())}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def ensure_runs_here(gguf: Path, threads: int = 1) -> None:
    """Before llama.cpp loads in this process: the child smoke, once per build and CPU."""
    from quantkit.core.paths import cache_dir

    key = build_identity()
    if key is None:
        return  # not installed: the engine's own import error says so
    stamp = cache_dir("selftest") / f"llama-cpp-python-{key}.json"
    if stamp.is_file():
        return
    answer = smoke(gguf, threads=threads, n_tokens=2)
    stamp.write_text(json.dumps({"checked": time.time(), "file": str(gguf), "system_info": answer.get("system_info")}))


def child(spec: dict) -> dict:
    import llama_cpp

    started = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=spec["gguf"], n_ctx=128, n_batch=32, n_threads=spec["threads"], n_gpu_layers=0, verbose=False
    )
    decode_start = time.perf_counter()
    done = llm.create_completion(PROMPT, max_tokens=spec["n_tokens"], temperature=0.0)
    elapsed = time.perf_counter() - decode_start
    out = done["usage"]["completion_tokens"]
    return {
        "text": done["choices"][0]["text"],
        "tokens": out,
        "tok_s": round(out / elapsed, 1) if elapsed > 0 else None,  # prompt and decode together
        "seconds": round(time.perf_counter() - started, 2),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "version": llama_cpp.__version__,
    }


def main(argv: list[str]) -> int:
    try:
        print(json.dumps(child(json.loads(argv[0]))))
    except Exception as exc:  # a Python-level failure: the parent reports it as an engine error
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
