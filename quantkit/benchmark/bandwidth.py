"""This machine's memory copy bandwidth, measured once with a large array copy and cached: the
physical limit of batch-1 decoding, which reads every weight once per token; and the bytes one
decode step of a loaded model really reads (``decode_bytes``)."""

import json
import os
import platform
import time

from quantkit.core.atomic import read_json
from quantkit.core.paths import cache_dir

ARRAY_MB = 256  # well above any CPU cache


def machine_key() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.node()}|{cpu}|{os.cpu_count()}"


def measure_copy_gbps(size_mb: int = ARRAY_MB, repeats: int = 5) -> float:
    """Best of ``repeats`` copies of a ``size_mb`` array; read + write bytes counted (as STREAM)."""
    import numpy as np

    src = np.ones(size_mb * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch: page faults are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - started)
    return round(2 * src.nbytes / best / 1e9, 2)


def copy_bandwidth_gbps(refresh: bool = False) -> float:
    """The cached measurement for this machine (measured on first use, about a second)."""
    file = cache_dir("bandwidth") / "copy.json"
    key = machine_key()
    known = read_json(file, default={})
    if key in known and not refresh:
        return known[key]
    known[key] = measure_copy_gbps()
    partial = file.with_name(f".copy.{os.getpid()}.json")
    partial.write_text(json.dumps(known, indent=2))
    os.replace(partial, file)
    return known[key]


def measure_cuda_copy_gbps(size_mb: int = 1024, repeats: int = 5) -> float | None:
    """The same measurement on the current CUDA device (device-to-device copy), or None. The two
    buffers take at most a quarter of the free memory (a model is loaded beside them); out of
    memory is None, not a failed bench."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    size_mb = min(size_mb, int(free / 8 / 2**20))  # two buffers, a quarter of the free memory
    if size_mb < 64:  # too small to measure DRAM bandwidth rather than cache
        return None
    src = dst = None
    try:
        src = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32, device="cuda")
        dst = torch.empty_like(src)
        dst.copy_(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(repeats):
            start.record()
            dst.copy_(src)
            end.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return round(2 * src.numel() * 4 / best / 1e9, 2)
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        del src, dst
        torch.cuda.empty_cache()


def decode_bytes(engine) -> dict:
    """The weight bytes one batch-1 decode step reads: every weight once, but the input embedding
    table only one row (a lookup) unless it is tied to the output projection, which reads it all.
    Counted as the engine declares (``EngineEntry.bytes_per_token``: the GGUF's tensors, the
    model's parameters); else, or when that fails, the weight files."""
    from importlib import import_module

    from quantkit.engines import ENGINES

    entry = ENGINES.get(getattr(engine, "name", ""))
    target = entry.bytes_per_token if entry else None
    try:
        if target:
            module, function = target.split(":")
            return getattr(import_module(module), function)(engine)
    except (ImportError, OSError, ValueError, AttributeError):
        pass
    return {"bytes": engine.weights_bytes, "embedding_bytes": None, "tied": None, "counted": "weight files"}
