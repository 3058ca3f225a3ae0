"""The memory estimate from the files at hand (bench's real preflight), where the dry run has
only config.json: the artifact's size where it runs and its base's, read from the folder."""

from pathlib import Path

from quantkit.core.atomic import read_json
from quantkit.core.estimate import (
    LIBRARY_ALLOWANCE_BYTES,
    LLAMACPP_COMPUTE_BYTES,
    Footprint,
    Need,
    bench_need,
    cpu_reference_bytes,
    dtype_bytes,
)


def folder_config(path: Path) -> dict | None:
    file = (path if path.is_dir() else path.parent) / "config.json"
    return read_json(file, default=None)


def files_bytes(path: Path, suffixes=(".safetensors", ".bin", ".gguf")) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.suffix in suffixes)


def bench_need_for(
    path: Path,
    file_suffix: str | None,
    device: str,
    n_ctx: int,
    *,
    base: Path | None = None,
    n_gpu_layers: int | None = -1,
    quality_ctx: int = 512,
) -> Need:
    """``bench_need`` from the files at hand (the real preflight): the artifact's size where it
    runs (its weights file for an engine that runs one, ``file_suffix``: a .gguf's; a compressed-tensors folder's dense size; a bitsandbytes folder's
    weights; a plain folder's weights in the dtype it runs in) and the base's, with the shape
    (KV cache, vocabulary) from whichever config.json is there."""
    from quantkit.core.modelinfo import estimate_params

    path = Path(path)
    config = folder_config(path) if path.is_dir() else None
    base_config = folder_config(Path(base)) if base is not None else None
    shape_config = config or base_config
    if not file_suffix and config is None:
        return Need(LIBRARY_ALLOWANCE_BYTES, 0, "no config.json: nothing to estimate")  # the engine says why
    if file_suffix:  # one self-contained file (GGUF): its size, offloaded by layers
        weights = path if path.is_file() else next(iter(sorted(path.glob(f"*{file_suffix}"))), path)
        runtime, fp = files_bytes(weights), Footprint("convert", (8.0,))
    else:
        qc = (config or {}).get("quantization_config") or {}
        method = qc.get("quant_method")
        fp = Footprint("load", (4.0,), dense_runtime=method == "compressed-tensors") if method else None
        if method == "compressed-tensors":
            runtime = estimate_params(config) * (4 if device == "cpu" else 2)  # dense once decompressed
        elif method or device != "cpu":
            runtime = files_bytes(path) if method else estimate_params(config) * dtype_bytes(None, config)
        else:
            runtime = cpu_reference_bytes(config)  # fp32 on the CPU, one module upcast at a time
    base_runtime = None
    if base_config is not None:
        on_gpu = estimate_params(base_config) * dtype_bytes(None, base_config)
        base_runtime = cpu_reference_bytes(base_config) if device == "cpu" else on_gpu
    if shape_config is None:  # a lone .gguf: its file, no KV estimate
        return Need(
            runtime + LIBRARY_ALLOWANCE_BYTES if device == "cpu" else LIBRARY_ALLOWANCE_BYTES,
            0 if device == "cpu" else runtime + LLAMACPP_COMPUTE_BYTES,
            "the weights file",
        )
    return bench_need(
        shape_config,
        fp,
        device,
        n_ctx,
        with_base=base_runtime is not None,
        n_gpu_layers=n_gpu_layers,
        quality_ctx=quality_ctx,
        runtime=runtime,
        base_runtime=base_runtime,
    )
