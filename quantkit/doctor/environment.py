"""What ``quantkit doctor`` reports, as ``transformers env``, ``hf env`` and vLLM's ``collect_env``
do: the machine, the GPU, the libraries and how llama.cpp was built, the caches and hubs, and a
live smoke of each engine. ``doctor()`` is the Python API; the CLI renders its dict."""

import ctypes
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from quantkit.core.atomic import read_json
from quantkit.core.paths import quantkit_home

LIBRARIES = (
    "torch", "transformers", "accelerate", "huggingface_hub", "modelscope", "safetensors", "llmcompressor",
    "compressed-tensors", "bitsandbytes", "gptqmodel", "llama-cpp-python", "gguf", "numpy", "fastapi", "uvicorn",
)  # fmt: skip
AMX_AND_AVX = ("avx2", "avx512", "amx", "avx_vnni", "f16c", "fma")


def doctor(smoke: bool = True) -> dict:
    """Every section of the report; ``smoke`` runs each engine once in a child process."""
    from quantkit.doctor.smokes import all_smokes

    llama = llama_cpp_build()
    report = {
        "quantkit": metadata.version("quantkit") if has("quantkit") else "source",
        "system": system(),
        "gpu": gpu(),
        "torch": torch_info(),
        "bitsandbytes": bitsandbytes_info(),
        "llama.cpp": llama,
        "libraries": {name: metadata.version(name) for name in LIBRARIES if has(name)},
        "caches": caches(),
        "hubs": hubs(),
    }
    if smoke:
        report["smoke"] = all_smokes(bundled_file(), Path(llama["tools"]) if llama.get("tools") else None)
    return report


def has(dist: str) -> bool:
    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def system() -> dict:
    import psutil

    from quantkit.engines.llamacpp_build import cpu_features

    features = cpu_features()
    mem = psutil.virtual_memory()
    return {
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "avx2": "avx2" in features,
        "avx512": [f for f in features if f.startswith("avx512")],
        "amx": [f for f in features if f.startswith("amx")],
        "ram_gib": round(mem.total / 2**30, 1),
        "ram_available_gib": round(mem.available / 2**30, 1),
    }


def gpu() -> dict:
    """NVIDIA GPUs through NVML (the driver's own library), without torch."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return {"nvml": False, "devices": []}
    if nvml.nvmlInit_v2() != 0:
        return {"nvml": True, "error": "nvmlInit failed", "devices": []}
    buf = ctypes.create_string_buffer(96)
    nvml.nvmlSystemGetDriverVersion(buf, 96)
    driver, count = buf.value.decode(), ctypes.c_uint(0)
    nvml.nvmlDeviceGetCount_v2(ctypes.byref(count))
    devices = []
    for i in range(count.value):
        handle = ctypes.c_void_p()
        nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle))
        nvml.nvmlDeviceGetName(handle, buf, 96)

        class Memory(ctypes.Structure):
            _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

        memory = Memory()
        nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory))
        devices.append({"name": buf.value.decode(), "memory_gib": round(memory.total / 2**30, 1)})
    nvml.nvmlShutdown()
    return {"nvml": True, "driver": driver, "devices": devices}


def torch_info() -> dict:
    if not has("torch"):
        return {"installed": False}
    import torch

    cuda = torch.cuda.is_available()
    return {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "threads": torch.get_num_threads(),
    }


def bitsandbytes_info() -> dict:
    if not has("bitsandbytes"):
        return {"installed": False}
    try:
        import bitsandbytes
        from bitsandbytes import cextension
    except Exception as exc:  # its import fails loudly on a broken native library: say so, go on
        return {"version": metadata.version("bitsandbytes"), "error": f"{type(exc).__name__}: {exc}"}
    native = type(cextension.lib).__name__ != "ErrorHandlerMockBNBNativeLibrary"  # its stand-in when no library loads
    return {"version": bitsandbytes.__version__, "backend": cextension.BNB_BACKEND, "native_library": native}


def llama_cpp_build() -> dict:
    """llama-cpp-python's version and how its wheel was built (BUILD.json beside the wheel it was
    installed from), and llama.cpp's tools: folder, commit, build record."""
    if not has("llama-cpp-python"):
        return {"installed": False}
    from quantkit.engines.llamacpp_build import build_record

    info: dict = {"version": metadata.version("llama-cpp-python"), **build_record()}
    try:
        from quantkit.engines.llamacpp_tools import tools_bin

        folder = tools_bin()
    except Exception as exc:  # not built: the report says how to build them
        info["tools_error"] = getattr(exc, "message", str(exc))
        return info
    info["tools"] = str(folder)
    for name, key in (("COMMIT", "tools_commit"), ("CMAKE_ARGS", "tools_cmake_args")):
        if (folder / name).is_file():
            info[key] = (folder / name).read_text().strip()
    if (folder / "BUILD.json").is_file():
        info["tools_build"] = read_json(folder / "BUILD.json")
    return info


def folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def caches() -> dict:
    hf = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache/huggingface") / "hub")
    ms = Path(os.environ.get("MODELSCOPE_CACHE") or Path.home() / ".cache/modelscope")
    folders = {"quantkit": quantkit_home(), "huggingface": hf, "modelscope": ms}
    return {
        name: {"path": str(p), "gib": round(folder_size(p) / 2**30, 2) if p.is_dir() else None} for name, p in folders.items()
    }


def hubs() -> dict:
    return {
        "HF_ENDPOINT": os.environ.get("HF_ENDPOINT", "https://huggingface.co"),
        "MODELSCOPE_ENDPOINT": os.environ.get("MODELSCOPE_ENDPOINT", "https://www.modelscope.cn"),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
        "hf_token": "set" if os.environ.get("HF_TOKEN") or (Path.home() / ".cache/huggingface/token").is_file() else "not set",
    }


def bundled_file() -> Path | None:
    from quantkit.core.errors import QuantkitError
    from quantkit.hub.bundled import DEFAULT, bundled_gguf

    try:
        return bundled_gguf(DEFAULT)
    except QuantkitError:
        return None
