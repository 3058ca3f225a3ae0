"""This machine's memory copy bandwidth, measured once with a large array copy and cached: the
physical limit of batch-1 decoding, which reads every weight once per token."""

import json
import os
import platform
import time

from quantkit.paths import cache_dir

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
    known = {}
    if file.is_file():
        try:
            known = json.loads(file.read_text())
        except json.JSONDecodeError:
            known = {}
    if key in known and not refresh:
        return known[key]
    known[key] = measure_copy_gbps()
    partial = file.with_name(f".copy.{os.getpid()}.json")
    partial.write_text(json.dumps(known, indent=2))
    os.replace(partial, file)
    return known[key]


def measure_cuda_copy_gbps(size_mb: int = 1024, repeats: int = 5) -> float | None:
    """The same measurement on the current CUDA device (device-to-device copy), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
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
