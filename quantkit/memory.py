"""Peak resident memory of this process, sampled in a background thread (every 10 ms, as
optimum-benchmark does), plus CUDA's own counters when a GPU is in use."""

import threading
import time

import psutil


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
