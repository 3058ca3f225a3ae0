"""Where verification loads the base and the artifact: the quantize stage's model is freed first,
then each side goes to the GPU only when it fits the memory free there now, else to the CPU.

On a GPU the verification child would otherwise load the bf16 base beside whatever the quantize
process still holds (Yi-34B: ~65 GiB of base on the card that calibrated in ~8 GiB). The child
holds one model at a time (base, freed, then artifact), so each side is decided on its own.
"""

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def release_quantize_memory() -> None:
    """Free what the quantize stage left: bitsandbytes' 4-bit weights reference their modules, so
    a model dropped by its method waits for a cyclic gc; then hand the CUDA cache back."""
    import gc
    import sys

    gc.collect()
    try:  # glibc keeps freed tensors below its mmap threshold in its arenas: give them back too
        import ctypes
        import ctypes.util

        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    torch = sys.modules.get("torch")  # never import torch (and make a context) just for this
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def side_bytes(folder: Path, base: bool) -> int:
    """GPU bytes of one side of the check: its weights where they run (a compressed-tensors
    artifact dense in 16 bits once decompressed), 256 positions of logits, the child's context."""
    from quantkit.core.estimate import shape
    from quantkit.core.estimate_files import files_bytes, folder_config
    from quantkit.core.estimate_gpu import CUDA_OVERHEAD_BYTES, VERIFY_TOKENS
    from quantkit.core.modelinfo import estimate_params

    config = folder_config(folder) or {}
    method = (config.get("quantization_config") or {}).get("quant_method")
    weights = estimate_params(config) * 2 if not base and method == "compressed-tensors" else files_bytes(folder)
    logits = VERIFY_TOKENS * shape(config)["vocab"] * 6 if config else 0  # bf16 logits + an fp32 copy
    return weights + logits + CUDA_OVERHEAD_BYTES


def placement(folder: Path, base_dir: Path, artifact_on_cpu: bool, device: str) -> dict[str, str]:
    """{"base": device, "artifact": device} for the verification child. Off the GPU when a side
    does not fit the free memory (read after ``release_quantize_memory``); an engine whose check
    runs on the CPU (``artifact_on_cpu``: llama.cpp's GGUF) keeps the artifact there.
    Without a reading (no NVML, no CUDA context yet) the GPU is kept."""
    if device != "cuda":
        return {"base": "cpu", "artifact": "cpu"}
    from quantkit.core.memory import device_memory
    from quantkit.core.modelinfo import human_size

    info = device_memory()
    sides = {"base": base_dir, "artifact": folder}
    where = {side: "cuda" for side in sides}
    if artifact_on_cpu:
        where["artifact"] = "cpu"  # engines/llamacpp_child.py: n_gpu_layers=0
    if info is None:
        return where
    for side, path in sides.items():
        if where[side] == "cuda" and side_bytes(Path(path), side == "base") > info["free"]:
            where[side] = "cpu"
            log.warning(
                f"verification: the {side} does not fit the GPU ({human_size(side_bytes(Path(path), side == 'base'))} "
                f"needed, {human_size(info['free'])} free); it is checked on the CPU"
            )
    return where
