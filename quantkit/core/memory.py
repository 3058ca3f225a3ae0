"""Peak resident memory of this process, sampled in a background thread (every 10 ms, as
optimum-benchmark does), plus CUDA's own counters when a GPU is in use, and the device's used
memory from NVML (for llama.cpp, which does not allocate through torch)."""

import threading
import time

import psutil


def own_peak_rss() -> int:
    """This process's peak RSS in bytes since it started its program (VmHWM). Not ru_maxrss: a
    child started with vfork + exec (Python's subprocess) keeps its parent's high-water mark there."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/self/status has no VmHWM")


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.mb``: the highest RSS seen, in MiB."""

    def __init__(self, interval_s: float = 0.01):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakRSS":
        self.peak_bytes = self._proc.memory_info().rss
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)
        self.seconds = time.perf_counter() - self.started

    @property
    def mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)


def cuda_memory() -> dict:
    """CUDA allocator peaks and NVML device memory, or {} without a GPU (torch imported lazily)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    stats = {
        "cuda_max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "cuda_max_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
    }
    try:
        free, total = torch.cuda.mem_get_info()
        stats["device_used_mb"] = round((total - free) / 2**20, 1)
    except RuntimeError:
        pass
    return stats


def nvml_memory(index: int = 0) -> tuple[int, int] | None:
    """(free, total) bytes of CUDA device ``index`` from NVML (nvidia-ml-py), or None without it
    or a driver. Reads the driver's counters: no CUDA context is created. NVML numbers GPUs
    physically, so CUDA_VISIBLE_DEVICES (indices or GPU-UUIDs) is applied here."""
    import os

    try:
        import pynvml
    except ImportError:
        return None
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    chosen = visible[index] if index < len(visible) else str(index)
    try:
        pynvml.nvmlInit()
        try:
            handle = (
                pynvml.nvmlDeviceGetHandleByIndex(int(chosen)) if chosen.isdigit() else pynvml.nvmlDeviceGetHandleByUUID(chosen)
            )
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            return int(info.free), int(info.total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVMLError: no driver, no device
        return None


def device_memory(create_context: bool = False) -> dict | None:
    """{"free", "total", "used", "source"} bytes of the current GPU: NVML first, else torch's
    ``mem_get_info`` when torch already has a CUDA context (or ``create_context``), else None."""
    import sys

    info, source = nvml_memory(), "nvml"
    if info is None:
        torch = sys.modules.get("torch")
        if create_context and torch is None:
            import torch
        if torch is None or not torch.cuda.is_available() or not (create_context or torch.cuda.is_initialized()):
            return None
        try:
            info, source = torch.cuda.mem_get_info(), "torch.cuda.mem_get_info"
        except RuntimeError:
            return None
    free, total = info
    return {"free": free, "total": total, "used": total - free, "source": source}


def own_device_memory(before: dict | None) -> dict:
    """What an engine with its own GPU buffers took (EngineEntry.on_torch False: llama.cpp): the
    device's used memory after load minus before (torch's allocator peaks would read ~0)."""
    after = device_memory()
    if not after:
        return {}
    stats = {"device_used_mb": round(after["used"] / 2**20, 1), "source": after["source"]}
    if before:
        stats["model_device_mb"] = round((after["used"] - before["used"]) / 2**20, 1)
    return stats
