"""Checks every quantization method shares, run before any weights are loaded.

Each helper raises a typed error with a one-line fix, or returns quietly:

- ``check_device(device)``: cheap, for ``quantize()`` itself; imports torch only for ``cuda``.
- ``resolve_device(device) -> "cuda" | "cpu"``: ``auto`` picks CUDA when torch sees a GPU.
- ``causal_lm_reason(config) -> str | None``: None for a decoder-only causal LM that transformers
  (or, with --trust-remote-code, the model's own code) can load; a reason otherwise. For ``supports``.
- ``require_trusted_code(config, trust_remote_code)``: a model that ships its own code needs the flag.
- ``check_quantize_memory(config, method, footprint, options)``: the quantize stage's peak RAM and GPU
  memory (quantkit.core.estimate.quantize_need: where the method keeps the weights on that device)
  must fit in the RAM available now and in the GPU's free memory (``torch.cuda.mem_get_info``);
  ``force`` (``--force``, ``force: true`` in a recipe) skips both.
- ``check_fit(need, stage, force)``: the same test for any estimate (bench uses it too).
"""

import psutil

from quantkit.core.errors import InputError, PreflightError
from quantkit.core.estimate import Need, quantize_need
from quantkit.core.modelinfo import human_size


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_device(device: str | None) -> None:
    """Refuse an explicit ``cuda`` without a usable GPU (``auto``/``cpu`` always pass)."""
    if device == "cuda" and not cuda_available():
        raise PreflightError(
            "`device='cuda'` was asked for but torch sees no CUDA GPU",
            hint="use `device='cpu'` (or auto), or install a CUDA build of torch",
        )
    if device not in (None, "auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}", hint="choose auto, cpu or cuda")


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one is refused."""
    check_device(device)
    if device in (None, "auto"):
        return "cuda" if cuda_available() else "cpu"
    return device


def transformers_knows(model_type: str) -> bool:
    """Whether transformers implements ``model_type`` itself (its own model-type table, read
    without importing torch: see quantkit.core.library_tables)."""
    from quantkit.core.library_tables import transformers_knows as knows

    return knows(model_type)


def causal_lm_reason(config: dict) -> str | None:
    """None when ``config`` describes a decoder-only causal LM that can be loaded; else why not."""
    from quantkit.core.library_tables import causal_lm_reason as reason

    return reason(config)


def require_trusted_code(config: dict, trust_remote_code: bool) -> None:
    """A model type transformers lacks runs the checkpoint's own Python code: only when asked."""
    model_type = str(config.get("model_type") or "")
    if not transformers_knows(model_type) and not trust_remote_code:
        raise PreflightError(
            f"model type {model_type!r} needs the model's own code to load",
            hint="pass `trust_remote_code=True` if you trust its authors",
        )


def gpu_free_bytes() -> tuple[int, int] | None:
    """(free, total) bytes of the first CUDA device, or None when torch sees no GPU: NVML's reading
    when it is there (no CUDA context made, which a llama.cpp-only bench would keep), else torch's."""
    import torch

    from quantkit.core.memory import device_memory

    if not torch.cuda.is_available():
        return None
    info = device_memory(create_context=True)
    return (info["free"], info["total"]) if info else None


def check_fit(need: Need, stage: str, force: bool = False) -> Need:
    """Refuse, in one line with a fix, when ``need`` does not fit in the RAM available now or in
    the GPU's free memory (checked only when the stage puts something on a GPU); ``force`` skips."""
    if force:
        return need
    available = psutil.virtual_memory().available
    if need.ram_bytes > available:
        raise PreflightError(
            f"{stage} needs about {human_size(need.ram_bytes)} of RAM but only {human_size(available)} is available",
            hint="free memory or use a larger machine; pass `force=True` (force: true in a recipe) to try anyway",
        )
    if need.gpu_bytes:
        info = gpu_free_bytes()
        if info is not None and need.gpu_bytes > info[0]:
            free, total = info
            raise PreflightError(
                f"{stage} needs about {human_size(need.gpu_bytes)} of GPU memory but the GPU has "
                f"{human_size(free)} free of {human_size(total)}",
                hint="free the GPU (other processes: nvidia-smi), use a larger GPU or fewer calibration "
                "samples; pass `force=True` (force: true in a recipe) to try anyway",
            )
    return need


def check_quantize_memory(config: dict, method: str, footprint, options) -> Need:
    """The quantize stage of ``method`` (its declared ``footprint``) on the device
    ``options.device`` resolves to must fit."""
    device = resolve_device(options.device) if footprint.kind != "convert" else "cpu"
    need = quantize_need(config, footprint, device)
    info = gpu_free_bytes() if device == "cuda" and not options.force else None
    if info is not None and need.gpu_bytes > info[0]:
        # Verification falls back to the CPU when base and artifact do not fit the GPU
        # (quantkit.quantization.verify.placement): then only calibration must fit there.
        need = quantize_need(config, footprint, device, verify_on="cpu")
    return check_fit(need, f"{method} on {device}", options.force)
